#!/usr/bin/env bash
# On a GPU node, from the source tree with gpu-bundle/ (tools/gpu-bundle.sh) beside it: the
# GPU test (device decoding == CPU decoding bit for bit, fused product vs the CPU reference)
# and the matvec benchmark with its GPU table (fused kernel vs cuBLAS fp16 GEMV, copy
# bandwidth).  Logs and JSON go to $OUT (default gpu-out/).  Exit status: the test's.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
[ -d gpu-bundle ] || tar xJf gpu-bundle.tar.xz
export LD_LIBRARY_PATH="$PWD/gpu-bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
timeout 300 gpu-bundle/test_gpu > "$OUT/test_gpu.txt" 2>&1
rc=$?
echo "test_gpu exit status $rc" >> "$OUT/test_gpu.txt"
tail -3 "$OUT/test_gpu.txt"
for code in 1mad 3inst hyb; do
  set -- --bits 2,3,4
  [ "$code" = 1mad ] || set -- --bits 2,4 --shapes 4096x4096,8192x8192
  OPENBLAS_NUM_THREADS=1 timeout 400 gpu-bundle/tqp bench matvec --code "$code" "$@" --reps 10 --json "$OUT/matvec_gpu_$code.json" > "$OUT/matvec_gpu_$code.txt" 2>&1
  echo "bench $code exit status $?"
  sed -n '/^GPU /,$p' "$OUT/matvec_gpu_$code.txt"
done
exit $rc
