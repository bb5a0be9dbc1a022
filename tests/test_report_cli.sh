# tqp report on synthetic summaries with known numbers: the CSV rows, the markdown table, the
# SVG (well-formed, one polyline per method, every point where the axes put it), and the
# errors: a missing or unparsable summary, a bad job-file line, an unwritable output directory,
# each leaving no output behind.
source "$(dirname "$0")/lib.sh" "$@"

D=$WORK/sums
mkdir -p "$D" "$WORK/out"
cat > "$WORK/jobs.txt" <<'EOF'
# a small grid
RTN   2 --rotation none --rounding nearest
RTN   3 --rotation none   --rounding nearest   # extra spaces are dropped

QuIP  2 --rotation rht --rounding ldlq
QuIP  3 --rotation rht --rounding ldlq
QTIP  2 --rotation rht --rounding ldlq --codebook trellis
QTIP  3 --rotation rht --rounding ldlq --codebook trellis
EOF
# summary FILE BITS PPL_FIELDS PROXY CODE TOTAL SECONDS: a tqp quantize summary
summary() {
  printf '{\n  "command": "quantize",\n  "tqp_version": "0.1.0",\n  "bits": %s,\n%b  "proxy_loss_mean": %s,\n  "bits_per_weight_code": %s,\n  "bits_per_weight_total": %s,\n  "seconds": %s,\n  "matrices": []\n}\n' \
    "$2" "$3" "$4" "$5" "$6" "$7" > "$D/$1"
}
FP='  "ppl_full_precision": 5.593121,\n'
summary RTN-2.json 2 "  \"ppl_quantized\": 216.38767,\n$FP" 0.161244 2 2.0297 0.05
summary RTN-3.json 3 "  \"ppl_quantized\": 19.5683,\n$FP" 0.06267 3 3.0297 0.051
summary QuIP-2.json 2 "" 0.089567 2 2.0552 0.1 # perplexity from the eval summary
printf '{"command": "eval", "quantized": "QuIP-2.h5", "ppl": 125.700725}\n' > "$D/QuIP-2.eval.json"
summary QuIP-3.json 3 "  \"ppl_quantized\": 21.5811,\n" 0.02779 3 3.0552 0.14
summary QTIP-2.json 2 "" 0.04862 2 2.0552 3.41 # no perplexity at all
summary QTIP-3.json 3 "  \"ppl_quantized\": 9.4739,\n" 0.01303 3 3.0552 3.25
# The inputs again, for the plot checks: perplexity and total bits per weight per cell.
declare -A PPL=([RTN-2]=216.38767 [RTN-3]=19.5683 [QuIP-2]=125.700725 [QuIP-3]=21.5811 [QTIP-3]=9.4739)
declare -A BPW=([RTN-2]=2.0297 [RTN-3]=3.0297 [QuIP-2]=2.0552 [QuIP-3]=3.0552 [QTIP-3]=3.0552)

R=$WORK/out/r
"$TQP" report --jobs "$WORK/jobs.txt" --dir "$D" --out "$R" --title "Test grid" \
  > "$WORK/stdout" 2> "$WORK/stderr"
check "report runs" [ $? = 0 ]
check "nothing on stderr" [ ! -s "$WORK/stderr" ]
check "one line per file written" [ "$(grep -c '^wrote ' "$WORK/stdout")" = 3 ]
for ext in csv md svg; do check "prints $R.$ext" grep -q "^wrote $R.$ext" "$WORK/stdout"; done

cat > "$WORK/want.csv" <<'EOF'
method,bits,options,ppl,proxy_loss_mean,bits_per_weight_code,bits_per_weight_total,quantize_seconds,seeds,ppl_min,ppl_max,proxy_loss_min,proxy_loss_max
RTN,2,--rotation none --rounding nearest,216.387670,0.161244,2.0000,2.0297,0.05,1,216.387670,216.387670,0.161244,0.161244
RTN,3,--rotation none --rounding nearest,19.568300,0.06267,3.0000,3.0297,0.05,1,19.568300,19.568300,0.06267,0.06267
QuIP,2,--rotation rht --rounding ldlq,125.700725,0.089567,2.0000,2.0552,0.10,1,125.700725,125.700725,0.089567,0.089567
QuIP,3,--rotation rht --rounding ldlq,21.581100,0.02779,3.0000,3.0552,0.14,1,21.581100,21.581100,0.02779,0.02779
QTIP,2,--rotation rht --rounding ldlq --codebook trellis,,0.04862,2.0000,2.0552,3.41,1,,,0.04862,0.04862
QTIP,3,--rotation rht --rounding ldlq --codebook trellis,9.473900,0.01303,3.0000,3.0552,3.25,1,9.473900,9.473900,0.01303,0.01303
EOF
check "CSV rows are the inputs" diff "$WORK/want.csv" "$R.csv"

