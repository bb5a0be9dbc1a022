#!/usr/bin/env bash
# Hessian accumulation vs plain OpenBLAS (dsyrk, sgemm) on one core, the 1 -> T thread speed-up
# beside threaded dsyrk (one rank), and the 1 -> P rank speed-up (P ranks), as Markdown.
# Bundled-model widths with its ctx (256), then synthetic 4096- and 8192-wide inputs with
# 2048-token windows.  Usage: tools/bench-hessian.sh [build/tqp] [ranks] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
TQP=${1:-build/tqp}
RANKS=${2:-2}
THREADS=${3:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
for mode in threads ranks; do
  if [ $mode = threads ]; then launch=(mpiexec --bind-to none -n 1); extra=(--threads "$THREADS")
  else launch=(mpiexec -n "$RANKS"); extra=(--threads 1); fi
  echo "### 1 -> $([ $mode = threads ] && echo "$THREADS threads (one rank)" || echo "$RANKS ranks (one thread each)")"
  echo
  echo "Bundled model widths (64: qkv/o/gate_up inputs, 172: down input), ctx 256:"
  echo
  "${launch[@]}" "$TQP" bench hessian --widths 64,172 --tokens 32768 --window 256 --batch 64 "${extra[@]}"
  echo
  echo "Synthetic widths, 2048-token windows:"
  echo
  "${launch[@]}" "$TQP" bench hessian --widths 4096,8192 --tokens 16384 --window 2048 --batch 4 "${extra[@]}"
  echo
done
