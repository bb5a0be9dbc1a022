# tqp tokenize with Hugging Face tokenizer.json files gives exactly the ids of the reference
# implementation (@lenml/tokenizers, a JavaScript port of the Hugging Face tokenizers), for the
# tokenizers of Llama 3.1 (byte-level BPE, regex pre-tokenizer, ignore_merges, BOS template),
# Qwen3 (byte-level BPE, NFC, no BOS) and Llama 2 (character BPE with byte fallback and the
# metaspace normalizers), on every text of the data directory (TinyStories calibration and
# evaluation, WikiText-2) and a text of edge cases (scripts, emoji, combining marks, special
# tokens inline, whitespace runs).  The packages, which ship the
# models' tokenizer files, are installed from the npm registry at test time into the build
# directory (tests/npm/package.json pins them) and never committed.  Skipped (77) without node
# and npm or when the registry cannot be reached.
source "$(dirname "$0")/lib.sh" "$@"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  echo "skip: node and npm not found (tools/install-deps.sh installs them)"; exit 77
fi
NPM=$(cd "$TESTBIN/.." && pwd)/npm-references
mkdir -p "$NPM"
cp "$ROOT/tests/npm/package.json" "$ROOT/tests/npm/hf_reference.js" "$NPM/"
if [ ! -d "$NPM/node_modules/@lenml/tokenizers" ]; then
  (cd "$NPM" && timeout 600 npm install --no-audit --no-fund --loglevel=error > "$WORK/npm.log" 2>&1) ||
    { cat "$WORK/npm.log"; echo "skip: npm install failed (registry unreachable?)"; exit 77; }
fi
TEXTS=("$CALIB_TEXT" "$EVAL_TEXT" "$DATA/text/wikitext2_test.raw" "$ROOT/tests/data/tokenizer_stress.txt")
for t in llama3_1 qwen3 llama2; do
  D=$NPM/node_modules/@lenml/tokenizer-$t/models
  for x in "${TEXTS[@]}"; do
    name="$t $(basename "$x")"
    (cd "$NPM" && node hf_reference.js "$D" "$x" "$WORK/ref.u32")
    "$TQP" tokenize --tokenizer "$D" --text "$x" --out "$WORK/ours.u32" --json "$WORK/t.json" > /dev/null
    check "$name: tqp tokenize runs" [ $? = 0 ]
    check "$name: the reference's ids ($(($(stat -c %s "$WORK/ref.u32") / 4)) tokens)" \
      cmp -s "$WORK/ref.u32" "$WORK/ours.u32"
  done
  check "$t: the summary records the tokenizer's SHA-256" \
    [ "$(json "$WORK/t.json" tokenizer_sha256)" = "$(sha256sum "$D/tokenizer.json" | cut -d' ' -f1)" ]
  # the directory or the file itself
  "$TQP" tokenize --tokenizer "$D/tokenizer.json" --text "${TEXTS[3]}" --out "$WORK/file.u32" > /dev/null
  check "$t: tokenizer.json named directly gives the same ids" cmp -s "$WORK/ours.u32" "$WORK/file.u32"
done
done_tests