md=$R.md
check "markdown title" [ "$(head -n 1 "$md")" = "# Test grid" ]
check "markdown full-precision line" grep -qx "Full precision: perplexity 5.593121." "$md"
check "markdown table header" grep -qx "| method | bits | perplexity | mean relative proxy loss | code bits/weight | total bits/weight | quantize wall time (s) |" "$md"
check "markdown: 6 rows" [ "$(grep -c '^| [^m-]' "$md")" = 6 ]
for row in "| RTN | 2 | 216.3877 | 0.16124 | 2.0000 | 2.0297 | 0.05 |" \
           "| RTN | 3 | 19.5683 | 0.06267 | 3.0000 | 3.0297 | 0.05 |" \
           "| QuIP | 2 | 125.7007 | 0.08957 | 2.0000 | 2.0552 | 0.10 |" \
           "| QuIP | 3 | 21.5811 | 0.02779 | 3.0000 | 3.0552 | 0.14 |" \
           "| QTIP | 2 | - | 0.04862 | 2.0000 | 2.0552 | 3.41 |" \
           "| QTIP | 3 | 9.4739 | 0.01303 | 3.0000 | 3.0552 | 3.25 |"; do
  check "markdown row $row" grep -qxF "$row" "$md"
done
check "markdown links the plot" grep -qF "](r.svg)" "$md"

svg=$R.svg
if command -v xmllint > /dev/null; then
  check "SVG is well-formed XML" xmllint --noout "$svg"
else
  check "SVG: one <svg> element, closed at the end" \
    [ "$(grep -c '<svg ' "$svg")" = 1 ] && [ "$(tail -n 1 "$svg")" = "</svg>" ]
  check "SVG: opening and closing tags balance" [ "$(grep -o '<[a-z][^>]*>' "$svg" | grep -vc '/>$')" = "$(grep -o '</[a-z]*>' "$svg" | wc -l)" ]
fi
check "SVG: one polyline per method" [ "$(grep -c '<polyline ' "$svg")" = 3 ]
check "SVG: one marker per cell with a perplexity" [ "$(grep -c '<circle class="point"' "$svg")" = 5 ]
check "SVG: decade labels 1 10 100 1000" [ "$(sed -n 's/.*class="ylabel"[^>]*>\([^<]*\)<.*/\1/p' "$svg" | tr '\n' ' ')" = "1 10 100 1000 " ]

# The y axis: log10(ppl) is linear between the lines at 1 and 1000; the x axis is linear
# between the first and last tick.  Every point, and the full-precision line, must sit where
# that mapping puts its input values (to the 0.01 px the file is written with).
read -r y1 y1000 < <(sed -n 's/.*class="ydecade" x1="[^"]*" y1="\([^"]*\)".*/\1/p' "$svg" | sed -n '1p;$p' | tr '\n' ' ')
read -r xa va xb vb < <(sed -n 's/.*class="xlabel" x="\([^"]*\)"[^>]*>\([^<]*\)<.*/\1 \2/p' "$svg" | sed -n '1p;$p' | tr '\n' ' ')
sed -n 's/.*<circle class="point" cx="\([^"]*\)" cy="\([^"]*\)".*<title>\(.*\), \([0-9]*\) bits: .*/\3 \4 \1 \2/p' \
  "$svg" > "$WORK/points"
