#!/usr/bin/env bash
# The scale factor rho on real Hessians: stories260K quantized with each codebook at 2, 3 and 4
# bits and rho = its default times 0.85 .. 1.10, three sign seeds each (tqp quantize --seed
# 0, 1, 2); a markdown table of the mean relative proxy loss (mean, min and max over the seeds)
# on stdout, the best rho per codebook and bit width marked.  Also --scale-rho auto's choice.
# Usage: tools/rho-sweep.sh > results/scale_rho.md
# Settings by environment: TQP_DATA_DIR (../shared/data), TQP_RANKS (2), TQP_WORK (a temp dir),
# TQP_BIN (build/tqp), CODEBOOKS ("scalar e8p trellis"; the trellis with the 1mad code).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${TQP_DATA_DIR:-../shared/data}
RANKS=${TQP_RANKS:-2}
MODEL=$DATA/models/stories260K/stories260K.bin
TQP=${TQP_BIN:-build/tqp}
WORK=${TQP_WORK:-$(mktemp -d)}
CODEBOOKS=${CODEBOOKS:-scalar e8p trellis}
mkdir -p "$WORK"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
MPI=(mpiexec -n "$RANKS")
[ "$RANKS" -gt "$(nproc)" ] && MPI+=(--oversubscribe)
source tools/lib.sh # field FILE KEY
[ -f "$WORK/h.h5" ] || "${MPI[@]}" "$TQP" hessian --model "$MODEL" \
  --text "$DATA/text/tinystories_calib.txt" --nsamples 128 --ctx 256 --out "$WORK/h.h5" --quiet > /dev/null
run() { # codebook bits rho seed -> proxy_loss_mean
  local cb=$1 bits=$2 rho=$3 seed=$4 extra=()
  [ "$cb" = trellis ] && extra=(--code 1mad)
  "${MPI[@]}" "$TQP" quantize --model "$MODEL" --hessians "$WORK/h.h5" --bits "$bits" \
    --codebook "$cb" "${extra[@]}" --scale-rho "$rho" --seed "$seed" --out "$WORK/q.h5" --force \
    --quiet --json "$WORK/q.json" < /dev/null > /dev/null
  field "$WORK/q.json" proxy_loss_mean
}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
cpu=$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)
echo "# The scale factor rho on stories260K's Hessians"
echo
echo "Produced by \`tools/rho-sweep.sh\` at commit $commit on $(date -u +%Y-%m-%d), $RANKS MPI ranks, $cpu."
echo "Hessians: 128 x 256 windows of tinystories_calib.txt. RHT, LDLQ; the trellis with 1mad (L = 16)."
echo "Each cell: the mean relative proxy loss over sign seeds 0, 1, 2 (min-max); * marks the best rho of a row."
for cb in $CODEBOOKS; do
  for bits in 2 3 4; do
    def=$("${MPI[@]}" "$TQP" quantize --model "$MODEL" --hessians "$WORK/h.h5" --bits "$bits" \
      --codebook "$cb" --out "$WORK/q.h5" --force --quiet --json "$WORK/q.json" < /dev/null > /dev/null;
      field "$WORK/q.json" scale_rho)
    rhos=() cells=() means=()
    for f in 0.85 0.90 0.95 1.00 1.05 1.10; do
      rho=$(awk -v d="$def" -v f="$f" 'BEGIN { printf "%.4f", d * f }')
      vals=()
      for seed in 0 1 2; do vals+=("$(run "$cb" "$bits" "$rho" "$seed")"); done
      rhos+=("$rho")
      means+=("$(printf '%s\n' "${vals[@]}" | awk '{ s += $1 } END { printf "%.6f", s / NR }')")
      cells+=("$(printf '%s\n' "${vals[@]}" | awk 'NR == 1 || $1 < lo { lo = $1 } NR == 1 || $1 > hi { hi = $1 } { s += $1 }
        END { printf "%.5f (%.5f-%.5f)", s / NR, lo, hi }')")
    done
    best=$(printf '%s\n' "${means[@]}" | awk 'NR == 1 || $1 < b { b = $1; i = NR } END { print i }')
    autos=()
    for seed in 0 1 2; do autos+=("$(run "$cb" "$bits" auto "$seed")"); done
    auto=$(printf '%s\n' "${autos[@]}" | awk '{ s += $1 } END { printf "%.5f", s / NR }')
    if [ "$bits" = 2 ]; then
      echo
      echo "## $cb"
      echo
      echo "| bits | default rho | rho x 0.85 | x 0.90 | x 0.95 | x 1.00 | x 1.05 | x 1.10 | --scale-rho auto |"
      echo "|---|---|---|---|---|---|---|---|---|"
    fi
    row="| $bits | $def"
    for i in "${!cells[@]}"; do
      mark=""
      [ $((i + 1)) = "$best" ] && mark=" *"
      row="$row | ${rhos[$i]}: ${cells[$i]}$mark"
    done
    echo "$row | $auto |"
  done
done
