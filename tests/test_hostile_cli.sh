# Hostile input: headers whose sizes overflow, outputs that name an input, leftovers of killed
# runs, unbounded size options, tampered attributes, binary files quoted in messages.  Every
# refusal is exit 2 (1 for a failure of the environment) with one line that names the file and
# the reason once, and leaves the inputs as they were.
source "$(dirname "$0")/lib.sh" "$@"
TOK=$DATA/models/stories260K/tok512.bin

sum() { sha256sum "$1" | cut -d' ' -f1; }

# 1. A llama2.c header whose implied size overflows 64 bits (every dimension within its own
# bound: 2^24 wide, 4096 layers).  It was a SIGSEGV in eval, an out-of-memory in convert that
# left an empty directory, and a plan for a 4.6e18-parameter model.
le32() { printf "\\$(printf %03o $(($1 & 255)))\\$(printf %03o $(($1 >> 8 & 255)))\\$(printf %03o $(($1 >> 16 & 255)))\\$(printf %03o $(($1 >> 24 & 255)))"; }
{ le32 16777216; le32 16777216; le32 4096; le32 4096; le32 4096; le32 16777216; le32 16777216
  head -c 4096 /dev/zero; } > "$WORK/huge.bin"
for n in 1 2; do
  expect 2 "huge.bin: the dimensions imply .* parameters, more than" $n eval --model "$WORK/huge.bin" \
    --tokenizer "$TOK" --text "$EVAL_TEXT" --quiet
  expect 2 "huge.bin: the dimensions imply" $n convert --model "$WORK/huge.bin" --out "$WORK/huge_hf"
  check "convert of an overflowing header leaves no directory ($n ranks)" [ ! -e "$WORK/huge_hf" ]
done
expect 2 "huge.bin: the dimensions imply" 1 plan --config "$WORK/huge.bin" --ranks 64
expect 2 "the dimensions imply" 1 plan --synthetic --dim 16777216 --ffn 16777216 --heads 4096 \
  --kv-heads 4096 --layers 4096 --vocab 16777216 --ranks 64
# the largest dimension that still fits is planned (a bound, not a ban on big models)
timeout 60 "$TQP" plan --synthetic --dim 16384 --ffn 53248 --heads 128 --kv-heads 8 \
  --layers 126 --vocab 128256 --ranks 64 > /dev/null 2>&1
check "a 405B-sized plan is still accepted" [ $? = 0 ]

# 2. An output that is an input: refused before anything is written, the input unchanged.
cp "$MODEL" "$WORK/m.bin"
cp "$EVAL_TEXT" "$WORK/t.txt"
ln -s "$WORK/t.txt" "$WORK/t_link.txt"
ln "$WORK/m.bin" "$WORK/m_hard.bin"
before_m=$(sum "$WORK/m.bin"); before_t=$(sum "$WORK/t.txt")
E=(--tokenizer "$TOK" --quiet)
for n in 1 2; do
  expect 2 "m.bin: --json would overwrite the input given as --model" $n eval --model "$WORK/m.bin" \
    --text "$WORK/t.txt" "${E[@]}" --json "$WORK/m.bin"
  expect 2 "t.txt: --json would overwrite the input given as --text" $n eval --model "$WORK/m.bin" \
    --text "$WORK/t.txt" "${E[@]}" --json "$WORK/t.txt"
  expect 2 "would overwrite the input given as --text" $n tokenize --model "$WORK/m.bin" \
    --tokenizer "$TOK" --text "$WORK/t.txt" --out "$WORK/t_link.txt"
  expect 2 "would overwrite the input given as --model" $n eval --model "$WORK/m.bin" \
    --text "$WORK/t.txt" "${E[@]}" --json "$WORK/m_hard.bin"
  expect 2 "would overwrite the input given as --tokenizer" $n hessian --model "$WORK/m.bin" \
    --tokenizer "$TOK" --text "$WORK/t.txt" --out "$TOK" --quiet
  expect 2 "would overwrite the input given as --text" $n quantize --model "$WORK/m.bin" \
    --tokenizer "$TOK" --text "$WORK/t.txt" --out "$WORK/q.h5" --json "$WORK/../$(basename "$WORK")/t.txt"
  expect 2 "given as both --out and --json" $n tokenize --model "$WORK/m.bin" --tokenizer "$TOK" \
    --text "$WORK/t.txt" --out "$WORK/ids.u32" --json "$WORK/ids.u32"
