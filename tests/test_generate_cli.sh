# tqp generate on the bundled model: the engine's logits against the window forward for the
# full-precision model and for a file of each codebook (test_infer), the command's text, JSON,
# determinism over seeds and threads, the end of a text, and bad input (one line, exit 2).
source "$(dirname "$0")/lib.sh" "$@"

G="generate --model $MODEL"
run_mpi 1 hessian --model "$MODEL" --text "$CALIB_TEXT" --nsamples 16 --out "$WORK/h.h5" --quiet > /dev/null 2>&1
check "hessians collected" [ $? = 0 ]
Q="quantize --model $MODEL --hessians $WORK/h.h5 --quiet"
qfiles=""
for spec in "quip --bits 2" "gptq --bits 3 --rotation none" "kron --bits 2 --rotation kron" \
            "trellis --bits 2 --codebook trellis" "1mul --bits 2 --codebook trellis --code 1mul" \
            "gf8 --bits 2 --codebook trellis --code gf8" \
            "e8p --bits 3 --codebook e8p" "e8p2 --bits 2 --codebook e8p"; do
  set -- $spec; name=$1; shift
  run_mpi 1 $Q "$@" --out "$WORK/$name.h5" > /dev/null 2>&1
  check "quantize $name runs" [ $? = 0 ]
  qfiles="$qfiles --qfile $WORK/$name.h5"
done
"$TESTBIN/test_infer" $qfiles > "$WORK/infer.out" 2>&1
check "engine equals the window forward for every file (test_infer)" [ $? = 0 ]
grep -q "worst logit difference" "$WORK/infer.out" && sed 's/^/  /' "$WORK/infer.out" | grep "worst"
[ "$(grep -c 'worst logit difference' "$WORK/infer.out")" = 10 ] || fail "test_infer compared $(grep -c 'worst logit' "$WORK/infer.out") engines, want 10 (9 files and a wide random model)"
if grep -qw avx512vbmi /proc/cpuinfo && grep -qw avx512_vbmi2 /proc/cpuinfo && grep -qw avx512_vnni /proc/cpuinfo && grep -qw gfni /proc/cpuinfo; then
  check "gf8's file ran its byte kernel" grep -q "avx512-gf8" "$WORK/infer.out"
fi

# the AVX2 kernels (AVX-512 masked off) on the SIMD codebooks
if grep -q avx2 /proc/cpuinfo; then
  TQP_NO_AVX512=1 "$TESTBIN/test_infer" --qfile "$WORK/trellis.h5" --qfile "$WORK/1mul.h5" --qfile "$WORK/e8p.h5" > "$WORK/infer2.out" 2>&1
  check "engine equals the window forward with the AVX2 kernels" [ $? = 0 ]
  check "the AVX2 kernels ran" grep -q "trellis (avx2" "$WORK/infer2.out"
fi

# greedy, full precision: the text continues the prompt, the JSON has the figures
"$TQP" $G --prompt "Once upon a time" --max-tokens 40 --temperature 0 --threads 1 --json "$WORK/g.json" > "$WORK/out" 2> "$WORK/err"
check "generate runs" [ $? = 0 ]
check "the text starts with the prompt" [ "$(head -c 16 "$WORK/out")" = "Once upon a time" ]
check "the text goes on" [ "$(wc -c < "$WORK/out")" -gt 60 ]
check "40 tokens" [ "$(json "$WORK/g.json" generated_tokens)" = 40 ]
check "stopped at --max-tokens" [ "$(json "$WORK/g.json" stop)" = max_tokens ]
check "speeds and peak memory on stderr" grep -q "tokens/s; generated: 40 tokens.*peak memory" "$WORK/err"
for f in prompt_tokens_per_second generation_tokens_per_second peak_memory_mib weight_bytes_per_token; do
  check "json has $f > 0" awk -v v="$(json "$WORK/g.json" $f)" 'BEGIN { exit !(v > 0) }'
done
check "json text is the streamed text" [ "Once upon a time$(json "$WORK/g.json" text | head -c 20)" = "$(head -c 36 "$WORK/out")" ]
"$TQP" $G --prompt "Once upon a time" --max-tokens 40 --temperature 0 --threads 2 > "$WORK/out2" 2> /dev/null
check "greedy: the same text on 2 threads" cmp -s "$WORK/out" "$WORK/out2"

