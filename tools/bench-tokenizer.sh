#!/usr/bin/env bash
# Encoding speed of TQP's tokenizer.json encoder beside the reference implementation
# (@lenml/tokenizers on Node.js), on the same texts, in one run; prints a markdown table.
# The reference packages are installed as the tests install them (tests/npm/package.json).
# Usage: tools/bench-tokenizer.sh [TQP] [NPM_DIR]   (defaults: build/tqp, build/npm-references)
#   REPEAT=N: the text is WikiText-2 test + TinyStories calibration N times (default 4; the
#   reference's Llama 2 encoder needs minutes for N = 4).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TQP=${1:-$ROOT/build/tqp}
NPM=${2:-$ROOT/build/npm-references}
DATA=${TQP_DATA_DIR:-$ROOT/../shared/data}
mkdir -p "$NPM"
cp "$ROOT/tests/npm/package.json" "$ROOT/tests/npm/hf_reference.js" "$NPM/"
[ -d "$NPM/node_modules/@lenml/tokenizers" ] ||
  (cd "$NPM" && npm install --no-audit --no-fund --loglevel=error > /dev/null)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
for i in $(seq "${REPEAT:-4}"); do cat "$DATA/text/wikitext2_test.raw" "$DATA/text/tinystories_calib.txt"; done > "$W/big.txt"
: > "$W/empty.txt"
cpu=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
echo "Tokenizer encoding speed, one core ($cpu), commit $(git -C "$ROOT" rev-parse --short HEAD)"
echo "text: WikiText-2 test + TinyStories calibration, ${REPEAT:-4} times ($(($(stat -c %s "$W/big.txt") / 1000)) kB), one document;"
echo "encoding only, the tokenizer loaded before the timing: tqp bench tokenizer (best of 3) and the reference's encode()"
echo
echo "| tokenizer | tokens | TQP s | TQP MB/s | reference s | reference MB/s | TQP / reference |"
echo "|---|---:|---:|---:|---:|---:|---:|"
MB=$(awk -v b="$(stat -c %s "$W/big.txt")" 'BEGIN { print b / 1e6 }')
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
for t in llama3_1 qwen3 llama2; do
  D=$NPM/node_modules/@lenml/tokenizer-$t/models
  "$TQP" bench tokenizer --tokenizer "$D" --text "$W/big.txt" --reps 3 --json "$W/ours.json" > /dev/null
  "$TQP" tokenize --tokenizer "$D" --text "$W/big.txt" --out "$W/ours.u32" > /dev/null
  ref=$(cd "$NPM" && TQP_REF_TIME=1 node hf_reference.js "$D" "$W/big.txt" "$W/ref.u32" 2>&1 >/dev/null | sed -n 's/^encode_seconds //p')
  cmp -s "$W/ours.u32" "$W/ref.u32" || { echo "$t: ids differ from the reference" >&2; exit 1; }
  ours=$(sed -n 's/.*"encode_seconds":[[:space:]]*\([0-9.e+-]*\).*/\1/p' "$W/ours.json")
  awk -v t="$t" -v n=$(($(stat -c %s "$W/ours.u32") / 4)) -v mb="$MB" -v ours="$ours" -v ref="$ref" \
      'BEGIN { printf "| %s | %d | %.3f | %.2f | %.2f | %.3f | %.1f |\n", t, n, ours, mb / ours, ref, mb / ref, ref / ours }'
done
