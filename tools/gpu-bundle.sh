#!/usr/bin/env bash
# Build TQP with CUDA and collect what a GPU node that has only the CUDA toolkit needs to run
# the GPU test and `tqp bench matvec`: the two programs and the libraries they load that are
# neither glibc's nor CUDA's (OpenBLAS, Open MPI, HDF5, ...; the benchmark starts no MPI).
# Output: gpu-bundle/ and gpu-bundle.tar.xz (about 18 MB; both ignored by git), to be copied to
# the GPU node with the source tree and run there by tools/gpu-check.sh.
# Usage: tools/gpu-bundle.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-cuda}
cmake -S . -B "$B" -DTQP_CUDA=ON -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$B" -j"$(nproc)" --target tqp test_gpu
rm -rf gpu-bundle
mkdir -p gpu-bundle/lib
cp "$B/tqp" "$B/tests/test_gpu" gpu-bundle/
for f in gpu-bundle/tqp gpu-bundle/test_gpu; do ldd "$f"; done | awk '/=> \// { print $3 }' |
  sort -u | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libcuda.so*|libcudart.so*|libcublas*) ;;
      *) cp -L "$lib" gpu-bundle/lib/ ;;
    esac
  done
tar cJf gpu-bundle.tar.xz gpu-bundle
du -sh gpu-bundle gpu-bundle.tar.xz
