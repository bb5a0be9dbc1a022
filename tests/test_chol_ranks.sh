# The Cholesky factor is the same bits for every rank count (grids 1x1, 1x2, 1x3, 2x2), every
# OpenBLAS core type this CPU can run (forced with OPENBLAS_CORETYPE) and both kernels of the
# reproducible BLAS (AVX2 and plain C): test_chol passes in each setting and prints the same
# digest of its n = 300, nb = 32 factor.  A core type the CPU cannot execute (it dies on an
# illegal instruction) or that this OpenBLAS does not have (it reports another) is named and
# skipped.
source "$(dirname "$0")/lib.sh" "$@"
ref=""
run_case() { # run_case LABEL RANKS [VAR=VALUE...]
  local label=$1 n=$2; shift 2
  local out d
  out=$(env "$@" timeout 300 mpiexec -n "$n" "$TESTBIN/test_chol" 2>&1)
  check "test_chol passes ($label, $n ranks)" grep -q "^[0-9]* passed, 0 failed" <<< "$out"
  d=$(sed -n 's/^digest \([0-9a-f]*\).*/\1/p' <<< "$out")
  [ -z "$ref" ] && ref=$d
  check "digest ($label, $n ranks) $d = $ref" test -n "$d" -a "$d" = "$ref"
}
core_types Haswell SkylakeX Cooperlake SapphireRapids Zen SandyBridge Nehalem Prescott
check "at least one core type runs" test -n "$CORE_TYPES"
for t in $CORE_TYPES; do
  for n in 1 2 3 4; do run_case "OPENBLAS_CORETYPE=$t" $n OPENBLAS_CORETYPE=$t; done
done
for n in 1 3; do run_case "TQP_RBLAS_KERNEL=ref" $n TQP_RBLAS_KERNEL=ref; done
done_tests
