#!/usr/bin/env bash
# The default job on the bundled model: the whole pipeline in one `tqp quantize` across 2 MPI
# ranks.  Hessians from the TinyStories calibration text, QTIP at 2 bits (RHT, BlockLDLQ,
# bitshift trellis with the 1MAD code) layer by layer, the output file, then the perplexity of
# the full-precision and the quantized model on the evaluation text, and 60 tokens of text from
# the quantized model.  Rerunning resumes (or,
# when the output is complete, only validates again).  Data come from $TQP_DATA_DIR (default
# ../shared/data); outputs go to $TQP_OUT_DIR (default out/).
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
mpiexec "${MPIFLAGS[@]}" -n "$RANKS" build/tqp quantize --model "$MODEL" \
  --text "$DATA/text/tinystories_calib.txt" --bits 2 --codebook trellis --code 1mad \
  --eval-text "$DATA/text/tinystories_eval.txt" --out "$OUT/stories260K-qtip2.h5" \
  --json "$OUT/quantize.json"
# The quantized model writing: greedy decoding straight from its codes (docs/inference.md).
build/tqp generate --model "$MODEL" --quantized "$OUT/stories260K-qtip2.h5" \
  --prompt "Once upon a time" --max-tokens 60 --temperature 0 --threads 1
