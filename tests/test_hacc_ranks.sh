# The exact Hessian accumulator gives the same bits for any rank count, batch size and thread
# count: the digest that test_hacc prints must be the same for every run.
source "$(dirname "$0")/lib.sh" "$@"
ref=""
for cfg in "1 3 1" "2 1 1" "2 4 1" "3 2 1" "4 1 1" "4 5 1" "1 3 2" "1 11 3" "2 4 3"; do
  set -- $cfg
  out=$(run_mpi $1 "$TESTBIN/test_hacc" $2 $3 2>&1)
  check "test_hacc on $1 ranks, batch $2, $3 threads passes" grep -q "0 failed" <<< "$out"
  d=$(sed -n 's/^digest //p' <<< "$out")
  [ -z "$ref" ] && ref=$d
  check "digest on $1 ranks, batch $2, $3 threads equals the first" test -n "$d" -a "$d" = "$ref"
done
# Two-level reductions (inside each node, then across nodes; nodes simulated with
# TQP_NODE_RANKS): the same digest as the flat reductions above.
for cfg in "4 2 3 1" "6 3 2 1" "6 2 1 2" "4 4 2 1"; do
  set -- $cfg
  out=$(TQP_NODE_RANKS=$2 run_mpi $1 "$TESTBIN/test_hacc" $3 $4 2>&1)
  levels=$([ "$2" -lt "$1" ] && echo 2 || echo 1)
  check "$1 ranks as nodes of $2, batch $3, $4 threads passes" grep -q "0 failed" <<< "$out"
  check "$1 ranks as nodes of $2: reductions in $levels level(s)" grep -qx "levels $levels" <<< "$out"
  d=$(sed -n 's/^digest //p' <<< "$out")
  check "$1 ranks as nodes of $2: digest equals the flat one" test -n "$d" -a "$d" = "$ref"
done
# A width of 1300 crosses column blocks (1024) and three panels: the blocks split over threads.
ref=""
for cfg in "1 3 1" "1 11 3" "2 4 2" "3 2 1" "4 2 1 2"; do
  set -- $cfg
  out=$(TQP_NODE_RANKS=${4:-} run_mpi $1 "$TESTBIN/test_hacc" $2 $3 1300 2>&1)
  check "width 1300 on $1 ranks, batch $2, $3 threads passes" grep -q "0 failed" <<< "$out"
  d=$(sed -n 's/^digest //p' <<< "$out")
  [ -z "$ref" ] && ref=$d
  check "width 1300: digest on $1 ranks, batch $2, $3 threads equals the first" test -n "$d" -a "$d" = "$ref"
done
done_tests
