#!/usr/bin/env bash
# Run an ablation grid (a job file from jobs/) on the bundled model and write the results table:
# <prefix>.csv, <prefix>.md and, when gnuplot is installed, <prefix>.png (perplexity against
# total bits per weight).  Hessians are collected once and shared by every cell.
# Usage: tools/ablation.sh [JOBFILE] [PREFIX]
#   default JOBFILE jobs/ablation-stories260K.txt, PREFIX results/ablation_stories260K
# Settings by environment: TQP_DATA_DIR (../shared/data), TQP_RANKS (2), TQP_WORK (a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-jobs/ablation-stories260K.txt}
PREFIX=${2:-results/ablation_stories260K}
DATA=${TQP_DATA_DIR:-../shared/data}
RANKS=${TQP_RANKS:-2}
MODEL=$DATA/models/stories260K/stories260K.bin
WORK=${TQP_WORK:-$(mktemp -d)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
MPI=(mpiexec -n "$RANKS")
[ "$RANKS" -gt "$(nproc)" ] && MPI+=(--oversubscribe)
field() { awk -v k="\"$2\"" '{ sub(/^[ \t]+/, "") } index($0, k ":") == 1 {
  v = substr($0, length(k) + 2); gsub(/^[ \t]+|[ \t]*,?$|"/, "", v); print v; exit }' "$1"; }

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
echo "ablation: Hessians (128 x 256 windows) into $WORK/h.h5" >&2
"${MPI[@]}" build/tqp hessian --model "$MODEL" --text "$DATA/text/tinystories_calib.txt" \
  --nsamples 128 --ctx 256 --out "$WORK/h.h5" --quiet > /dev/null
"${MPI[@]}" build/tqp eval --model "$MODEL" --text "$DATA/text/tinystories_eval.txt" --ctx 256 \
  --quiet --json "$WORK/fp.json" > /dev/null
fp=$(field "$WORK/fp.json" ppl)

csv=$PREFIX.csv
echo "method,bits,options,ppl,proxy_loss_mean,bits_per_weight_code,bits_per_weight_total,quantize_seconds" > "$csv"
while read -r method bits opts; do
  case "$method" in ''|'#'*) continue ;; esac
  out=$WORK/$method-$bits.h5
  echo "ablation: $method $bits bits: tqp quantize $opts" >&2
  "${MPI[@]}" build/tqp quantize --model "$MODEL" --hessians "$WORK/h.h5" --bits "$bits" $opts \
    --out "$out" --force --quiet --json "$WORK/q.json" < /dev/null > /dev/null
  "${MPI[@]}" build/tqp eval --model "$MODEL" --quantized "$out" \
    --text "$DATA/text/tinystories_eval.txt" --ctx 256 --quiet --json "$WORK/e.json" < /dev/null > /dev/null
  printf '%s,%s,%s,%.6f,%.6g,%.4f,%.4f,%.2f\n' "$method" "$bits" "$opts" \
    "$(field "$WORK/e.json" ppl)" "$(field "$WORK/q.json" proxy_loss_mean)" \
    "$(field "$WORK/q.json" bits_per_weight_code)" "$(field "$WORK/q.json" bits_per_weight_total)" \
    "$(field "$WORK/q.json" seconds)" >> "$csv"
done < "$JOBS"

cpu=$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)
{
  echo "# Ablation: stories260K, $(basename "$JOBS")"
  echo
  echo "Produced by \`tools/ablation.sh $JOBS $PREFIX\` at commit $commit on $(date -u +%Y-%m-%d),"
  echo "$RANKS MPI ranks, $cpu. Hessians: 128 x 256 windows of tinystories_calib.txt;"
  echo "perplexity: tinystories_eval.txt, ctx 256, 618 windows. Discussion:"
  echo "results/ablation_stories260K_discussion.md."
  echo
  echo "Full precision (fp32): perplexity $(printf %.6f "$fp")."
  echo
  echo "| method | bits | perplexity | mean relative proxy loss | code bits/weight | total bits/weight | quantize wall time (s) |"
  echo "|---|---|---|---|---|---|---|"
  tail -n +2 "$csv" | awk -F, '{ printf "| %s | %s | %.4f | %.5f | %s | %s | %s |\n", $1, $2, $4, $5, $6, $7, $8 }'
} > "$PREFIX.md"

# Which matrices cost perplexity: each matrix type decoded alone (the rest full precision), for
# the cells named in PER_MATRIX ("method-bits" pairs).
PER_MATRIX=${TQP_PER_MATRIX:-"GPTQ-3 QuIP-3"}
{
  echo "| matrices quantized | $(echo $PER_MATRIX | sed 's/ / | /g') |"
  echo "|---$(for c in $PER_MATRIX; do printf '|---'; done)|"
  for only in q k v o gate up down q,k,v,o,gate,up,down; do
    row="| $only"
    for cell in $PER_MATRIX; do
      [ -f "$WORK/$cell.h5" ] || { row="$row | -"; continue; }
      "${MPI[@]}" build/tqp eval --model "$MODEL" --quantized "$WORK/$cell.h5" --only "$only" \
        --text "$DATA/text/tinystories_eval.txt" --ctx 256 --quiet --json "$WORK/o.json" < /dev/null > /dev/null
      row="$row | $(printf '%.4f' "$(field "$WORK/o.json" ppl)")"
    done
    echo "$row |"
  done
} > "${PREFIX}_per_matrix.md"

if command -v gnuplot > /dev/null; then
  methods=$(tail -n +2 "$csv" | cut -d, -f1 | awk '!seen[$0]++')
  plot=""
  for m in $methods; do
    grep "^$m," "$csv" | awk -F, '{ print $7, $4 }' > "$WORK/$m.dat"
    plot="$plot${plot:+, }'$WORK/$m.dat' using 1:2 with linespoints lw 2 title '$m'"
  done
  gnuplot <<GP
set terminal pngcairo size 800,560 noenhanced
set output '$PREFIX.png'
set title 'stories260K: perplexity against bits per weight (fp32: $(printf %.4f "$fp"))'
set xlabel 'total bits per weight'
set ylabel 'perplexity (TinyStories eval, ctx 256)'
set logscale y
set grid
set key top right
plot $plot, $fp with lines dt 2 lc rgb 'black' title 'fp32'
GP
else
  echo "ablation: gnuplot not installed, no plot written" >&2
fi
echo "ablation: wrote $csv, $PREFIX.md and ${PREFIX}_per_matrix.md" >&2
