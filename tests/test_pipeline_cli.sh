# tqp quantize as one restartable pipeline (Hessians -> layers -> assembly -> validation):
# SIGKILL at 12 points spread over the phases and resume, each time ending with the same bytes as
# an uninterrupted run, also when the resume runs on another rank count; rank-count and team
# invariance; a rerun with other options is refused; corrupted
# and truncated outputs are detected and only the damaged layers redone; a file-size limit (as a
# full disk) and an unwritable directory give clear errors and the run resumes afterwards.
source "$(dirname "$0")/lib.sh" "$@"
head -c 30000 "$EVAL_TEXT" > "$WORK/eval.txt"
Q=(quantize --model "$MODEL" --text "$CALIB_TEXT" --nsamples 32 --bits 2 --codebook trellis
   --code 1mad --trellis-L 12 --eval-text "$WORK/eval.txt" --out o.h5)

# in_dir DIR cmd...: run in DIR (created), so that every run writes the same relative names.
in_dir() { local d=$1; shift; mkdir -p "$d" && (cd "$d" && "$@"); }
events() { grep -c "\"event\":\"$2\"" "$1/o.h5.events.jsonl"; }

in_dir "$WORK/ref" run_mpi 2 "${Q[@]}" --json ref.json > "$WORK/ref.out" 2> "$WORK/ref.err"
check "pipeline on 2 ranks runs" [ $? = 0 ]
R=$WORK/ref
check "both perplexities in the JSON" [ -n "$(json "$R/ref.json" ppl_full_precision)" -a \
  -n "$(json "$R/ref.json" ppl_quantized)" ]
check "full-precision perplexity printed" grep -q "full precision" "$WORK/ref.out"
check "output path printed" grep -q "^output o.h5" "$WORK/ref.out"
check "no parts left after success" [ ! -e "$R/o.h5.parts" ]
check "one event per committed layer" [ "$(events "$R" layer_committed)" = 5 ]
check "run_done event" [ "$(events "$R" run_done)" = 1 ]
check "each phase logged" [ "$(events "$R" phase_done)" = 4 ]
check "progress names layers and ETA" grep -q "layer 3/5 committed.*ETA" "$WORK/ref.err"

for n in 1 4; do
  in_dir "$WORK/r$n" run_mpi $n "${Q[@]}" --quiet > /dev/null 2>&1
  check "identical output on $n ranks" cmp -s "$R/o.h5" "$WORK/r$n/o.h5"
done

