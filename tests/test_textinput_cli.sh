# Text input of every command: several files and JSON-lines files are documents in order, the
# same ids as the documents tokenized one by one; a tokenizer.json serves a model as well as a
# llama2.c tokenizer does (EOS between documents, from tokenizer_config.json); the stream is the
# same on any rank count; bad JSON lines and a tokenizer larger than the model's vocabulary are
# refused by name.
source "$(dirname "$0")/lib.sh" "$@"
TOK=$DATA/models/stories260K/tok512.bin
head -n 150 "$EVAL_TEXT" > "$WORK/a.txt"
tail -n 200 "$EVAL_TEXT" > "$WORK/b.txt"
ids() { od -An -v -tu4 "$1" | tr -s ' \n' '\n' | sed '/^$/d'; }

# several files: each a document with its own BOS, in order
for f in a b; do "$TQP" tokenize --model "$MODEL" --text "$WORK/$f.txt" --out "$WORK/$f.u32" > /dev/null; done
"$TQP" tokenize --model "$MODEL" --text "$WORK/a.txt,$WORK/b.txt" --out "$WORK/ab.u32" --json "$WORK/ab.json" > /dev/null
check "two files: the ids of each, in order" cmp -s "$WORK/ab.u32" <(cat "$WORK/a.u32" "$WORK/b.u32")
want=$( (sha256sum "$WORK/a.txt" | cut -c1-64; sha256sum "$WORK/b.txt" | cut -c1-64) | sha256sum | cut -c1-64)
check "two files: the SHA-256 of their SHA-256s" [ "$(json "$WORK/ab.json" text_sha256)" = "$want" ]
# JSON lines: one document per line; the same ids as the files
perl -MJSON::PP -e 'for my $f (@ARGV) { local $/; open my $h, "<:encoding(UTF-8)", $f or die; my $t = <$h>;
  print JSON::PP->new->ascii->encode({text => $t}), "\n" }' "$WORK/a.txt" "$WORK/b.txt" > "$WORK/docs.jsonl"
"$TQP" tokenize --model "$MODEL" --text "$WORK/docs.jsonl" --out "$WORK/jl.u32" > /dev/null
check "a .jsonl file: one document per line" cmp -s "$WORK/ab.u32" "$WORK/jl.u32"
printf '{"text": "Once upon a time"}\n[1, 2]\n' > "$WORK/bad.jsonl"
expect 2 "bad.jsonl:2: not a JSON object with a string \"text\"" 1 tokenize --model "$MODEL" \
  --text "$WORK/bad.jsonl" --out "$WORK/x.u32"
printf '\n  \n' > "$WORK/empty.jsonl"
expect 2 "empty.jsonl: no documents" 1 tokenize --model "$MODEL" --text "$WORK/empty.jsonl" --out "$WORK/x.u32"
expect 2 "$WORK/nope.txt: no such file (--text)" 1 eval --model "$MODEL" --text "$WORK/a.txt,$WORK/nope.txt"
# the same stream, and so the same perplexity, on 1 and 2 ranks
for n in 1 2; do
  run_mpi $n eval --model "$MODEL" --text "$WORK/a.txt,$WORK/docs.jsonl" --ctx 128 --quiet \
    --json "$WORK/e$n.json" > /dev/null 2>&1
done
check "several documents: the same perplexity on 1 and 2 ranks" \
  [ -n "$(json "$WORK/e1.json" ppl)" ] && [ "$(json "$WORK/e1.json" ppl)" = "$(json "$WORK/e2.json" ppl)" ]

# a tokenizer.json for a small random model (vocabulary 64): EOS between documents
"$TESTBIN/mkmodel" "$WORK/m64.bin" 16 32 2 2 1 64 64 1
mkdir -p "$WORK/tj"
cat > "$WORK/tj/tokenizer.json" << 'JSON'
{"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},
                  {"id": 2, "content": "</s>", "special": true}],
 "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
   {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
 "pre_tokenizer": null,
 "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}],
   "special_tokens": {"<s>": {"id": "<s>", "ids": [1]}}},
 "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true,
   "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "a": 4, "b": 5, "c": 6, "\u2581a": 7, "ab": 8, "\u2581ab": 9},
   "merges": ["\u2581 a", "a b", "\u2581a b"]}}
JSON
echo '{"bos_token": "<s>", "eos_token": "</s>"}' > "$WORK/tj/tokenizer_config.json"
printf '{"text": "ab c"}\n{"text": "a xb"}\n' > "$WORK/small.jsonl"
"$TQP" tokenize --tokenizer "$WORK/tj" --text "$WORK/small.jsonl" --out "$WORK/small.u32" > /dev/null
check "tokenizer.json: BOS per document, EOS between, merges and unknowns" \
  [ "$(ids "$WORK/small.u32" | tr '\n' ' ')" = "1 9 3 6 2 1 7 3 0 5 " ]
"$TQP" tokenize --model "$WORK/m64.bin" --tokenizer "$WORK/tj/tokenizer.json" --text "$WORK/small.jsonl" \
  --out "$WORK/small2.u32" > /dev/null
check "tokenizer.json named directly, with a model: the same ids" cmp -s "$WORK/small.u32" "$WORK/small2.u32"
for i in $(seq 200); do echo "ab c a ab b ca"; done > "$WORK/abc.txt"
run_mpi 2 eval --model "$WORK/m64.bin" --tokenizer "$WORK/tj" --text "$WORK/abc.txt" --ctx 32 --quiet \
  --json "$WORK/e64.json" > /dev/null 2>&1
check "tqp eval with a tokenizer.json" [ -n "$(json "$WORK/e64.json" ppl)" ]
"$TQP" convert --model "$WORK/m64.bin" --out "$WORK/hf64" > /dev/null
cp "$WORK/tj/tokenizer.json" "$WORK/tj/tokenizer_config.json" "$WORK/hf64/"
run_mpi 1 eval --model "$WORK/hf64" --text "$WORK/abc.txt" --ctx 32 --quiet --json "$WORK/e64hf.json" > /dev/null 2>&1
p_hf=$(json "$WORK/e64hf.json" ppl) p_bin=$(json "$WORK/e64.json" ppl)
check "a Hugging Face directory's own tokenizer.json is found (the same perplexity)" \
  eval '[ -n "$p_hf" ] && near "$p_hf" "$p_bin" 1e-5' 
"$TESTBIN/mkmodel" "$WORK/m8.bin" 16 32 1 2 1 8 64 1
expect 2 "tj: ids up to 9, beyond the model's vocabulary of 8" 1 eval --model "$WORK/m8.bin" \
  --text "$WORK/abc.txt" --tokenizer "$WORK/tj" --ctx 8
done_tests
