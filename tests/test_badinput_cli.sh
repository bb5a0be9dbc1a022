# Bad input on the command line: every case exits with status 2 (1 for an unwritable output),
# prints exactly one line naming the file and the reason, and never hangs across ranks.
source "$(dirname "$0")/lib.sh" "$@"

E="--text $EVAL_TEXT --quiet"
for n in 1 2; do
  head -c 1000 "$MODEL" > "$WORK/trunc.bin"
  expect 2 "$WORK/trunc.bin: truncated" $n eval --model "$WORK/trunc.bin" $E
  head -c 20 "$MODEL" > "$WORK/tiny.bin"
  expect 2 "$WORK/tiny.bin: truncated" $n eval --model "$WORK/tiny.bin" $E
  { cat "$MODEL"; printf 'xxxx'; } > "$WORK/long.bin"
  expect 2 "$WORK/long.bin: header sizes do not match" $n eval --model "$WORK/long.bin" $E
  # a NaN in layer 3's wq (llama2.c order: embedding, rms_att, then wq for every layer)
  cp "$MODEL" "$WORK/nan.bin"
  off=$((28 + 4 * (512 * 64 + 5 * 64 + 3 * 64 * 64 + 7)))
  printf '\x00\x00\xc0\x7f' | dd of="$WORK/nan.bin" bs=1 seek=$off conv=notrunc status=none
  expect 2 "layer 3 self_attn.q_proj: non-finite" $n eval --model "$WORK/nan.bin" \
    --tokenizer "$DATA/models/stories260K/tok512.bin" $E
  # tqp convert refuses it too, naming the file and the tensor (it copied it, exit 0)
  rm -rf "$WORK/conv"
  expect 2 "nan.bin: model.layers.3.self_attn.q_proj.weight: non-finite" $n convert \
    --model "$WORK/nan.bin" --out "$WORK/conv"
  expect 2 "no such file" $n eval --model "$WORK/missing.bin" $E
  head -c 100 "$DATA/models/stories260K/tok512.bin" > "$WORK/tok.bin"
  expect 2 "$WORK/tok.bin: truncated" $n eval --model "$MODEL" --tokenizer "$WORK/tok.bin" $E
  # a directory as the tokenizer (a Hugging Face tokenizer directory) without tokenizer.json:
  # bad input like a directory as the text (it was "read error", 1)
  expect 2 "$WORK/tokenizer.json: no such file" $n eval --model "$MODEL" --tokenizer "$WORK" $E
  echo "Once upon a time" > "$WORK/short.txt"
  expect 2 "fewer than one window" $n eval --model "$MODEL" --text "$WORK/short.txt" --quiet
  expect 2 "validate-on gpu: " $n eval --model "$MODEL" $E --validate-on gpu
  expect 2 "validate-on must be auto, cpu" $n eval --model "$MODEL" $E --validate-on tpu
  expect 2 "validate-on gpu: " $n quantize --model "$MODEL" --text "$EVAL_TEXT" \
    --out "$WORK/never.h5" --validate-on gpu
  : > "$WORK/empty.txt"
  expect 2 "fewer than one window" $n eval --model "$MODEL" --text "$WORK/empty.txt" --quiet
  printf 'abc' > "$WORK/odd.u32"
  expect 2 "$WORK/odd.u32" $n eval --model "$MODEL" --tokens "$WORK/odd.u32" --quiet
done

# Hugging Face directories
"$TQP" convert --model "$MODEL" --out "$WORK/hf" > /dev/null
cp -r "$WORK/hf" "$WORK/hf_cfg"
sed -i '/"hidden_size"/d' "$WORK/hf_cfg/config.json"
expect 2 "config.json: missing field hidden_size" 2 eval --model "$WORK/hf_cfg" $E
cp -r "$WORK/hf" "$WORK/hf_abs"
sed -i 's/"num_attention_heads":[^,]*/"num_attention_heads": -3/' "$WORK/hf_abs/config.json"
expect 2 "config.json: attention head count -3" 1 eval --model "$WORK/hf_abs" $E
cp -r "$WORK/hf" "$WORK/hf_len"
printf '\xff\xff\xff\x00\x00\x00\x00\x00' | dd of="$WORK/hf_len/model.safetensors" bs=1 conv=notrunc status=none
expect 2 "model.safetensors: header length" 2 eval --model "$WORK/hf_len" $E
cp -r "$WORK/hf" "$WORK/hf_trunc"
truncate -s 5000 "$WORK/hf_trunc/model.safetensors"
expect 2 "outside" 1 eval --model "$WORK/hf_trunc" $E
cp -r "$WORK/hf" "$WORK/hf_missing"
sed -i 's/model.layers.4.mlp.down_proj/model.layers.4.mlp.down_prox/' "$WORK/hf_missing/model.safetensors"
expect 2 "missing tensor model.layers.4.mlp.down_proj.weight" 2 eval --model "$WORK/hf_missing" $E

# usage errors
expect 2 "--model is required" 1 eval --text "$EVAL_TEXT"
expect 2 "unknown argument '--bogus'" 1 eval --model "$MODEL" --bogus
expect 2 "--ctx expects an integer" 1 eval --model "$MODEL" --ctx 12x $E
expect 2 "exceeds the model's maximum sequence length" 2 eval --model "$MODEL" --ctx 4096 $E
expect 2 "exactly one of --text and --tokens" 1 eval --model "$MODEL"
expect 2 "--dtype must be" 1 convert --model "$MODEL" --out "$WORK/x" --dtype f8
# an output that cannot be written is a failure (1), not bad input
expect 1 "/nonexistent-dir/r.json: cannot write" 2 eval --model "$MODEL" $E --json /nonexistent-dir/r.json

timeout 10 "$TQP" bogus > /dev/null 2>&1; check "unknown command exits 2" [ $? = 2 ]
timeout 10 "$TQP" > /dev/null 2>&1; check "no command exits 2" [ $? = 2 ]
for c in eval convert tokenize hessian; do
  timeout 10 "$TQP" $c --help > "$WORK/help" 2>&1
  check "$c --help exits 0" [ $? = 0 ]
  check "$c --help lists --json" grep -q -- "--json" "$WORK/help"
done

done_tests