check "SVG: 5 points parsed" [ "$(wc -l < "$WORK/points")" = 5 ]
while read -r method bits cx cy; do
  key=$method-$bits
  check "SVG: $key y at log10(${PPL[$key]:-?})" awk -v y="$cy" -v p="${PPL[$key]:-0}" -v a="$y1" -v b="$y1000" \
    'BEGIN { if (p <= 0) exit 1; e = a + (b - a) * log(p) / log(10) / 3; d = y - e; exit !(d < 0.011 && d > -0.011) }'
  check "SVG: $key x at ${BPW[$key]:-?}" awk -v x="$cx" -v v="${BPW[$key]:-0}" -v xa="$xa" -v va="$va" -v xb="$xb" -v vb="$vb" \
    'BEGIN { e = xa + (xb - xa) * (v - va) / (vb - va); d = x - e; exit !(d < 0.011 && d > -0.011) }'
done < "$WORK/points"
sort -k4,4g "$WORK/points" | awk '{ print $1 "-" $2 }' > "$WORK/by_y"
for k in RTN-2 QuIP-2 QuIP-3 RTN-3 QTIP-3; do echo "$k"; done > "$WORK/by_ppl_desc"
check "SVG: points ordered by y are ordered by decreasing perplexity" diff "$WORK/by_ppl_desc" "$WORK/by_y"
fpy=$(sed -n 's/.*class="full-precision" x1="[^"]*" y1="\([^"]*\)".*/\1/p' "$svg")
check "SVG: dashed full-precision line at 5.593121" awk -v y="$fpy" -v a="$y1" -v b="$y1000" \
  'BEGIN { e = a + (b - a) * log(5.593121) / log(10) / 3; d = y - e; exit !(y != "" && d < 0.011 && d > -0.011) }'
check "SVG: full-precision line is dashed" grep -q 'class="full-precision"[^>]*stroke-dasharray' "$svg"
check "SVG: legend names every method" [ "$(grep -c '<g class="legend">.*>\(RTN\|QuIP\|QTIP\)</text>' "$svg")" = 3 ]

# Two ranks: rank 0 does the work, the same files come out.
cp "$R.csv" "$WORK/r1.csv"
run_mpi 2 report --jobs "$WORK/jobs.txt" --dir "$D" --out "$WORK/out/r2" --title "Test grid" > "$WORK/stdout" 2> /dev/null
check "2 ranks: runs" [ $? = 0 ]
check "2 ranks: three lines, printed once" [ "$(grep -c '^wrote ' "$WORK/stdout")" = 3 ]
check "2 ranks: same CSV" cmp -s "$WORK/r1.csv" "$WORK/out/r2.csv"

# --fp-eval gives the full-precision perplexity.
printf '{"command": "eval", "ppl": 5.5}\n' > "$WORK/fp.json"
"$TQP" report --jobs "$WORK/jobs.txt" --dir "$D" --out "$WORK/out/fp" --fp-eval "$WORK/fp.json" > /dev/null
check "--fp-eval sets the full-precision line" grep -qx "Full precision: perplexity 5.500000." "$WORK/out/fp.md"
check "default title names the job file" [ "$(head -n 1 "$WORK/out/fp.md")" = "# Ablation: jobs.txt" ]

# expect RC NEEDLE PREFIX args...: exit status RC, one error line containing NEEDLE, and no
# file PREFIX.* (nor a temporary) left behind.
expect() {
  local rc=$1 needle=$2 prefix=$3; shift 3
  "$TQP" report "$@" --out "$prefix" > "$WORK/stdout" 2> "$WORK/stderr"
  local got=$?
  if [ "$got" = "$rc" ] && [ "$(wc -l < "$WORK/stderr")" = 1 ] && grep -qF -- "$needle" "$WORK/stderr"; then
    ok
  else
    fail "tqp report $*: exit $got (want $rc), want one line with '$needle':"
    sed 's/^/    /' "$WORK/stderr" >&2
  fi
  local left; left=$(ls -d "$prefix".* 2> /dev/null)
  check "no output left by: $*" [ -z "$left" ]
}

cp "$WORK/jobs.txt" "$WORK/jobs_missing.txt"
echo "GPTQ 3 --rotation none --rounding ldlq" >> "$WORK/jobs_missing.txt"
expect 2 "$D/GPTQ-3.json: no such file" "$WORK/out/miss" --jobs "$WORK/jobs_missing.txt" --dir "$D"
check "missing summary: error names the job-file line" grep -q "line 9 of $WORK/jobs_missing.txt" "$WORK/stderr"

