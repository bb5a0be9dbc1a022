# tqp bench trellis runs end to end on a small sample and writes the JSON fields the
# benchmark promises (MSE per code and K; encoder, reference and bound rates; decode rate);
# tqp bench matvec likewise on small shapes, with its agreement column (the fused kernel
# against sgemv on the decoded matrix) small, and bad options refused; tqp bench hessian with
# threads on one rank and with two ranks.
source "$(dirname "$0")/lib.sh" "$@"

for n in 1 2; do
  timeout 300 mpiexec --bind-to none -n $n "$TQP" bench hessian --widths 64,300 --tokens 1024 \
    --window 256 --reps 1 --threads 2 --json "$WORK/h$n.json" > "$WORK/out" 2> "$WORK/err"
  check "bench hessian on $n rank(s) runs" [ $? = 0 ] || cat "$WORK/err"
  check "bench hessian on $n rank(s) prints 2 rows" [ "$(grep -cE '^\| (64|300) \| 1024 \|' "$WORK/out")" = 2 ]
  check "bench hessian names the CPU" grep -q '"cpu":' "$WORK/h$n.json"
done
for key in gflops_hacc_1core gflops_dsyrk_1core hacc_over_dsyrk gflops_hacc_threads speedup_threads speedup_dsyrk_threads; do
  check "hessian json (1 rank) has $key for 2 rows" [ "$(grep -c "\"$key\":" "$WORK/h1.json")" = 2 ]
done
for key in gflops_hacc_all_ranks speedup_ranks speedup_dsyrk_ranks reduction_gbs_per_rank reduction_levels; do
  check "hessian json (2 ranks) has $key for 2 rows" [ "$(grep -c "\"$key\":" "$WORK/h2.json")" = 2 ]
done