# Teams of ranks on different layers (--teams): the same bytes, and the same per-matrix record.
for nt in 4:2 3:3; do
  n=${nt%:*} t=${nt#*:}
  in_dir "$WORK/t$n$t" run_mpi $n "${Q[@]}" --teams $t --quiet --json t.json > /dev/null 2>&1
  check "identical output on $n ranks in $t teams" cmp -s "$R/o.h5" "$WORK/t$n$t/o.h5"
  check "$t teams: same proxy loss in the summary" [ "$(json "$WORK/t$n$t/t.json" proxy_loss_mean)" = \
    "$(json "$R/ref.json" proxy_loss_mean)" ]
  check "$t teams: one event per layer" [ "$(events "$WORK/t$n$t" layer_committed)" = 5 ]
done
# A team's layer file renamed but not yet recorded by rank 0 when killed: redone on resume.
rm -rf "$WORK/k"
TQP_CRASH_AT=quantize-commit-3 in_dir "$WORK/k" run_mpi 4 "${Q[@]}" --teams 2 --quiet > /dev/null 2>&1
check "killed at a team's commit" [ $? != 0 ]
in_dir "$WORK/k" run_mpi 2 "${Q[@]}" --quiet > /dev/null 2>&1
check "resume of a 2-team run on 2 ranks: identical output" cmp -s "$R/o.h5" "$WORK/k/o.h5"

# Kill at points over every phase, resume, compare.
points="hessian-reduce-2 hessian-write-3 hessian-index-1 hessian-commit-4 quantize-layer-0
quantize-h5write-2 quantize-layer-4 quantize-commit-3 quantize-assemble quantize-rename
quantize-cleanup validate"
for p in $points; do
  rm -rf "$WORK/k"
  TQP_CRASH_AT=$p in_dir "$WORK/k" run_mpi 2 "${Q[@]}" --quiet > /dev/null 2>&1
  check "killed at $p" [ $? != 0 ]
  in_dir "$WORK/k" run_mpi 2 "${Q[@]}" --quiet --json k.json > /dev/null 2> "$WORK/k.err"
  check "resume after $p succeeds" [ $? = 0 ]
  check "identical output after a kill at $p" cmp -s "$R/o.h5" "$WORK/k/o.h5"
  check "validated after a kill at $p" [ "$(json "$WORK/k/k.json" ppl_quantized)" = \
    "$(json "$R/ref.json" ppl_quantized)" ]
  check "no parts left after resuming $p" [ ! -e "$WORK/k/o.h5.parts" ]
  if [ "$p" = quantize-layer-4 ]; then
    check "committed layers are kept on resume" [ "$(events "$WORK/k" layer_kept)" = 4 ]
    check "the resume is logged" [ "$(events "$WORK/k" resume)" = 1 ]
  fi
done

# Killed on 2 ranks, resumed on another rank count: the same bytes (the Hessians, the layers
# and their rows do not depend on which ranks made them).
for pn in hessian-commit-2:3 quantize-layer-2:1 quantize-layer-3:3; do
  p=${pn%:*} n=${pn#*:}
  rm -rf "$WORK/k"
  TQP_CRASH_AT=$p in_dir "$WORK/k" run_mpi 2 "${Q[@]}" --quiet > /dev/null 2>&1
  check "killed at $p on 2 ranks" [ $? != 0 ]
  in_dir "$WORK/k" run_mpi $n "${Q[@]}" --quiet > /dev/null 2> "$WORK/k.err"
  check "resume of $p on $n ranks succeeds" [ $? = 0 ] || cat "$WORK/k.err"
  check "identical output after $p on 2 ranks and a resume on $n" cmp -s "$R/o.h5" "$WORK/k/o.h5"
done

# A complete output: nothing to quantize; other options: refused, nothing touched.
in_dir "$R" run_mpi 2 "${Q[@]}" > /dev/null 2> "$WORK/err"
check "complete output reruns only the validation" grep -q "nothing to quantize" "$WORK/err"
cp "$R/o.h5" "$WORK/before.h5"
in_dir "$R" run_mpi 2 "${Q[@]}" --bits 3 > /dev/null 2> "$WORK/err"
check "other options exit 2" [ $? = 2 ]
check "other options: the difference is named" grep -q "bits is 2 there, 3 now" "$WORK/err"
check "other options: output untouched" cmp -s "$R/o.h5" "$WORK/before.h5"
in_dir "$R" run_mpi 2 "${Q[@]}" --seed 5 > /dev/null 2> "$WORK/err"
check "another seed is refused" grep -q "seed is \"0\" there, \"5\" now" "$WORK/err"

# A committed layer file corrupted while the run was down: detected by its SHA-256 and redone.
rm -rf "$WORK/c"
TQP_CRASH_AT=quantize-layer-3 in_dir "$WORK/c" run_mpi 2 "${Q[@]}" --quiet > /dev/null 2>&1
sz=$(stat -c %s "$WORK/c/o.h5.parts/layer_001.h5")
printf '\x5a' | dd of="$WORK/c/o.h5.parts/layer_001.h5" bs=1 seek=$((sz / 2)) conv=notrunc status=none
in_dir "$WORK/c" run_mpi 2 "${Q[@]}" --quiet > /dev/null 2> "$WORK/err"
check "corrupted layer file: run succeeds" [ $? = 0 ]
check "corrupted layer file is reported" grep -q "layer_001.h5: checksum mismatch.*layer 1 will be redone" "$WORK/err"
check "corrupted layer file: identical output" cmp -s "$R/o.h5" "$WORK/c/o.h5"

# A byte of layer 2's codes flipped in the finished file: the Fletcher-32 checksum catches it,
# layer 2 alone is redone (the others are kept from the file).
hexof() { od -An -tx1 -v "$1" | tr -d ' \n'; }
rm -rf "$WORK/d" && cp -r "$R" "$WORK/d"
h5dump -d /layer_002/down/codes -b LE -o "$WORK/codes.bin" "$R/o.h5" > /dev/null
pat=$(head -c 24 "$WORK/codes.bin" | od -An -tx1 -v | tr -d ' \n')
off=$(hexof "$R/o.h5" | awk -v p="$pat" '{ i = index($0, p); while (i && i % 2 == 0) { j = index(substr($0, i + 1), p); i = j ? i + j : 0 } print i ? (i - 1) / 2 : -1 }')
check "codes located in the file" [ "$off" -gt 0 ]
printf '\xff\xff' | dd of="$WORK/d/o.h5" bs=1 seek=$((off + 5)) conv=notrunc status=none
in_dir "$WORK/d" run_mpi 2 "${Q[@]}" --quiet > /dev/null 2> "$WORK/err"
check "damaged output: run succeeds" [ $? = 0 ]
check "damaged layer is reported" grep -q "o.h5: layer 2 is damaged" "$WORK/err"
check "only the damaged layer is reported" [ "$(grep -c "is damaged" "$WORK/err")" = 1 ]
check "damaged output: identical after the repair" cmp -s "$R/o.h5" "$WORK/d/o.h5"
check "damage logged as an event" grep -q '"event":"layer_damaged"' "$WORK/d/o.h5.events.jsonl"
check "only layer 2 recomputed" [ "$(grep -c '"event":"layer_committed"' "$WORK/d/o.h5.events.jsonl")" = 6 ]

# A truncated output: cannot be opened, reported, every layer redone.
rm -rf "$WORK/t" && cp -r "$R" "$WORK/t"
truncate -s $(($(stat -c %s "$R/o.h5") / 2)) "$WORK/t/o.h5"
in_dir "$WORK/t" run_mpi 2 "${Q[@]}" --quiet > /dev/null 2> "$WORK/err"
check "truncated output: run succeeds" [ $? = 0 ]
check "truncated output is reported" grep -q "o.h5: damaged (cannot be opened" "$WORK/err"
check "truncated output: identical after the repair" cmp -s "$R/o.h5" "$WORK/t/o.h5"

# Not our file under the output name: refused without --force.
mkdir -p "$WORK/n" && echo "precious" > "$WORK/n/o.h5"
in_dir "$WORK/n" run_mpi 1 "${Q[@]}" --quiet > /dev/null 2> "$WORK/err"
check "foreign file exits 2" [ $? = 2 ]
check "foreign file is left alone" grep -q precious "$WORK/n/o.h5"

# Out of space while assembling (a 200 KiB file-size limit on the tqp processes: the layer files
# fit, the output does not): a clear error naming the file, the committed layers stay; the rerun
# finishes.  (Shared-memory transport off: its segments would exceed the limit too.)
rm -rf "$WORK/f" && mkdir -p "$WORK/f" && cp -r "$R/o.h5.hessians.h5" "$R/o.h5.hessians.h5.layers" "$WORK/f/"
OMPI_MCA_btl=self,tcp in_dir "$WORK/f" run_mpi 2 /bin/sh -c 'ulimit -f 400 && exec "$0" "$@"' \
  "$TQP" "${Q[@]}" --quiet > /dev/null 2> "$WORK/err"
check "size limit: exits non-zero" [ $? != 0 ]
check "size limit: the error names the file and the reason" grep -q "error: o.h5: needs about .*file size limit exceeded" "$WORK/err"
check "size limit: no output under the final name" [ ! -e "$WORK/f/o.h5" ]
check "size limit: committed layers kept" [ -e "$WORK/f/o.h5.parts/layer_004.h5" ]
in_dir "$WORK/f" run_mpi 2 "${Q[@]}" --quiet > /dev/null 2> "$WORK/err"
check "space back: resume succeeds" [ $? = 0 ]
check "space back: identical output" cmp -s "$R/o.h5" "$WORK/f/o.h5"

# An output directory that becomes unwritable (as an unprivileged user; root ignores modes).
if command -v setpriv > /dev/null && setpriv --reuid nobody --regid nogroup --clear-groups true 2> /dev/null; then
  U=(setpriv --reuid nobody --regid nogroup --clear-groups)
  rm -rf "$WORK/u" && mkdir -p "$WORK/u" && chmod 755 "$WORK" && chown nobody "$WORK/u"
  export HOME=$WORK/u
  TQP_CRASH_AT=quantize-layer-2 in_dir "$WORK/u" "${U[@]}" timeout 300 mpiexec -n 2 "$TQP" "${Q[@]}" --quiet > /dev/null 2>&1
  chmod 555 "$WORK/u"
  in_dir "$WORK/u" "${U[@]}" timeout 300 mpiexec -n 2 "$TQP" "${Q[@]}" --quiet > /dev/null 2> "$WORK/err"
  check "unwritable directory: exits non-zero" [ $? != 0 ]
  check "unwritable directory: a clear error" grep -q "not writable" "$WORK/err"
  chmod 755 "$WORK/u"
  in_dir "$WORK/u" "${U[@]}" timeout 300 mpiexec -n 2 "$TQP" "${Q[@]}" --quiet > /dev/null 2> "$WORK/err"
  check "writable again: resume succeeds" [ $? = 0 ]
  check "writable again: identical output" cmp -s "$R/o.h5" "$WORK/u/o.h5"
else
  echo "skipping the unwritable-directory case: cannot run as an unprivileged user"
fi

done_tests
