#!/usr/bin/env bash
# Build and run the libFuzzer targets (tests/fuzz; docs/fuzzing.md) and print a table of
# executions per target.  The build is separate (clang, TQP_FUZZ=ON, ASan + UBSan) and the seed
# corpora are remade from valid files by tools/fuzz-corpus.sh; each target's corpus grows in
# BUILD/fuzz-work/<target>/corpus and what it finds lands in BUILD/fuzz-work/<target>/.
# Usage: tools/fuzz.sh [-t SECONDS] [-n RUNS] [-b BUILD_DIR] [-j JOBS] [-k] [TARGET...]
#   Each target runs until SECONDS (default 10) or RUNS executions (default: no limit), whichever
#   comes first; -k keeps the seed corpora already made (for several instances at once).
#   Default build directory: build-fuzz; default targets: all.  Exit 1 if any target crashed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=10 RUNS=-1 BUILD=$ROOT/build-fuzz JOBS=$(nproc) KEEP=0
while getopts "t:n:b:j:k" o; do
  case $o in
    t) SECS=$OPTARG ;; n) RUNS=$OPTARG ;; b) BUILD=$OPTARG ;; j) JOBS=$OPTARG ;; k) KEEP=1 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if ! command -v clang > /dev/null; then
  echo "fuzz.sh: clang not found (tools/install-deps.sh installs it)" >&2
  exit 2
fi
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DTQP_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$BUILD.configure.log" 2>&1 ||
    { cat "$BUILD.configure.log" >&2; exit 1; }
fi
cmake --build "$BUILD" --target fuzz -j"$JOBS" > "$BUILD/fuzz-build.log" 2>&1 ||
  { tail -30 "$BUILD/fuzz-build.log" >&2; exit 1; }
C=$BUILD/fuzz-corpus
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ $KEEP = 0 ] || [ ! -e "$C/base/q.h5" ]; then
  bash "$ROOT/tools/fuzz-corpus.sh" "$BUILD/tqp" "$BUILD/fuzz/mkmodel" "$C" > "$BUILD/fuzz-corpus.log" 2>&1 ||
    { tail -30 "$BUILD/fuzz-corpus.log" >&2; exit 1; }
fi
export TQP_FUZZ_MODEL=$C/base/model.bin TQP_FUZZ_QFILE=$C/base/q.h5:$C/base/qt.h5
export TQP_FUZZ_HFILE=$C/base/h.h5 TQP_FUZZ_SAFETENSORS=$C/base/hf/model.safetensors
# no Open MPI signal handlers: libFuzzer's own report a crash and save its input
export OPENBLAS_NUM_THREADS=1 OMPI_MCA_opal_signal=""
TARGETS=("$@")
if [ ${#TARGETS[@]} = 0 ]; then
  for f in "$BUILD"/fuzz/fuzz_*; do TARGETS+=("$(basename "$f")"); done
fi
cpu=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
echo "fuzz.sh: at most ${SECS} s$([ "$RUNS" -ge 0 ] && echo " or $RUNS runs") per target on $cpu, commit $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)"
printf '| %-18s | %12s | %8s | %9s | %7s | %-8s |\n' target executions seconds "execs/s" corpus result
printf '|%s|%s|%s|%s|%s|%s|\n' -------------------- -------------: ---------: ----------: --------: ----------
bad=0
for t in "${TARGETS[@]}"; do
  W=$BUILD/fuzz-work/$t
  mkdir -p "$W/corpus"
  seeds=$C/${t#fuzz_}
  start=$(date +%s.%N)
  (cd "$W" && TMPDIR=$W "$BUILD/fuzz/$t" -max_total_time="$SECS" -runs="$RUNS" -timeout=30 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$W/" "$W/corpus" "$seeds" > "$W/log" 2>&1)
  rc=$?
  end=$(date +%s.%N)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$W/log" | tail -1)
  files=$(ls "$W/corpus" | wc -l)
  result=ok
  if [ $rc != 0 ] || [ -z "$execs" ]; then result="CRASH"; bad=1; fi
  rm -rf "$W"/tqp-fuzz-*
  awk -v t="$t" -v e="${execs:-?}" -v a="$start" -v b="$end" -v f="$files" -v r="$result" \
    'BEGIN { printf "| %-18s | %12s | %8.0f | %9.0f | %7s | %-8s |\n", t, e, b - a, (e + 0) / (b - a), f, r }'
  if [ "$result" != ok ]; then grep -E "ERROR|SUMMARY|runtime error|==[0-9]+==" "$W/log" | head -8 | sed 's/^/    /'; fi
done
exit $bad
