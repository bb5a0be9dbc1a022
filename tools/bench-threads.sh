#!/usr/bin/env bash
# The Hessian phase and evaluation of a synthetic Llama-shaped model on one rank with 1 and T
# threads: wall time, speed-up, and whether the outputs are identical (the Hessian layer files
# byte for byte, the NLL sum bit for bit), as Markdown.  The model is made by mkmodel in a
# temporary directory and removed afterwards.
# Usage: tools/bench-threads.sh [build] [threads] [dim] [ffn] [layers] [calibration windows]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
T=${2:-2}
DIM=${3:-2048}
FFN=${4:-5504}
LAYERS=${5:-2}
NS=${6:-48}
DATA=${TQP_DATA_DIR:-../shared/data}
TOK=$DATA/models/stories260K/tok512.bin
export OPENBLAS_NUM_THREADS=1
W=$(mktemp -d "${TMPDIR:-/tmp}/tqp-bench-threads-XXXXXX")
trap 'rm -rf "$W"' EXIT
"$BUILD/tests/mkmodel" "$W/m.bin" "$DIM" "$FFN" "$LAYERS" 16 16 512 512 7
head -c 100000 "$DATA/text/tinystories_eval.txt" > "$W/eval.txt"
secs() { awk '/"seconds":/ { gsub(/,/, "", $2); print $2; exit }' "$1"; }
nll() { awk '/"nll_sum":/ { gsub(/,/, "", $2); print $2; exit }' "$1"; }
for t in 1 "$T"; do
  "$BUILD/tqp" hessian --model "$W/m.bin" --tokenizer "$TOK" --text "$DATA/text/tinystories_calib.txt" \
    --nsamples "$NS" --ctx 512 --out "$W/h$t.h5" --threads "$t" --quiet --json "$W/h$t.json" > /dev/null
  "$BUILD/tqp" eval --model "$W/m.bin" --tokenizer "$TOK" --text "$W/eval.txt" --ctx 512 \
    --threads "$t" --quiet --json "$W/e$t.json" > /dev/null
done
same=yes
for f in "$W"/h1.h5.layers/*.h5; do cmp -s "$f" "$W/h$T.h5.layers/$(basename "$f")" || same=no; done
echo "tools/bench-threads.sh: synthetic model dim $DIM, FFN $FFN, $LAYERS layers, 16 heads, vocab 512;"
echo "Hessians of $NS windows of 512 tokens; evaluation of $(wc -c < "$W/eval.txt") bytes of text in windows of 512;"
echo "one rank; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"
echo
echo "| phase | 1 thread s | $T threads s | speed-up | outputs identical |"
echo "|---|---|---|---|---|"
h1=$(secs "$W/h1.json") hT=$(secs "$W/h$T.json") e1=$(secs "$W/e1.json") eT=$(secs "$W/e$T.json")
echo "| hessian | $h1 | $hT | $(awk -v a="$h1" -v b="$hT" 'BEGIN { printf "%.2fx", a / b }') | $same (layer files) |"
[ "$(nll "$W/e1.json")" = "$(nll "$W/e$T.json")" ] && esame=yes || esame=no
echo "| eval | $e1 | $eT | $(awk -v a="$e1" -v b="$eT" 'BEGIN { printf "%.2fx", a / b }') | $esame (NLL sum $(nll "$W/e1.json")) |"
