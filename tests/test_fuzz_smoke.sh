# Every libFuzzer target (tests/fuzz) builds with clang and runs a few seconds on its seed
# corpus without a crash: the targets stay compilable and their harnesses sound.  The long runs
# are tools/fuzz.sh with a longer time (docs/fuzzing.md).  Skipped (77) without clang.
source "$(dirname "$0")/lib.sh" "$@"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v clang > /dev/null; then
  echo "skip: clang not found (tools/install-deps.sh installs it)"
  exit 77
fi
FB=$(cd "$TESTBIN/.." && pwd)/fuzz-build
bash "$ROOT/tools/fuzz.sh" -t "${TQP_FUZZ_SMOKE_SECONDS:-1}" -b "$FB" > "$WORK/table" 2>&1
rc=$?
cat "$WORK/table"
check "every fuzz target ran without a crash" [ $rc = 0 ]
n=$(ls "$ROOT"/tests/fuzz/fuzz_*.c | wc -l)
check "a row per target" [ "$(grep -c '| ok ' "$WORK/table")" = "$n" ]
check "the parsers' targets are all there" [ "$n" -ge 9 ]
done_tests
