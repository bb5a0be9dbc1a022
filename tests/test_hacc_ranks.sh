# The exact Hessian accumulator gives the same bits for any rank count and batch size: the
# digest that test_hacc prints must be the same for every run.
source "$(dirname "$0")/lib.sh" "$@"
ref=""
for cfg in "1 3" "2 1" "2 4" "3 2" "4 1" "4 5"; do
  set -- $cfg
  out=$(run_mpi $1 "$TESTBIN/test_hacc" $2 2>&1)
  check "test_hacc on $1 ranks, batch $2 passes" grep -q "0 failed" <<< "$out"
  d=$(sed -n 's/^digest //p' <<< "$out")
  [ -z "$ref" ] && ref=$d
  check "digest on $1 ranks, batch $2 equals the first" test -n "$d" -a "$d" = "$ref"
done
done_tests