# sampling: the same seed, the same text on 1 and 2 threads; another seed, another text
printf 'One day, Tim' > "$WORK/prompt.txt"
for t in 1 2; do
  "$TQP" $G --prompt-file "$WORK/prompt.txt" --max-tokens 60 --seed 7 --threads $t > "$WORK/s7-$t" 2> /dev/null
done
check "seed 7: the same text on 1 and 2 threads" cmp -s "$WORK/s7-1" "$WORK/s7-2"
"$TQP" $G --prompt-file "$WORK/prompt.txt" --max-tokens 60 --seed 8 > "$WORK/s8" 2> /dev/null
check "seed 8: another text" sh -c "! cmp -s '$WORK/s7-1' '$WORK/s8'"
"$TQP" $G --prompt "Once upon a time" --max-tokens 500 --seed 1 --json "$WORK/e.json" > /dev/null 2>&1
check "a story ends before 500 tokens" [ "$(json "$WORK/e.json" stop)" = eos ]

# quantized: every codebook through its own kernel, the same seed and text on 1 and 2 threads
for name in quip trellis 1mul gf8 e8p e8p2; do
  for t in 1 2; do
    "$TQP" $G --quantized "$WORK/$name.h5" --prompt "Once upon a time" --max-tokens 30 --seed 3 --threads $t --json "$WORK/$name-$t.json" > "$WORK/$name-$t" 2> /dev/null
  done
  check "$name: generate runs" [ -s "$WORK/$name-1.json" ]
  check "$name: the same text on 1 and 2 threads" cmp -s "$WORK/$name-1" "$WORK/$name-2"
  check "$name: weights computed from the codes" grep -q "\"weights\":.*\"$(echo $name | sed 's/quip/scalar/; s/1mul/trellis/; s/gf8/trellis/; s/e8p2/e8p/')" "$WORK/$name-1.json"
  check "$name: fewer weight bytes per token than fp32" awk -v q="$(json "$WORK/$name-1.json" weight_bytes_per_token)" -v f="$(json "$WORK/g.json" weight_bytes_per_token)" 'BEGIN { exit !(q < f) }'
done

# a Hugging Face directory with a tokenizer.json (metaspace BPE: <unk> <s> </s>, U+2581, a-z):
# the text is the tokens' pieces, U+2581 as a space, ids past the tokenizer's 30 as nothing
"$TESTBIN/mkhf" "$WORK/hf" llama 32 48 2 4 2 8 64 256 7 > /dev/null
letters_tokenizer "$WORK/hf"
"$TQP" generate --model "$WORK/hf" --prompt "abc" --max-tokens 40 --seed 2 --temperature 1 --top-p 1 --json "$WORK/hf.json" > "$WORK/hf.out" 2> /dev/null
check "generate with a tokenizer.json runs" [ -s "$WORK/hf.json" ]
want=$(perl -ne 'if (/"tokens":\s*\[([^\]]*)\]/) { for (split /,\s*/, $1) { next if $_ == 2;
  print $_ == 3 ? " " : ($_ >= 4 && $_ < 30) ? chr(ord("a") + $_ - 4) : $_ < 3 ? (qw(<unk> <s> </s>))[$_] : "" } }' "$WORK/hf.json")
check "the text is the decoded tokens" [ "abc$want" = "$(head -c $((3 + ${#want})) "$WORK/hf.out")" ]
check "the tokens decode to some text" [ -n "$want" ]

# bad input: one line naming the problem, exit 2
"$TESTBIN/mkmodel" "$WORK/other.bin" 64 172 5 8 4 512 512 3 > /dev/null
TOK=$(dirname "$MODEL")/tok512.bin
: > "$WORK/empty.txt"
expect 2 "the prompt is empty" 1 $G --prompt ""
expect 2 "empty.txt: the prompt is empty" 1 $G --prompt-file "$WORK/empty.txt"
expect 2 "max-tokens 0" 1 $G --prompt "x" --max-tokens 0
expect 2 "exceed the model's context of 512" 1 $G --prompt "x" --max-tokens 600
expect 2 "quantized from another model" 1 generate --model "$WORK/other.bin" --tokenizer "$TOK" --quantized "$WORK/quip.h5" --prompt "x"
expect 2 "temperature -1" 1 $G --prompt "x" --temperature -1
expect 2 "top-p" 1 $G --prompt "x" --top-p 1.5
expect 2 "exactly one of --prompt and --prompt-file" 1 $G
expect 2 "not a TQP quantized model file" 1 $G --prompt "x" --quantized "$WORK/h.h5"
expect 2 "one rank" 2 $G --prompt "x"
done_tests
