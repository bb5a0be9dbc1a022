# tqp hessian on the bundled model: byte-identical layer files for 1, 2, 3 and 4 ranks; kill
# and resume at several points gives the same bytes; options mismatch, short text, --resume
# with nothing, non-finite activations and weights are clear errors.
source "$(dirname "$0")/lib.sh" "$@"
H="hessian --model $MODEL --text $CALIB_TEXT --nsamples 128 --ctx 256 --quiet"

differ() { ! cmp -s "$1" "$2"; }
same_layers() { # same_layers DIR_A DIR_B: every layer file byte-identical
  local a=$1 b=$2 l
  for l in 0 1 2 3 4; do cmp -s "$a/layer_00$l.h5" "$b/layer_00$l.h5" || return 1; done
}

run_mpi 2 $H --out "$WORK/ref.h5" --json "$WORK/ref.json" > /dev/null 2>&1
check "hessian on 2 ranks runs" [ $? = 0 ]
check "5 layers computed" [ "$(json "$WORK/ref.json" layers_computed)" = 5 ]
check "tokens per layer" [ "$(json "$WORK/ref.json" tokens_per_layer)" = 32768 ]
check "h5dump opens the index" h5dump -H "$WORK/ref.h5" > /dev/null
check "h5dump opens a layer file" h5dump -H "$WORK/ref.h5.layers/layer_002.h5" > /dev/null
check "index is complete" grep -q "(0): 1" <(h5dump -a /complete "$WORK/ref.h5")
check "count = 32768" grep -q "(0): 32768" <(h5dump -d /down/count "$WORK/ref.h5.layers/layer_004.h5")
check "H shape 172 x 172" grep -q "( 172, 172 )" <(h5dump -H -d /down/H "$WORK/ref.h5.layers/layer_000.h5")
check "layers linked from the index" grep -q "layer_004" <(h5dump -n "$WORK/ref.h5")

for n in 1 3 4; do
  run_mpi $n $H --out "$WORK/r$n.h5" > /dev/null 2>&1
  check "byte-identical layer files on $n ranks" same_layers "$WORK/ref.h5.layers" "$WORK/r$n.h5.layers"
done

# Kill (SIGKILL) at points spread over the run, resume, compare with the uninterrupted run.
for point in hessian-reduce-2 hessian-write-2 hessian-commit-2 hessian-index-1 hessian-write-0; do
  rm -rf "$WORK/k.h5" "$WORK/k.h5.layers"
  TQP_CRASH_AT=$point run_mpi 2 $H --out "$WORK/k.h5" > /dev/null 2>&1
  check "run killed at $point" [ $? != 0 ]
  run_mpi 2 $H --out "$WORK/k.h5" > "$WORK/resume.out" 2>&1
  check "resume after $point succeeds" [ $? = 0 ]
  check "identical bytes after a kill at $point" same_layers "$WORK/ref.h5.layers" "$WORK/k.h5.layers"
done
run_mpi 1 $H --out "$WORK/k.h5" --resume --json "$WORK/again.json" > /dev/null 2>&1
check "a complete output resumes to nothing" [ "$(json "$WORK/again.json" layers_computed)" = 0 ]

# A different option on an existing output: refused, nothing overwritten.
cp "$WORK/ref.h5" "$WORK/before.h5"
run_mpi 2 hessian --model "$MODEL" --text "$CALIB_TEXT" --nsamples 64 --out "$WORK/ref.h5" > /dev/null 2> "$WORK/err"
check "mismatch exits 2" [ $? = 2 ]
check "mismatch names the option" grep -q "nsamples is 128 there, 64 now" "$WORK/err"
check "mismatch leaves the output alone" cmp -s "$WORK/ref.h5" "$WORK/before.h5"
run_mpi 2 hessian --model "$MODEL" --text "$CALIB_TEXT" --nsamples 64 --out "$WORK/ref.h5" --force --quiet > /dev/null 2>&1
check "--force starts over" [ $? = 0 ]

run_mpi 2 hessian --model "$MODEL" --text "$CALIB_TEXT" --nsamples 100000 --out "$WORK/x.h5" > /dev/null 2> "$WORK/err"
check "too-short text exits 2" [ $? = 2 ]
check "too-short text gives the numbers" grep -q "tokens, but 100000 windows of 256 need 25600000" "$WORK/err"
check "nothing written for a too-short text" [ ! -e "$WORK/x.h5" ]
run_mpi 1 $H --out "$WORK/none.h5" --resume > /dev/null 2> "$WORK/err"
check "--resume with nothing exits 2" [ $? = 2 ]
run_mpi 1 $H --out "$WORK/none.h5" --sequential > /dev/null 2> "$WORK/err"
check "--sequential is refused with a reason" grep -q "sequential" "$WORK/err"

# Random windows: reproducible for a seed.
run_mpi 2 $H --seed 7 --out "$WORK/s1.h5" > /dev/null 2>&1
run_mpi 3 $H --seed 7 --out "$WORK/s2.h5" > /dev/null 2>&1
check "seeded windows are reproducible" same_layers "$WORK/s1.h5.layers" "$WORK/s2.h5.layers"
# Reductions in two levels (4 ranks taken as 2 nodes of 2): the same files.
TQP_NODE_RANKS=2 run_mpi 4 $H --seed 7 --out "$WORK/s3.h5" > /dev/null 2>&1
check "two-level reductions give the same files" same_layers "$WORK/s1.h5.layers" "$WORK/s3.h5.layers"
check "seeded windows differ from the first windows" differ "$WORK/s1.h5.layers/layer_000.h5" "$WORK/r1.h5.layers/layer_000.h5"

# Pre-tokenized input: the same windows give the same H.
"$TQP" tokenize --model "$MODEL" --text "$CALIB_TEXT" --out "$WORK/calib.u32" > /dev/null
run_mpi 2 hessian --model "$MODEL" --tokens "$WORK/calib.u32" --quiet --out "$WORK/t.h5" > /dev/null 2>&1
run_mpi 1 $H --out "$WORK/r1b.h5" --force > /dev/null 2>&1
check "--tokens gives the same H" cmp -s <(h5dump -d /gate_up/H -m %.17g "$WORK/t.h5.layers/layer_003.h5" | tail -n +3) \
  <(h5dump -d /gate_up/H -m %.17g "$WORK/r1b.h5.layers/layer_003.h5" | tail -n +3)

# Non-finite activations: row 0 of layer 1's gate and up projections set to 1e30, so that
# silu(gate) * up overflows (llama2.c order: embedding, norms, wq, wk, wv, wo, norms, w1, w2, w3).
cp "$MODEL" "$WORK/inf.bin"
W1=$((28 + 4 * (512 * 64 + 5 * 64 + 5 * 64 * 64 + 2 * 5 * 32 * 64 + 5 * 64 * 64 + 5 * 64)))
for base in $((W1 + 4 * 172 * 64)) $((W1 + 4 * (2 * 5 * 172 * 64 + 172 * 64))); do
  for i in $(seq 0 63); do
    printf '\xca\xf2\x49\x71' | dd of="$WORK/inf.bin" bs=1 seek=$((base + 4 * i)) conv=notrunc status=none
  done
done
run_mpi 2 hessian --model "$WORK/inf.bin" --tokenizer "$DATA/models/stories260K/tok512.bin" \
  --text "$CALIB_TEXT" --nsamples 8 --out "$WORK/inf.h5" > /dev/null 2> "$WORK/err"
check "non-finite activations exit 2" [ $? = 2 ]
check "non-finite activations name layer and group" grep -q "layer 1 down: non-finite activation" "$WORK/err"

done_tests