printf 'RTN 2 --rotation none\n# fine\nRTN two --rotation none\n' > "$WORK/bad.txt"
expect 2 "$WORK/bad.txt:3: bits 'two' is not a whole number" "$WORK/out/bad" --jobs "$WORK/bad.txt" --dir "$D"
printf 'RTN\n' > "$WORK/short.txt"
expect 2 "$WORK/short.txt:1: expected '<method> <bits>" "$WORK/out/bad" --jobs "$WORK/short.txt" --dir "$D"
expect 2 "$WORK/nojobs.txt: no such file" "$WORK/out/bad" --jobs "$WORK/nojobs.txt" --dir "$D"

mkdir -p "$WORK/broken"
cp "$D"/*.json "$WORK/broken/"
printf '{"command": "quantize", "bits": 3,\n' > "$WORK/broken/QuIP-3.json"
expect 2 "$WORK/broken/QuIP-3.json: not valid JSON" "$WORK/out/broken" --jobs "$WORK/jobs.txt" --dir "$WORK/broken"
summary ../broken/QuIP-3.json 2 "" 0.1 2 2 1 # quantized at 2 bits, listed at 3
expect 2 "$WORK/broken/QuIP-3.json: quantized at 2 bits, but the job file says 3" "$WORK/out/broken" \
  --jobs "$WORK/jobs.txt" --dir "$WORK/broken"

expect 1 "$WORK/out/nodir/r.csv: cannot write: directory $WORK/out/nodir does not exist" \
  "$WORK/out/nodir/r" --jobs "$WORK/jobs.txt" --dir "$D"
expect 1 "cannot write" "$WORK/jobs.txt/r" --jobs "$WORK/jobs.txt" --dir "$D"
if [ "$(id -u)" != 0 ]; then # root may write anywhere
  mkdir "$WORK/ro" && chmod 555 "$WORK/ro"
  expect 1 "directory $WORK/ro is not writable" "$WORK/ro/r" --jobs "$WORK/jobs.txt" --dir "$D"
fi

# A failed run leaves the previous outputs as they were.
sum_before=$(cat "$R".* | cksum)
"$TQP" report --jobs "$WORK/jobs_missing.txt" --dir "$D" --out "$R" > /dev/null 2>&1
check "failed run: exit 2" [ $? = 2 ]
check "failed run: earlier outputs untouched" [ "$(cat "$R".* | cksum)" = "$sum_before" ]
check "failed run: no temporaries" [ "$(ls "$WORK/out" | grep -c tmp)" = 0 ]

# The same error on two ranks: reported once.
run_mpi 2 report --jobs "$WORK/jobs_missing.txt" --dir "$D" --out "$WORK/out/m2" > /dev/null 2> "$WORK/stderr"
check "2 ranks, missing summary: exit 2" [ $? = 2 ]
check "2 ranks, missing summary: one error line" [ "$(grep -c '^tqp report: error: ' "$WORK/stderr")" = 1 ]

# --allow-missing: the row is kept and marked.
"$TQP" report --jobs "$WORK/jobs_missing.txt" --dir "$D" --out "$WORK/out/am" --allow-missing \
  > "$WORK/stdout" 2> "$WORK/stderr"
check "--allow-missing: runs" [ $? = 0 ]
check "--allow-missing: warns about the cell" grep -q "warning: $D/GPTQ-3.json.*marked missing" "$WORK/stderr"
check "--allow-missing: CSV row with empty numbers" grep -qx "GPTQ,3,--rotation none --rounding ldlq,,,,,,1,,,," "$WORK/out/am.csv"
check "--allow-missing: markdown row marked" grep -qxF "| GPTQ | 3 | missing | - | - | - | - |" "$WORK/out/am.md"
check "--allow-missing: 7 markdown rows" [ "$(grep -c '^| [^m-]' "$WORK/out/am.md")" = 7 ]
check "--allow-missing: stdout counts it" grep -q "(7 cells, 1 missing)" "$WORK/stdout"

"$TQP" report --help > "$WORK/help"
check "--help exits 0" [ $? = 0 ]
check "--help lists the options" grep -q -- "--allow-missing" "$WORK/help"
"$TQP" report --dir "$D" --out "$WORK/out/x" > /dev/null 2> "$WORK/stderr"
check "without --jobs: exit 2" [ $? = 2 ]
check "without --jobs: says so" grep -q -- "--jobs is required" "$WORK/stderr"
done_tests
