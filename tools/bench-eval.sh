#!/usr/bin/env bash
# Baseline perplexity and throughput of the bundled model, as a Markdown table on stdout.
# Usage: tools/bench-eval.sh [build/tqp]   (data from $TQP_DATA_DIR, default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
TQP=${1:-build/tqp}
DATA=${TQP_DATA_DIR:-../shared/data}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
source tools/lib.sh # field FILE KEY
echo "| text | ctx | ranks | windows | tokens scored | ppl | seconds | tokens/s |"
echo "|---|---|---|---|---|---|---|---|"
for text in tinystories_eval.txt wikitext2_test.raw; do
  for ctx in 256 512; do
    for ranks in 1 2; do
      mpiexec -n $ranks "$TQP" eval --model "$DATA/models/stories260K/stories260K.bin" \
        --text "$DATA/text/$text" --ctx $ctx --quiet --json "$tmp/r.json" > /dev/null
      printf '| %s | %s | %s | %s | %s | %.6f | %.2f | %.0f |\n' "$text" $ctx $ranks \
        "$(field "$tmp/r.json" windows)" "$(field "$tmp/r.json" tokens_scored)" \
        "$(field "$tmp/r.json" ppl)" "$(field "$tmp/r.json" seconds)" \
        "$(field "$tmp/r.json" tokens_per_second)"
    done
  done
done