done
check "the checkpoint is unchanged" [ "$(sum "$WORK/m.bin")" = "$before_m" ]
check "the text is unchanged" [ "$(sum "$WORK/t.txt")" = "$before_t" ]
check "nothing was written" [ ! -e "$WORK/q.h5" ] && [ ! -e "$WORK/ids.u32" ]
# a checkpoint directory: its own files are inputs too
"$TQP" convert --model "$MODEL" --out "$WORK/hf" > /dev/null 2>&1
before_cfg=$(sum "$WORK/hf/config.json")
expect 2 "config.json: --json would overwrite the input given as --model" 2 eval --model "$WORK/hf" \
  --text "$WORK/t.txt" "${E[@]}" --json "$WORK/hf/config.json"
expect 2 "would overwrite the input given as --model" 1 convert --model "$WORK/hf" --out "$WORK/hf"
check "the directory's config.json is unchanged" [ "$(sum "$WORK/hf/config.json")" = "$before_cfg" ]
"$TQP" eval --model "$WORK/hf" --text "$WORK/t.txt" "${E[@]}" --json "$WORK/hf/summary.json" > /dev/null 2>&1
check "another file in a model directory may be written" [ -s "$WORK/hf/summary.json" ]
# report: PREFIX.md is derived from --out
mkdir -p "$WORK/sums"
echo "RTN 2 --rounding nearest" > "$WORK/grid.md"
expect 2 "grid.md: --out would overwrite the input given as --jobs" 1 report --jobs "$WORK/grid.md" \
  --dir "$WORK/sums" --out "$WORK/grid" --allow-missing

# 3. Temporary files of killed runs are removed by the run that completes, and nothing else.
H=(hessian --model "$MODEL" --text "$CALIB_TEXT" --nsamples 16 --ctx 64 --quiet)
TQP_CRASH_AT=hessian-index-2 run_mpi 2 "${H[@]}" --out "$WORK/h.h5" > /dev/null 2>&1
check "hessian killed while writing its index" [ -n "$(ls "$WORK" | grep '^h\.h5\.tmp\.')" ]
TQP_CRASH_AT=hessian-commit-3 run_mpi 2 "${H[@]}" --out "$WORK/h.h5" > /dev/null 2>&1
check "hessian killed before renaming a layer" [ -e "$WORK/h.h5.layers/layer_003.h5.tmp" ]
echo keep > "$WORK/h.h5.tmp.notes"
run_mpi 2 "${H[@]}" --out "$WORK/h.h5" > /dev/null 2> "$WORK/err"
check "hessian resumes" [ $? = 0 ]
check "the resume says what it removed" grep -q "removed .* temporary file" "$WORK/err"
check "no index temporary left" [ -z "$(ls "$WORK" | grep '^h\.h5\.tmp\.[0-9]')" ]
check "no layer temporary left" [ -z "$(ls "$WORK/h.h5.layers" | grep tmp)" ]
check "an unrelated file is kept" [ -e "$WORK/h.h5.tmp.notes" ]
Q=(quantize --model "$MODEL" --hessians "$WORK/h.h5" --quiet --out "$WORK/q.h5")
for p in quantize-assemble quantize-rename; do
  TQP_CRASH_AT=$p run_mpi 2 "${Q[@]}" > /dev/null 2>&1
  check "quantize killed at $p leaves its temporary" [ -n "$(ls "$WORK" | grep '^q\.h5\.tmp\.[0-9]')" ]
done
run_mpi 2 "${Q[@]}" > /dev/null 2>&1
check "quantize resumes" [ $? = 0 ] && [ -s "$WORK/q.h5" ]
check "no quantize temporary left" [ -z "$(ls "$WORK" | grep '^q\.h5\.tmp')" ]

# 4. Every float attribute read back is checked (an Inf scale, a NaN proxy loss).
cp "$WORK/q.h5" "$WORK/inf.h5" && "$TESTBIN/h5attr" "$WORK/inf.h5" /layer_002/up scale f64 inf
expect 2 "inf.h5: layer_002/up: attribute scale is not finite (inf)" 2 eval --model "$MODEL" \
  --quantized "$WORK/inf.h5" --text "$EVAL_TEXT" --quiet
