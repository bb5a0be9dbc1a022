# tqp eval on the bundled model: the acceptance figures, rank-count invariance, pre-tokenized
# input, the half-window option, and the converted Hugging Face directory (F32, BF16, F16).
source "$(dirname "$0")/lib.sh" "$@"

# Reference: an independent float64 implementation gives 5.593121 (ctx 256) and 5.5369 (512).
run_mpi 2 eval --model "$MODEL" --text "$EVAL_TEXT" --ctx 256 --json "$WORK/r2.json" --quiet > "$WORK/out2" 2>&1
check "eval on 2 ranks runs" [ $? -eq 0 ]
check "ppl ctx 256 = 5.5931 +- 0.1%" near "$(json "$WORK/r2.json" ppl)" 5.5931 0.001
check "618 windows" [ "$(json "$WORK/r2.json" windows)" = 618 ]
check "157590 tokens scored" [ "$(json "$WORK/r2.json" tokens_scored)" = 157590 ]
check "158223 tokens in the stream" [ "$(json "$WORK/r2.json" tokens_total)" = 158223 ]
check "text sha256" [ "$(json "$WORK/r2.json" text_sha256)" = 3fdaffd20d9c41564546711b7fd19a631f1c521833aa5b3142b34f32936b3c7a ]
check "ranks = 2" [ "$(json "$WORK/r2.json" ranks)" = 2 ]
for key in nll seconds tokens_per_second ctx; do
  check "json has $key" [ -n "$(json "$WORK/r2.json" $key)" ]
done

for n in 1 3; do
  run_mpi $n eval --model "$MODEL" --text "$EVAL_TEXT" --json "$WORK/r$n.json" --quiet > /dev/null 2>&1
  check "ppl on $n ranks equals 2 ranks to 1e-9" near "$(json "$WORK/r$n.json" ppl)" "$(json "$WORK/r2.json" ppl)" 1e-9
  check "nll_sum on $n ranks is bit-identical" [ "$(json "$WORK/r$n.json" nll_sum)" = "$(json "$WORK/r2.json" nll_sum)" ]
done

run_mpi 2 eval --model "$MODEL" --text "$EVAL_TEXT" --ctx 512 --json "$WORK/c512.json" --quiet > /dev/null 2>&1
check "ppl ctx 512 = 5.5369 +- 0.1%" near "$(json "$WORK/c512.json" ppl)" 5.5369 0.001

run_mpi 2 eval --model "$MODEL" --text "$EVAL_TEXT" --half-window --json "$WORK/half.json" --quiet > /dev/null 2>&1
check "half window scores 127 tokens per window" [ "$(json "$WORK/half.json" tokens_scored)" = $((618 * 127)) ]

# Pre-tokenized input gives the same stream and the same perplexity.
"$TQP" tokenize --model "$MODEL" --text "$EVAL_TEXT" --out "$WORK/eval.u32" > /dev/null
check "token file is 4 bytes per token" [ "$(stat -c %s "$WORK/eval.u32")" = $((158223 * 4)) ]
run_mpi 2 eval --model "$MODEL" --tokens "$WORK/eval.u32" --json "$WORK/tok.json" --quiet > /dev/null 2>&1
check "--tokens gives the same nll_sum" [ "$(json "$WORK/tok.json" nll_sum)" = "$(json "$WORK/r2.json" nll_sum)" ]

# The converted Hugging Face directory: F32 to 1e-5, F16 and BF16 to 0.1 %.
for dt in f32 bf16 f16; do
  "$TQP" convert --model "$MODEL" --out "$WORK/hf_$dt" --dtype $dt > /dev/null
  check "convert $dt wrote a tokenizer" [ -f "$WORK/hf_$dt/tokenizer.bin" ]
  run_mpi 2 eval --model "$WORK/hf_$dt" --text "$EVAL_TEXT" --json "$WORK/hf_$dt.json" --quiet > /dev/null 2>&1
  tol=0.001; [ $dt = f32 ] && tol=1e-5
  check "HF $dt ppl within $tol of the .bin" near "$(json "$WORK/hf_$dt.json" ppl)" "$(json "$WORK/r2.json" ppl)" $tol
done
check "bf16 safetensors is half the size of f32" [ "$(stat -c %s "$WORK/hf_bf16/model.safetensors")" -lt "$(stat -c %s "$WORK/hf_f32/model.safetensors")" ]

done_tests
