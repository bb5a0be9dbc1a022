# Hugging Face configurations beyond the plain Llama, end to end through convert, eval, quantize
# and the quantized file: rope_scaling (llama3 and linear run, other types are refused by name,
# the planner accepts them), Qwen2 and Qwen3.
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

# Every architecture, random (mkhf): Llama, Mistral with a sliding window shorter than the
# windows, Qwen2 (q/k/v biases), Qwen3 (q/k norms, head size 12 with hidden 32 and 4 heads), each
# with a small tokenizer.json of its own.  tqp quantize --text then tqp eval --quantized: the
# same bytes and the same perplexity on 1 and 2 ranks; convert keeps the architecture; the
# quantized file stores the biases and norms and evaluates with them; the summary records the
# architecture and the tokenizer.
letters_tokenizer "$WORK"
head -c 40000 "$CALIB_TEXT" > "$WORK/calib.txt"
head -c 20000 "$EVAL_TEXT" > "$WORK/eval.txt"
for a in llama mistral qwen2 qwen3; do
  hd=$([ $a = qwen3 ] && echo 12 || echo 8)
  "$TESTBIN/mkhf" "$WORK/$a" $a 32 48 2 4 2 $hd 64 256 7 $([ $a = mistral ] && echo 16)
  check "$a: mkhf wrote the model" [ -s "$WORK/$a/model.safetensors" ]
  cp "$WORK/tokenizer.json" "$WORK/tokenizer_config.json" "$WORK/$a/"
  E=(--text "$WORK/eval.txt" --ctx 64 --quiet)
  run_mpi 2 eval --model "$WORK/$a" "${E[@]}" --json "$WORK/$a.json" > /dev/null 2>&1
  check "$a: eval runs" [ -n "$(p $a)" ]
  "$TQP" convert --model "$WORK/$a" --out "$WORK/${a}rt" > /dev/null
  cp "$WORK/tokenizer.json" "$WORK/tokenizer_config.json" "$WORK/${a}rt/"
  run_mpi 1 eval --model "$WORK/${a}rt" "${E[@]}" --json "$WORK/${a}rt.json" > /dev/null 2>&1
  check "$a: its conversion computes the same function" eval 'near "$(p ${a}rt)" "$(p $a)" 1e-6'
  for n in 1 2; do # the same output path each time: the file records its Hessians' path
    rm -rf "$WORK/$a.h5"*
    run_mpi $n quantize --model "$WORK/$a" --text "$WORK/calib.txt" --nsamples 32 --ctx 64 --bits 4 \
      --out "$WORK/$a.h5" --json "$WORK/$a.q$n.json" --quiet > /dev/null 2>&1
    mv "$WORK/$a.h5" "$WORK/$a.$n.h5"
    run_mpi $n eval --model "$WORK/$a" --quantized "$WORK/$a.$n.h5" "${E[@]}" --json "$WORK/$a.e$n.json" > /dev/null 2>&1
  done
  check "$a: quantize --text runs" [ -s "$WORK/$a.1.h5" ]
  check "$a: the same quantized bytes on 1 and 2 ranks" cmp -s "$WORK/$a.1.h5" "$WORK/$a.2.h5"
  check "$a: the same quantized perplexity on 1 and 2 ranks" \
    eval '[ -n "$(p $a.e1)" ] && [ "$(p $a.e1)" = "$(p $a.e2)" ]'
  check "$a: 4-bit perplexity within 20% of full precision" \
    awk -v q="$(p $a.e1)" -v f="$(p $a)" 'BEGIN { exit !(q > 0.8 * f && q < 1.2 * f) }'
  arch=$(sed -n 's/.*"architectures":[^"]*"\([A-Za-z0-9]*\)".*/\1/p' "$WORK/$a/config.json" | head -1)
  check "$a: the summary names the architecture ($arch)" grep -q "\"architecture\":[[:space:]]*\"$arch\"" "$WORK/$a.q1.json"
  check "$a: the summary records the tokenizer's SHA-256" \
    grep -q "$(sha256sum "$WORK/tokenizer.json" | cut -c1-64)" "$WORK/$a.q1.json"
done
check "qwen2: biases stored" h5dump -H -d /layer_001/v_bias "$WORK/qwen2.1.h5" > /dev/null 2>&1
check "qwen3: q/k norms stored" h5dump -H -d /layer_000/k_norm "$WORK/qwen3.1.h5" > /dev/null 2>&1
check "qwen3: no biases stored" eval '! h5dump -H -d /layer_000/q_bias "$WORK/qwen3.1.h5" > /dev/null 2>&1'
check "mistral: the window is kept by convert" grep -q '"sliding_window":[[:space:]]*16' "$WORK/mistralrt/config.json"
# bad input: exit 2, one line naming the file and the reason, nothing written
sed 's/"type": "BPE"/"type": "WordPiece"/' "$WORK/tokenizer.json" > "$WORK/wp.json"
expect 2 "wp.json: model type WordPiece is not supported" 1 tokenize --tokenizer "$WORK/wp.json" \
  --text "$WORK/eval.txt" --out "$WORK/never.u32"
sed 's/"z": 29/"z": -29/' "$WORK/tokenizer.json" > "$WORK/neg.json"
expect 2 "neg.json: vocab entry 'z' has a bad id" 1 tokenize --tokenizer "$WORK/neg.json" \
  --text "$WORK/eval.txt" --out "$WORK/never.u32"
sed 's/"merges": \[\]/"merges": ["ab"]/' "$WORK/tokenizer.json" > "$WORK/merge.json"
expect 2 "merge.json: merge 0 'ab' has no space" 1 tokenize --tokenizer "$WORK/merge.json" \
  --text "$WORK/eval.txt" --out "$WORK/never.u32"
check "nothing written for a bad tokenizer" [ ! -e "$WORK/never.u32" ]
cp -r "$WORK/qwen2" "$WORK/nohead"
sed -i 's/"num_attention_heads":[^,]*,//' "$WORK/nohead/config.json"
expect 2 "nohead/config.json: missing field num_attention_heads" 2 quantize --model "$WORK/nohead" \
  --text "$WORK/calib.txt" --out "$WORK/never.h5"
check "nothing written for a bad config" [ ! -e "$WORK/never.h5" ]
done_tests
