# Hugging Face configurations beyond the plain Llama: rope_scaling (llama3 and linear run, other
# types are refused by name, the planner accepts them), end to end through convert, eval,
# quantize and the identity of the quantized file.
source "$(dirname "$0")/lib.sh" "$@"
"$TQP" convert --model "$MODEL" --out "$WORK/hf" > /dev/null
# with_scaling DIR JSON: a copy of the converted model whose config.json has rope_scaling JSON
with_scaling() {
  cp -r "$WORK/hf" "$1"
  sed -i "0,/{/s//{\"rope_scaling\": $2,/" "$1/config.json"
}
with_scaling "$WORK/l3one" '{"rope_type": "llama3", "factor": 1.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}'
with_scaling "$WORK/l3" '{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}'
with_scaling "$WORK/lin2" '{"type": "linear", "factor": 2.0}'
with_scaling "$WORK/yarn" '{"rope_type": "yarn", "factor": 4.0}'
with_scaling "$WORK/nofactor" '{"rope_type": "linear"}'
E=(--text "$EVAL_TEXT" --ctx 256 --quiet --tokenizer "$DATA/models/stories260K/tok512.bin")
for m in hf l3one l3 lin2; do
  run_mpi 2 eval --model "$WORK/$m" "${E[@]}" --json "$WORK/$m.json" > /dev/null 2>&1
  check "eval runs with $m" [ -n "$(json "$WORK/$m.json" ppl)" ]
done
p() { json "$WORK/$1.json" ppl; }
check "llama3 scaling with factor 1 is the plain model" near "$(p l3one)" "$(p hf)" 1e-6
check "linear scaling by 2 changes the perplexity" eval '! near "$(p lin2)" "$(p hf)" 0.01'
check "llama3 scaling by 8 changes the perplexity" eval '! near "$(p l3)" "$(p hf)" 0.01'
check "the scaled model's perplexity stays sane" awk -v a="$(p l3)" 'BEGIN { exit !(a > 1 && a < 1000) }'
expect 2 "yarn/config.json: rope_scaling type yarn is not supported (llama3 and linear are)" 1 \
  eval --model "$WORK/yarn" "${E[@]}"
expect 2 "rope_scaling factor nan is not positive" 1 eval --model "$WORK/nofactor" "${E[@]}"
timeout 60 "$TQP" plan --config "$WORK/yarn" --ranks 4 > /dev/null 2>&1
check "the planner accepts a scaling it does not run" [ $? = 0 ]
# convert keeps the scaling; quantize and eval --quantized run it; the quantized file belongs to
# the scaled model only
"$TQP" convert --model "$WORK/l3" --out "$WORK/l3rt" > /dev/null
check "convert writes rope_scaling back" grep -q '"rope_type":[[:space:]]*"llama3"' "$WORK/l3rt/config.json"
run_mpi 2 eval --model "$WORK/l3rt" "${E[@]}" --json "$WORK/l3rt.json" > /dev/null 2>&1
check "the converted copy computes the same function" near "$(p l3rt)" "$(p l3)" 1e-6
run_mpi 2 quantize --model "$WORK/l3" --tokenizer "$DATA/models/stories260K/tok512.bin" \
  --text "$CALIB_TEXT" --nsamples 16 --ctx 128 --bits 4 --out "$WORK/q.h5" --quiet > /dev/null 2>&1
check "quantize runs on a scaled model" [ -s "$WORK/q.h5" ]
run_mpi 2 eval --model "$WORK/l3" --quantized "$WORK/q.h5" "${E[@]}" --json "$WORK/q.json" > /dev/null 2>&1
check "4-bit quantized scaled model: perplexity above its own, by less than 3x" \
  awk -v q="$(p q)" -v f="$(p l3)" 'BEGIN { exit !(q > f && q < 3 * f) }'
expect 2 "quantized from another model" 2 eval --model "$WORK/hf" --quantized "$WORK/q.h5" "${E[@]}"
done_tests
