#!/usr/bin/env bash
# Seed corpora for the fuzz targets (tests/fuzz), made from valid files every time, never
# committed: a small random checkpoint (mkmodel), its Hugging Face conversion, its Hessians and
# its quantized file, a tokenizer and token ids, an ablation job file and the summaries of a run.
# Usage: tools/fuzz-corpus.sh TQP MKMODEL OUT_DIR   (writes OUT_DIR/<target>/ and OUT_DIR/base/)
set -euo pipefail
TQP=$1 MK=$2 OUT=$3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${TQP_DATA_DIR:-${TQP_DEFAULT_DATA_DIR:-$ROOT/../shared/data}}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
B=$OUT/base
rm -rf "$OUT" && mkdir -p "$B"
for t in llama2c llama2c_dims safetensors config_json tokenizer hftok textinput tokens report qfile hfile; do
  mkdir -p "$OUT/$t"
done
# the model of tests/fuzz/fuzz_safetensors.c's fixed config.json: width 16, 2 layers, vocab 64
"$MK" "$B/model.bin" 16 32 2 2 1 64 64 1
"$TQP" convert --model "$B/model.bin" --out "$B/hf" > /dev/null
head -c 200 /dev/zero | tr '\0' 'a' > "$B/text.txt"
for i in $(seq 1 40); do echo "Once upon a time, $i little birds sang in the tree." >> "$B/text.txt"; done
# token ids below 64 for the small model: bytes of the text mod 64, as uint32
perl -e 'local $/; $_ = <STDIN>; print pack("V*", map { ord($_) % 64 } split //)' < "$B/text.txt" > "$B/ids.u32"
"$TQP" hessian --model "$B/model.bin" --tokens "$B/ids.u32" --nsamples 8 --ctx 32 \
  --out "$B/h.h5" --quiet > /dev/null
"$TQP" quantize --model "$B/model.bin" --hessians "$B/h.h5" --out "$B/q.h5" --bits 2 \
  --validate-on none --json "$B/sum.json" --quiet > /dev/null
"$TQP" quantize --model "$B/model.bin" --hessians "$B/h.h5" --out "$B/qt.h5" --bits 2 \
  --codebook trellis --trellis-L 8 --validate-on none --quiet > /dev/null

cp "$B/model.bin" "$OUT/llama2c/valid.bin"
head -c 28 "$B/model.bin" > "$OUT/llama2c/header.bin"
head -c 3000 "$B/model.bin" > "$OUT/llama2c/truncated.bin"
# llama2c_dims: each field 0x80 + its raw little-endian int32 (see fuzz_llama2c_dims.c)
le32() { printf "\\$(printf %03o $(($1 & 255)))\\$(printf %03o $(($1 >> 8 & 255)))\\$(printf %03o $(($1 >> 16 & 255)))\\$(printf %03o $(($1 >> 24 & 255)))"; }
raw() { for v in "$@"; do printf '\x80'; le32 "$v"; done; printf '\0\0'; head -c 64 /dev/zero; }
raw 16 32 2 2 1 64 64 > "$OUT/llama2c_dims/small"
raw 64 172 5 8 4 512 512 > "$OUT/llama2c_dims/stories"
raw 16777216 16777216 4096 4096 4096 16777216 16777216 > "$OUT/llama2c_dims/huge"
printf '\x01\x00\x00\x00\x00\x02\x00\x00\x00\x00\x03\x00\x00\x00\x00\x04\x00\x00\x00\x00\x05\x00\x00\x00\x00\x09\x00\x00\x00\x00\x0f\x00\x00\x00\x00\x00\x00' > "$OUT/llama2c_dims/table"
cp "$B/hf/model.safetensors" "$OUT/safetensors/valid.safetensors"
cp "$B/hf/config.json" "$OUT/config_json/convert.json"
for d in "$ROOT"/jobs/configs/*/; do cp "$d/config.json" "$OUT/config_json/$(basename "$d").json"; done
{ printf '\0'; cat "$DATA/models/stories260K/tok512.bin"; } > "$OUT/tokenizer/tok512"
# tokenizer.json: small files of both model types TQP reads (the real ones are megabytes)
# (the byte-level vocabulary has a symbol for every byte, as GPT-2's alphabet maps them)
perl -e '
  my @p = grep { ($_ >= 33 && $_ <= 126) || ($_ >= 161 && $_ <= 172) || ($_ >= 174) } 0 .. 255;
  my %ok = map { $_ => 1 } @p; my $n = 0; my @v;
  for my $b (0 .. 255) { my $cp = $ok{$b} ? $b : 256 + $n++; push @v, sprintf("\"\\u%04x\": %d", $cp, $b); }
  push @v, "\"ab\": 256", "\"\\u0120a\": 257", "\"abc\": 258", "\"\\u0120\\u0120\": 259";
  print "{\"added_tokens\": [{\"id\": 260, \"content\": \"<s>\", \"special\": true}, {\"id\": 261, \"content\": \"</s>\", \"lstrip\": true}],\n";
  print " \"normalizer\": {\"type\": \"NFC\"},\n";
  print " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(?i:\x27s|\x27t)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]},\n";
  print " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [260]}}},\n";
  print " \"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"vocab\": {", join(", ", @v), "},\n";
  print "   \"merges\": [\"a b\", \"\\u0120 a\", \"ab c\", \"\\u0120 \\u0120\"]}}\n";
' > "$OUT/hftok/bytelevel.json"
cat > "$OUT/hftok/metaspace.json" << 'JSON'
{"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}],
 "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
 "pre_tokenizer": null,
 "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}],
   "special_tokens": {"<s>": {"id": "<s>", "ids": [1]}}},
 "model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true, "unk_token": "<unk>",
   "vocab": {"<unk>": 0, "<s>": 1, "\u2581": 2, "a": 3, "b": 4, "\u2581a": 5, "ab": 6, "<0x41>": 7, "<0xC3>": 8, "<0xA9>": 9},
   "merges": [["\u2581", "a"], ["a", "b"]]}}
JSON
sed 's/"pre_tokenizer": null/"pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true}/' \
  "$OUT/hftok/metaspace.json" > "$OUT/hftok/metaspace_pre.json"
cp "$B/ids.u32" "$OUT/tokens/ids.u32"
# text input: JSON lines and plain text
printf '{"text": "ab a b"}\n{"text": "a\\u00e9 \\ud83d\\ude00"}\n\n{"text": ""}\n' > "$OUT/textinput/docs"
head -c 2000 "$B/text.txt" > "$OUT/textinput/plain"
for f in "$ROOT"/jobs/*.txt; do cp "$f" "$OUT/report/"; done
cp "$B/sum.json" "$OUT/report/summary.json"
"$TQP" eval --model "$B/model.bin" --tokens "$B/ids.u32" --ctx 32 --json "$B/eval.json" --quiet > /dev/null
cp "$B/eval.json" "$OUT/report/eval.json"
# the HDF5 targets take lists of 16-byte operations (tests/fuzz/fuzz_h5mut.h)
for t in qfile hfile; do
  : > "$OUT/$t/none"
  for s in 1 2 3 4 5 6 7 8; do
    perl -e 'srand($ARGV[0]); print pack("C*", map { int(rand(256)) } 1 .. 16 * $ARGV[0])' $s \
      > "$OUT/$t/ops$s"
  done
done
echo "fuzz-corpus.sh: seeds in $OUT"
