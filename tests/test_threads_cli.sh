# Threads within a rank split every phase into units whose results do not depend on the thread
# that computes them (a window's forward pass, a row panel of the accumulation, a band of rows of
# the trellis), so the thread count changes no bit of any output: the Hessian layer files, the
# perplexity (its float64 NLL sum, which the JSON prints exactly) and the quantized file are the
# same for 1, 2 and 3 threads on 1 and 2 ranks, on the bundled model (under every OpenBLAS core
# type this CPU can run) and on a synthetic wide model, with threads taking windows or sharing
# one window's products when a batch has fewer windows than threads.  Also: the count chosen by
# default, the warning when threads exceed a rank's CPUs, and bad values.
source "$(dirname "$0")/lib.sh" "$@"
CFGS="1x1 1x2 1x3 2x1 2x2 2x3"

# mt N T args...: tqp on N ranks x T threads, every rank free to use every CPU.
mt() {
  local n=$1 t=$2; shift 2
  timeout 300 mpiexec --bind-to none -n "$n" "$TQP" "$@" --threads "$t"
}
# same_layers A B: the Hessian layer files of index A and index B are byte-identical.
same_layers() {
  local f k=0
  for f in "$1".layers/*.h5; do
    cmp -s "$f" "$2.layers/$(basename "$f")" || return 1
    k=$((k + 1))
  done
  [ $k -gt 0 ]
}

# 1. Hessians of stories260K.
H="hessian --model $MODEL --text $CALIB_TEXT --nsamples 48 --ctx 256 --quiet"
for c in $CFGS; do
  n=${c%x*} t=${c#*x}
  mt "$n" "$t" $H --out "$WORK/h$c.h5" --json "$WORK/h$c.json" > "$WORK/out" 2>&1
  check "hessian on $n ranks x $t threads runs" [ $? = 0 ] || cat "$WORK/out"
  check "hessian JSON records $t threads" [ "$(json "$WORK/h$c.json" threads)" = "$t" ]
  [ "$c" = 1x1 ] && continue
  check "hessians on $n ranks x $t threads equal 1 x 1" same_layers "$WORK/h1x1.h5" "$WORK/h$c.h5"
done

# Batches of 2 windows on 3 threads: the threads share each window's product blocks and heads.
mt 1 3 $H --batch 2 --out "$WORK/hb.h5" > "$WORK/out" 2>&1
check "hessian with fewer windows per batch than threads runs" [ $? = 0 ] || cat "$WORK/out"
check "hessians with threads sharing windows equal 1 x 1" same_layers "$WORK/h1x1.h5" "$WORK/hb.h5"

# 2. The same under every OpenBLAS core type (1 x 1 against 2 x 3).
core_types Haswell SkylakeX Cooperlake SapphireRapids Zen SandyBridge Nehalem
for ct in $CORE_TYPES; do
  for c in 1x1 2x3; do
    OPENBLAS_CORETYPE=$ct mt "${c%x*}" "${c#*x}" $H --nsamples 16 --out "$WORK/$ct$c.h5" > /dev/null 2>&1
    check "$ct: hessian on $c runs" [ $? = 0 ]
  done
  check "$ct: hessians on 2 x 3 equal 1 x 1" same_layers "$WORK/${ct}1x1.h5" "$WORK/${ct}2x3.h5"
done

# 3. A synthetic model wide enough for several accumulation panels (1376 = 2 x 512 + 352).
W=$WORK/wide.bin
"$TESTBIN/mkmodel" "$W" 512 1376 1 8 4 512 256 7
check "synthetic wide model written" [ -s "$W" ]
HW="hessian --model $W --tokenizer $DATA/models/stories260K/tok512.bin --text $CALIB_TEXT --nsamples 12 --ctx 128 --quiet"
for c in 1x1 1x3 2x2; do
  mt "${c%x*}" "${c#*x}" $HW --out "$WORK/w$c.h5" > "$WORK/out" 2>&1
  check "wide hessian on $c runs" [ $? = 0 ] || cat "$WORK/out"
  [ "$c" = 1x1 ] || check "wide hessians on $c equal 1 x 1" same_layers "$WORK/w1x1.h5" "$WORK/w$c.h5"
done

# 4. Perplexity: the full-precision model, a quantized file, and the wide model.
head -c 60000 "$EVAL_TEXT" > "$WORK/eval.txt"
mt 2 2 quantize --model "$MODEL" --hessians "$WORK/h1x1.h5" --out "$WORK/q.h5" --quiet > /dev/null 2>&1
check "quantize for the evaluation runs" [ -s "$WORK/q.h5" ]
head -c 2500 "$EVAL_TEXT" > "$WORK/small.txt" # a few windows: fewer per rank than threads
for what in full quant wide small; do
  case $what in
    small) E="eval --model $W --tokenizer $DATA/models/stories260K/tok512.bin --text $WORK/small.txt --ctx 128 --quiet" ;;
    full) E="eval --model $MODEL --text $WORK/eval.txt --quiet" ;;
    quant) E="eval --model $MODEL --quantized $WORK/q.h5 --text $WORK/eval.txt --quiet" ;;
    wide) E="eval --model $W --tokenizer $DATA/models/stories260K/tok512.bin --text $WORK/eval.txt --ctx 128 --quiet" ;;
  esac
  for c in $CFGS; do
    mt "${c%x*}" "${c#*x}" $E --json "$WORK/e$what$c.json" > "$WORK/out" 2>&1
    check "$what eval on $c runs" [ $? = 0 ] || cat "$WORK/out"
    [ "$c" = 1x1 ] && continue
    a=$(json "$WORK/e${what}1x1.json" nll_sum) b=$(json "$WORK/e$what$c.json" nll_sum)
    check "$what eval on $c: NLL sum $b equals 1 x 1's $a" [ -n "$a" ] && [ "$a" = "$b" ]
  done
done

# 5. The whole pipeline (Hessians, trellis quantization, validation) on 1 x 1 and 2 x 3, each
# run in its own directory (the file records the name of its Hessian file as given).
for c in 1x1 2x3; do
  mkdir -p "$WORK/$c"
  (cd "$WORK/$c" && mt "${c%x*}" "${c#*x}" quantize --model "$MODEL" --text "$CALIB_TEXT" \
    --nsamples 16 --codebook trellis --code 1mad --trellis-L 10 --eval-text "$WORK/eval.txt" \
    --out p.h5 --json p.json --quiet) > "$WORK/out" 2>&1
  check "pipeline on $c runs" [ $? = 0 ] || cat "$WORK/out"
done
check "pipeline: quantized files equal" cmp -s "$WORK/1x1/p.h5" "$WORK/2x3/p.h5"
check "pipeline: Hessians equal" same_layers "$WORK/1x1/p.h5.hessians.h5" "$WORK/2x3/p.h5.hessians.h5"
for k in ppl_full_precision ppl_quantized; do
  a=$(json "$WORK/1x1/p.json" $k) b=$(json "$WORK/2x3/p.json" $k)
  check "pipeline: $k $b equals $a" [ -n "$a" ] && [ "$a" = "$b" ]
done

# 6. The default: every CPU of the mask, shared by the ranks whose masks overlap.
cpus=$(nproc)
timeout 120 mpiexec --bind-to none -n 1 "$TQP" eval --model "$MODEL" --text "$WORK/eval.txt" --quiet \
  --json "$WORK/d1.json" > /dev/null 2>&1
check "default threads on 1 unbound rank: $cpus" [ "$(json "$WORK/d1.json" threads)" = "$cpus" ]
timeout 120 mpiexec --bind-to none -n 2 "$TQP" eval --model "$MODEL" --text "$WORK/eval.txt" --quiet \
  --json "$WORK/d2.json" > /dev/null 2>&1
want=$((cpus / 2)); [ $want -lt 1 ] && want=1
check "default threads on 2 unbound ranks: $want" [ "$(json "$WORK/d2.json" threads)" = "$want" ]
timeout 120 mpiexec --bind-to core -n 1 "$TQP" eval --model "$MODEL" --text "$WORK/eval.txt" --quiet \
  --json "$WORK/d3.json" > /dev/null 2>&1
check "default threads on a rank bound to one core: 1" [ "$(json "$WORK/d3.json" threads)" = 1 ]
timeout 120 mpiexec --bind-to core -n 1 "$TQP" eval --model "$MODEL" --text "$WORK/eval.txt" --quiet \
  --threads 2 > "$WORK/out" 2> "$WORK/err"
check "more threads than CPUs: runs" [ $? = 0 ]
check "more threads than CPUs: one warning naming the launcher options" \
  [ "$(grep -c 'warning: --threads 2 exceeds the 1 CPU.*--bind-to none' "$WORK/err")" = 1 ]

# 7. Bad values: exit 2 before any work.
for v in -1 1025 x; do
  expect 2 "--threads" 1 eval --model "$MODEL" --text "$WORK/eval.txt" --threads "$v"
done
done_tests