run_mpi 2 bench trellis --samples 512 --speed-seqs 1 --json "$WORK/b.json" > "$WORK/out" 2> /dev/null
check "bench trellis runs" [ $? = 0 ]
check "prints the MSE table" grep -q "| 1mad | 2 | 1 |" "$WORK/out"
check "prints the encoder table" grep -q "weights/s, 2 ranks" "$WORK/out"
check "json: 15 trellis MSE rows and E8P's 3" [ "$(grep -cE '"mse":[[:space:]]+[0-9]' "$WORK/b.json")" = 18 ]
check "prints 1mul's rows" [ "$(grep -c "| 1mul | [234] | 1 |" "$WORK/out")" = 3 ]
check "prints gf8's rows" [ "$(grep -c "| gf8 | [234] | 1 |" "$WORK/out")" = 3 ]
check "prints the E8P rows" [ "$(grep -c "| e8p (QuIP#, rho" "$WORK/out")" = 3 ]
check "E8P's MSE at 2 bits lies between the bound and twice it" awk '/"e8p":/ { f = 1 } f && /"mse":/ { gsub(/,/, "", $2); exit !($2 > 0.0625 && $2 < 0.125) } END { if (!f) exit 1 }' "$WORK/b.json"
for key in weights_per_second weights_per_second_reference simd_bound_weights_per_second decode_weights_per_second; do
  check "json has $key for 5 codes" [ "$(grep -c "\"$key\":" "$WORK/b.json")" = 5 ]
done
check "MSE of 1mad at K=2 is below scalar Lloyd-Max" awk '/"code":/ { c = $0 } /"K":/ { k = $2 } /"mse":/ { if (c ~ /1mad/ && k ~ /^2/) { gsub(/,/, "", $2); exit !($2 < 0.1175) } }' "$WORK/b.json"
run_mpi 1 bench trellis --samples 10 > /dev/null 2> "$WORK/err"
check "too few samples exits 2" [ $? = 2 ]
run_mpi 1 bench matvec --shapes 256x512,512x256 --bits 2,3 --code 1mad --reps 2 \
  --json "$WORK/m.json" > "$WORK/mout" 2> "$WORK/merr"
check "bench matvec runs" [ $? = 0 ]
check "prints 4 rows" [ "$(grep -cE '^\| (256x512|512x256) \| [23] \|' "$WORK/mout")" = 4 ]
for key in seconds_ours seconds_baseline speedup gbps_ours decode_weights_per_second; do
  check "matvec json has $key for 4 rows" [ "$(grep -c "\"$key\":" "$WORK/m.json")" = 4 ]
done
check "matvec json names the device (document and rows)" [ "$(grep -c '"device":' "$WORK/m.json")" = 5 ]
check "fused kernel agrees with sgemv on the decoded matrix" \
  awk '/"max_rel_diff":/ { gsub(/,/, "", $2); if (!($2 < 1e-4)) bad = 1; n++ } END { exit bad || n != 4 }' "$WORK/m.json"
run_mpi 1 bench matvec --shapes 256x256 --bits 2 --code hyb --reps 1 > "$WORK/hout" 2>&1
check "hyb runs" grep -qE '^\| 256x256 \| 2 \|' "$WORK/hout"
run_mpi 1 bench matvec --shapes 40x24 --bits 2 --reps 1 > "$WORK/eout" 2>&1
check "an edge shape runs on the reference kernel" grep -qE '^\| 40x24 \| 2 \| 1mad \| reference \|' "$WORK/eout"
# E8P is in the same table by default, on a SIMD kernel for any shape
simd=reference
grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && simd=avx2
grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo && simd=avx512
# with VBMI and VNNI too, the int16 form of the avx512 kernel (2 and 4 bits)
[ "$simd" = avx512 ] && grep -qw avx512vbmi /proc/cpuinfo && grep -qw avx512_vnni /proc/cpuinfo &&
    simd=avx512-i16
check "E8P is benchmarked beside the trellis ($simd kernel)" grep -qE "^\| 40x24 \| 2 \| e8p \| $simd \|" "$WORK/eout"
expect=reference
grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && expect=avx2
TQP_NO_AVX512=1 run_mpi 1 bench matvec --shapes 256x256 --bits 2 --reps 1 > "$WORK/aout" 2>&1
check "without AVX-512 the $expect kernel runs" grep -qE "^\| 256x256 \| 2 \| 1mad \| $expect \|" "$WORK/aout"
check "and for E8P too" grep -qE "^\| 256x256 \| 2 \| e8p \| $expect \|" "$WORK/aout"
run_mpi 1 bench matvec --shapes 64x64 --bits 3,4 --code e8p --reps 1 --json "$WORK/e.json" > /dev/null 2>&1
check "E8P at 3 and 4 bits agrees with sgemv on its decoded matrix" \
  awk '/"max_rel_diff":/ { gsub(/,/, "", $2); if (!($2 < 1e-4)) bad = 1; n++ } END { exit bad || n != 2 }' "$WORK/e.json"
# 1mul: the int16 kernel where AVX-512 (with VNNI and VBMI2) is, else a gathering kernel
k16=$simd
[ $simd = avx512 ] && grep -qw avx512_vnni /proc/cpuinfo && grep -qw avx512_vbmi2 /proc/cpuinfo && k16=avx512-i16
run_mpi 1 bench matvec --shapes 256x256,512x1024 --bits 2,4 --code 1mul --reps 1 --json "$WORK/u.json" > "$WORK/uout" 2>&1
check "1mul runs on the $k16 kernel" grep -qE "^\| 512x1024 \| 4 \| 1mul \| $k16 \|" "$WORK/uout"
check "1mul agrees with sgemv on its decoded matrix" \
  awk '/"max_rel_diff":/ { gsub(/,/, "", $2); if (!($2 < 1e-4)) bad = 1; n++ } END { exit bad || n != 4 }' "$WORK/u.json"
# gf8: the byte kernel at 2 and 4 bits where AVX-512 with VBMI and GFNI is, else a gathering kernel
k8=$simd
[ $simd = avx512-i16 ] && k8=avx512
[ $k8 = avx512 ] && grep -qw avx512vbmi /proc/cpuinfo && grep -qw avx512_vbmi2 /proc/cpuinfo && grep -qw avx512_vnni /proc/cpuinfo &&
    grep -qw gfni /proc/cpuinfo && k8=avx512-gf8
run_mpi 1 bench matvec --shapes 256x256,384x1024 --bits 2,4 --code gf8 --reps 1 --json "$WORK/g.json" > "$WORK/gout" 2>&1
check "gf8 runs on the $k8 kernel" [ "$(grep -cE "^\| 384x1024 \| [24] \| gf8 \| $k8 \|" "$WORK/gout")" = 2 ]
check "gf8 agrees with sgemv on its decoded matrix" \
  awk '/"max_rel_diff":/ { gsub(/,/, "", $2); if (!($2 < 1e-4)) bad = 1; n++ } END { exit bad || n != 4 }' "$WORK/g.json"
run_mpi 1 bench matvec --bits 1 --code e8p > /dev/null 2> "$WORK/err"
check "E8P at 1 bit exits 2" [ $? = 2 ]
run_mpi 1 bench matvec --shapes 4096 > /dev/null 2> "$WORK/err"
check "a bad shape exits 2" [ $? = 2 ]
check "and names the option" grep -q -- "--shapes '4096'" "$WORK/err"
run_mpi 1 bench matvec --bits 5 > /dev/null 2> "$WORK/err"
check "bits 5 exits 2" [ $? = 2 ]
run_mpi 1 bench matvec --code lut > /dev/null 2> "$WORK/err"
check "an unsupported code exits 2" [ $? = 2 ]
# tqp bench chol: both BLAS on the same matrices, a row per order, factors close, JSON written.
run_mpi 2 bench chol --orders 100,300 --repeat 1 --json "$WORK/c.json" > "$WORK/cout" 2>&1
check "bench chol runs" [ $? = 0 ]
check "bench chol names the CPU and kernel" grep -q "reproducible BLAS kernel" "$WORK/cout"
check "bench chol prints a row per order" [ "$(grep -c '^| [13]00 |' "$WORK/cout")" = 2 ]
check "bench chol factors agree" awk -F'|' '/^\| [13]00 \|/ { if (!($8 + 0 < 1e-12)) bad = 1 } END { exit bad }' "$WORK/cout"
check "bench chol JSON has the rows" [ "$(grep -c '"seconds_reproducible"' "$WORK/c.json")" = 2 ]
run_mpi 1 bench chol --orders 0 > /dev/null 2> "$WORK/cerr"
check "bench chol refuses a bad order with exit 2" [ $? = 2 ]
# tqp bench tokenizer: a small tokenizer.json, its speed in MB/s and the same token count as tqp
# tokenize (the special token of the template included)
cat > "$WORK/tokenizer.json" << 'JSON'
{"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}],
 "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
   {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
 "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}],
   "special_tokens": {"<s>": {"id": "<s>", "ids": [1]}}},
 "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true,
   "vocab": {"<unk>": 0, "<s>": 1, "\u2581": 2, "a": 3, "b": 4, "\u2581a": 5}, "merges": ["\u2581 a"]}}
JSON
for i in $(seq 300); do echo "a b ab ba a"; done > "$WORK/ab.txt"
run_mpi 1 bench tokenizer --tokenizer "$WORK/tokenizer.json" --text "$WORK/ab.txt" --reps 2 \
  --json "$WORK/tk.json" > "$WORK/tout" 2>&1
check "bench tokenizer runs and prints MB/s" grep -q "MB/s" "$WORK/tout"
"$TQP" tokenize --tokenizer "$WORK/tokenizer.json" --text "$WORK/ab.txt" --out "$WORK/ab.u32" > /dev/null
check "bench tokenizer encodes the same tokens as tqp tokenize" \
  [ "$(json "$WORK/tk.json" tokens)" = "$(($(stat -c %s "$WORK/ab.u32") / 4))" ]
done_tests
