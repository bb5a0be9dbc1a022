# test_chol on 1 to 4 ranks (grids 1x1, 1x2, 1x3, 2x2): every run passes, and the digest of the
# n = 300, nb = 64 factor is the same for every rank count, i.e. pdpotrf gives the same bits
# on every grid shape with the same block size.
source "$(dirname "$0")/lib.sh" "$@"
ref=""
for n in 1 2 3 4; do
  out=$(run_mpi $n "$TESTBIN/test_chol" 2>&1)
  check "test_chol on $n ranks passes" grep -q "^[0-9]* passed, 0 failed" <<< "$out"
  d=$(sed -n 's/^digest //p' <<< "$out")
  [ -z "$ref" ] && ref=$d
  check "digest on $n ranks ($d) equals the one on 1 rank ($ref)" test -n "$d" -a "$d" = "$ref"
done
done_tests
