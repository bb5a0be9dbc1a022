#!/usr/bin/env bash
# The default job on the bundled model: perplexity of stories260K on the TinyStories
# evaluation text across 2 MPI ranks.  Data come from $TQP_DATA_DIR (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${TQP_DATA_DIR:-../shared/data}
OUT=${TQP_OUT_DIR:-out}
RANKS=${TQP_RANKS:-2}
for f in models/stories260K/stories260K.bin models/stories260K/tok512.bin text/tinystories_eval.txt; do
  [ -f "$DATA/$f" ] || { echo "default-run.sh: $DATA/$f not found (set TQP_DATA_DIR)" >&2; exit 2; }
done
mkdir -p "$OUT"
MPIFLAGS=()
[ "$(id -u)" = 0 ] && MPIFLAGS+=(--allow-run-as-root)
[ "$RANKS" -gt "$(nproc)" ] && MPIFLAGS+=(--oversubscribe)
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
set -x
mpiexec "${MPIFLAGS[@]}" -n "$RANKS" build/tqp eval \
  --model "$DATA/models/stories260K/stories260K.bin" \
  --text "$DATA/text/tinystories_eval.txt" --ctx 256 --json "$OUT/eval.json"
