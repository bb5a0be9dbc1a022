# tqp bench trellis runs end to end on a small sample and writes the JSON fields the
# benchmark promises (MSE per code and K; encoder, reference and bound rates; decode rate).
source "$(dirname "$0")/lib.sh" "$@"

run_mpi 2 bench trellis --samples 512 --speed-seqs 1 --json "$WORK/b.json" > "$WORK/out" 2> /dev/null
check "bench trellis runs" [ $? = 0 ]
check "prints the MSE table" grep -q "| 1mad | 2 | 1 |" "$WORK/out"
check "prints the encoder table" grep -q "weights/s, 2 ranks" "$WORK/out"
check "json: 9 MSE rows" [ "$(grep -cE '"mse":[[:space:]]+[0-9]' "$WORK/b.json")" = 9 ]
for key in weights_per_second weights_per_second_reference simd_bound_weights_per_second decode_weights_per_second; do
  check "json has $key for 3 codes" [ "$(grep -c "\"$key\":" "$WORK/b.json")" = 3 ]
done
check "MSE of 1mad at K=2 is below scalar Lloyd-Max" awk '/"code":/ { c = $0 } /"K":/ { k = $2 } /"mse":/ { if (c ~ /1mad/ && k ~ /^2/) { gsub(/,/, "", $2); exit !($2 < 0.1175) } }' "$WORK/b.json"
run_mpi 1 bench trellis --samples 10 > /dev/null 2> "$WORK/err"
check "too few samples exits 2" [ $? = 2 ]
done_tests
