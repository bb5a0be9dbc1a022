# Helpers for the shell tests: pass/fail counting, JSON field extraction, MPI launch.
# Usage: source tests/lib.sh "$TQP" (the path of the tqp binary).
set -u
TQP=${1:?usage: $0 path/to/tqp [test-binary-dir]}
case "$TQP" in /*) ;; *) TQP=$PWD/$TQP ;; esac
TESTBIN=${2:-$(dirname "$TQP")/tests}
DATA=${TQP_DATA_DIR:-${TQP_DEFAULT_DATA_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}}
MODEL=$DATA/models/stories260K/stories260K.bin
EVAL_TEXT=$DATA/text/tinystories_eval.txt
CALIB_TEXT=$DATA/text/tinystories_calib.txt
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export OMPI_MCA_rmaps_base_oversubscribe=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tqp-sh-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0

ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
check() { # check "description" command...
  local what=$1; shift
  if "$@"; then ok; else fail "$what"; fi
}
done_tests() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; }

# json FILE KEY: the value of a top-level number or string field.
json() { awk -v k="\"$2\"" '{ sub(/^[ \t]+/, "") } index($0, k ":") == 1 {
  v = substr($0, length(k) + 2); gsub(/^[ \t]+|[ \t]*,?$|"/, "", v); print v; exit }' "$1"; }

# near A B RELTOL: |A - B| <= RELTOL * |B|
near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d;
  m = b < 0 ? -b : b; exit !(d <= t * m) }'; }

# run_mpi N args...: tqp on N ranks, with a time limit so that a hang fails the test.
run_mpi() { # run_mpi N [program] args...: tqp (or a program given by path) on N ranks
  local n=$1; shift
  if [ -x "${1:-}" ] && [ "${1#/}" != "$1" ]; then timeout 300 mpiexec -n "$n" "$@"
  else timeout 300 mpiexec -n "$n" "$TQP" "$@"; fi
}

# core_types T...: sets CORE_TYPES to those of the named OpenBLAS core types (OPENBLAS_CORETYPE
# values) that this CPU can execute and this OpenBLAS has, and names each one skipped and why.
# test_chol --probe runs a few BLAS calls under the forced type and prints the core in use.
core_types() {
  CORE_TYPES=""
  local t core
  for t in "$@"; do
    core=$(OPENBLAS_CORETYPE=$t "$TESTBIN/test_chol" --probe 2> /dev/null | sed -n 's/^core \([A-Za-z0-9_]*\).*/\1/p')
    if [ -z "$core" ]; then echo "skip $t: this CPU cannot run OpenBLAS's $t kernels"; continue; fi
    if [ "${core,,}" != "${t,,}" ]; then echo "skip $t: this OpenBLAS has no $t core (it runs $core)"; continue; fi
    CORE_TYPES="$CORE_TYPES $t"
  done
  echo "core types run:$CORE_TYPES"
}

# expect RC NEEDLE NRANKS args...: tqp on NRANKS ranks exits with status RC and prints one error
# line ("tqp <command>: error: ...") containing NEEDLE, with that prefix once, printable; on one
# rank nothing else goes to stderr.  The output is left in $WORK/stdout and $WORK/stderr.
expect() {
  local rc=$1 needle=$2 n=$3; shift 3
  local got
  if [ "$n" = 1 ]; then
    timeout 120 "$TQP" "$@" > "$WORK/stdout" 2> "$WORK/stderr"; got=$?
  else
    run_mpi "$n" "$@" > "$WORK/stdout" 2> "$WORK/stderr"; got=$?
  fi
  local lines; lines=$(grep -c '^tqp' "$WORK/stderr")
  if [ "$got" = "$rc" ] && [ "$lines" = 1 ] && grep -q -- "$needle" "$WORK/stderr" &&
     ! grep -q 'error: tqp ' "$WORK/stderr" &&
     [ "$(tr -d '[:print:]\n' < "$WORK/stderr" | wc -c)" = 0 ]; then
    ok
  else
    fail "tqp $* on $n rank(s): exit $got (want $rc), $lines error lines, want '$needle':"
    sed 's/^/    /' "$WORK/stderr" | cat -v >&2
  fi
  if [ "$n" = 1 ] && [ "$(wc -l < "$WORK/stderr")" != 1 ]; then fail "more than one stderr line for: $*"; fi
}

# letters_tokenizer DIR: a small metaspace BPE tokenizer.json (ids 0-2 <unk> <s> </s>, 3 U+2581,
# 4-29 a-z; <s> prepended, </s> the EOS) and its tokenizer_config.json, written into DIR.
letters_tokenizer() {
  perl -e 'my @v = ("\"<unk>\": 0", "\"<s>\": 1", "\"</s>\": 2", "\"\\u2581\": 3");
  my $i = 4; push @v, "\"$_\": " . $i++ for "a" .. "z";
  print "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, {\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true}],
 \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},
 \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1]}}},
 \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"vocab\": {", join(", ", @v), "}, \"merges\": []}}\n"' > "$1/tokenizer.json"
  echo '{"bos_token": "<s>", "eos_token": "</s>"}' > "$1/tokenizer_config.json"
}
