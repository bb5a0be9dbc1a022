#!/usr/bin/env bash
# The default job on the bundled model, across 2 MPI ranks: perplexity of stories260K on the
# TinyStories evaluation text, then QTIP at 2 bits (Hessians from the calibration text, RHT,
# BlockLDLQ, bitshift trellis with the 1MAD code) and the perplexity of the quantized model.  Data come from $TQP_DATA_DIR
# (default ../shared/data); outputs go to $TQP_OUT_DIR (default out/).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${TQP_DATA_DIR:-../shared/data}
OUT=${TQP_OUT_DIR:-out}
RANKS=${TQP_RANKS:-2}
for f in models/stories260K/stories260K.bin models/stories260K/tok512.bin \
  text/tinystories_eval.txt text/tinystories_calib.txt; do
  [ -f "$DATA/$f" ] || { echo "default-run.sh: $DATA/$f not found (set TQP_DATA_DIR)" >&2; exit 2; }
done
mkdir -p "$OUT"
MPIFLAGS=()
[ "$(id -u)" = 0 ] && MPIFLAGS+=(--allow-run-as-root)
[ "$RANKS" -gt "$(nproc)" ] && MPIFLAGS+=(--oversubscribe)
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
MODEL=$DATA/models/stories260K/stories260K.bin
set -x
mpiexec "${MPIFLAGS[@]}" -n "$RANKS" build/tqp eval --model "$MODEL" \
  --text "$DATA/text/tinystories_eval.txt" --ctx 256 --json "$OUT/eval.json"
mpiexec "${MPIFLAGS[@]}" -n "$RANKS" build/tqp quantize --model "$MODEL" \
  --text "$DATA/text/tinystories_calib.txt" --bits 2 --codebook trellis --code 1mad \
  --out "$OUT/stories260K-qtip2.h5" --force \
  --json "$OUT/quantize.json"
mpiexec "${MPIFLAGS[@]}" -n "$RANKS" build/tqp eval --model "$MODEL" \
  --quantized "$OUT/stories260K-qtip2.h5" --text "$DATA/text/tinystories_eval.txt" --ctx 256 \
  --json "$OUT/eval-qtip2.json"
