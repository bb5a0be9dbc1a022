#!/usr/bin/env bash
# Batch-1 matrix-vector product on trellis codes against OpenBLAS sgemv: the tables behind
# results/matvec_bench.md.  One core (1mad at K = 2, 3, 4 on the default shapes; 3inst and hyb
# at K = 2, 4), the AVX2 kernel (AVX-512 masked off), then two threads against two OpenBLAS
# threads.  JSON files go to DIR.
# Usage: tools/bench-matvec.sh [build/tqp] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
TQP=${1:-build/tqp}
DIR=${2:-results}
mkdir -p "$DIR"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OPENBLAS_NUM_THREADS=1 "$TQP" bench matvec --json "$DIR/matvec_bench.json"
for code in 3inst hyb; do
  echo
  OPENBLAS_NUM_THREADS=1 "$TQP" bench matvec --code "$code" --bits 2,4 \
    --shapes 4096x4096,8192x8192 --json "$DIR/matvec_bench_$code.json"
done
echo
TQP_NO_AVX512=1 OPENBLAS_NUM_THREADS=1 "$TQP" bench matvec --bits 2,4 \
  --shapes 4096x4096,8192x8192 --json "$DIR/matvec_bench_avx2.json"
echo
OPENBLAS_NUM_THREADS=2 "$TQP" bench matvec --threads 2 --bits 2 --shapes 4096x4096,8192x8192 \
  --json "$DIR/matvec_bench_2threads.json"
