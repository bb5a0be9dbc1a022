#!/usr/bin/env bash
# Hessian accumulation vs plain OpenBLAS (dsyrk, sgemm), and 1 -> 2 rank speed-up, as Markdown.
# Bundled-model widths with its ctx (256), then synthetic 4096- and 8192-wide inputs with
# 2048-token windows.  Usage: tools/bench-hessian.sh [build/tqp] [ranks]
set -euo pipefail
cd "$(dirname "$0")/.."
TQP=${1:-build/tqp}
RANKS=${2:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
echo "Bundled model widths (64: qkv/o/gate_up inputs, 172: down input), ctx 256:"
echo
mpiexec -n "$RANKS" "$TQP" bench hessian --widths 64,172 --tokens 32768 --window 256 --batch 64
echo
echo "Synthetic widths, 2048-token windows:"
echo
mpiexec -n "$RANKS" "$TQP" bench hessian --widths 4096,8192 --tokens 16384 --window 2048 --batch 4