cp "$WORK/q.h5" "$WORK/nanp.h5" && "$TESTBIN/h5attr" "$WORK/nanp.h5" /layer_000/q proxy_loss_rel f64 nan
expect 2 "nanp.h5: .*attribute proxy_loss_rel is not finite" 1 eval --model "$MODEL" \
  --quantized "$WORK/nanp.h5" --text "$EVAL_TEXT" --quiet

# 6. Size options: bounded up front, exit 2.
head -c 3000 "$EVAL_TEXT" > "$WORK/short.txt"
for n in 1 2; do
  expect 2 "--nsamples 5000: .*short.txt has only .* distinct windows of 64 tokens" $n hessian \
    --model "$MODEL" --text "$WORK/short.txt" --seed 1 --nsamples 5000 --ctx 64 --out "$WORK/x.h5"
  expect 2 "--nsamples 2000000000 x --ctx 256: the activations take" $n hessian --model "$MODEL" \
    --text "$CALIB_TEXT" --seed 1 --nsamples 2000000000 --out "$WORK/x.h5"
  expect 2 "--nsamples 200000000 x --ctx 256: the activations take" $n quantize --model "$MODEL" \
    --text "$CALIB_TEXT" --seed 7 --nsamples 200000000 --out "$WORK/x.h5" --quiet
done
check "nothing written for refused sizes" [ ! -e "$WORK/x.h5" ]
expect 2 "--batch -1 is out of range (0 .. 1048576)" 1 hessian --model "$MODEL" --text "$CALIB_TEXT" \
  --batch -1 --out "$WORK/x.h5"
expect 2 "--nsamples 0 is out of range" 1 quantize --model "$MODEL" --text "$CALIB_TEXT" \
  --nsamples 0 --out "$WORK/x.h5"
expect 2 "--damp expects a finite number, got 'nan'" 1 quantize --model "$MODEL" \
  --hessians "$WORK/h.h5" --damp nan --out "$WORK/x.h5"
expect 2 "--ctx 1 is out of range" 1 eval --model "$MODEL" --text "$EVAL_TEXT" --ctx 1

# 8. One check for every input path: a directory or a missing file is named with its option.
expect 2 "$WORK: not a regular file (--text)" 1 eval --model "$MODEL" --text "$EVAL_TEXT" \
  --tokenizer "$TOK" --text "$WORK"
# a directory as --tokenizer is a Hugging Face tokenizer directory: its tokenizer.json is missing
expect 2 "$WORK/tokenizer.json: no such file" 1 eval --model "$MODEL" --text "$EVAL_TEXT" \
  --tokenizer "$WORK"
expect 2 "$WORK/nope.h5: no such file (--quantized)" 1 eval --model "$MODEL" --text "$EVAL_TEXT" \
  --quantized "$WORK/nope.h5"
expect 2 "$WORK: not a regular file (--hessians)" 2 quantize --model "$MODEL" --hessians "$WORK" \
  --out "$WORK/x.h5"
mkfifo "$WORK/fifo"
expect 2 "fifo: not a regular file or directory (--model)" 1 eval --model "$WORK/fifo" --text "$EVAL_TEXT"

# 9. Messages: the file, not a temporary; printable; the prefix once.
echo "not a directory" > "$WORK/afile"
expect 2 "afile: exists and is not a directory (--out)" 1 convert --model "$MODEL" --out "$WORK/afile"
head -c 400 "$TOK" > "$WORK/binary.jobs"
expect 2 "binary.jobs:1: " 1 report --jobs "$WORK/binary.jobs" --dir "$WORK/sums" --out "$WORK/r"
cp "$MODEL" "$WORK/nan.bin"
printf '\x00\x00\xc0\x7f' | dd of="$WORK/nan.bin" bs=1 seek=$((28 + 4 * (512 * 64 + 5 * 64 + 7))) \
  conv=notrunc status=none
expect 2 "nan.bin: layer 0 self_attn.q_proj: non-finite weight nan at element 7" 2 eval \
  --model "$WORK/nan.bin" --tokenizer "$TOK" --text "$EVAL_TEXT" --quiet
expect 2 "nan.bin: layer 0 self_attn.q_proj: non-finite weight nan at element 7" 2 hessian \
  --model "$WORK/nan.bin" --tokenizer "$TOK" --text "$EVAL_TEXT" --out "$WORK/x.h5" --quiet
expect 2 "unknown argument '--bogus' (see tqp plan --help)" 1 plan --bogus

done_tests
