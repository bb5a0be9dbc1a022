#!/usr/bin/env bash
# Run an ablation grid (a job file from jobs/) on the bundled model and write the results:
# <prefix>.csv, <prefix>.md and <prefix>.svg (perplexity against total bits per weight), made by
# `tqp report` from the per-cell JSON summaries, and <prefix>_per_matrix.md.  Hessians are
# collected once and shared by every cell.
# Usage: tools/ablation.sh [JOBFILE] [PREFIX]
#   default JOBFILE jobs/ablation-stories260K.txt, PREFIX results/ablation_stories260K
# Settings by environment: TQP_DATA_DIR (../shared/data), TQP_RANKS (2), TQP_WORK (a temp dir),
# TQP_BIN (build/tqp), TQP_PER_MATRIX ("GPTQ-3 QuIP-3": the cells of the per-matrix table).
# The summaries stay in the work directory: <method>-<bits>.json from tqp quantize and
# <method>-<bits>.eval.json from tqp eval of the quantized file, whose perplexity tqp report
# uses when the quantize summary has no ppl_quantized; fp.json is the full-precision eval.
# A job file line "@seeds N" runs every cell N times, tqp quantize --seed 0 .. N-1, into
# <method>-<bits>-s<seed>.{h5,json,eval.json}; tqp report gives the mean, minimum and maximum.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-jobs/ablation-stories260K.txt}
PREFIX=${2:-results/ablation_stories260K}
DATA=${TQP_DATA_DIR:-../shared/data}
RANKS=${TQP_RANKS:-2}
MODEL=$DATA/models/stories260K/stories260K.bin
TQP=${TQP_BIN:-build/tqp}
WORK=${TQP_WORK:-$(mktemp -d)}
mkdir -p "$WORK"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
MPI=(mpiexec -n "$RANKS")
[ "$RANKS" -gt "$(nproc)" ] && MPI+=(--oversubscribe)
source tools/lib.sh # field FILE KEY

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
echo "ablation: Hessians (128 x 256 windows) into $WORK/h.h5" >&2
"${MPI[@]}" "$TQP" hessian --model "$MODEL" --text "$DATA/text/tinystories_calib.txt" \
  --nsamples 128 --ctx 256 --out "$WORK/h.h5" --quiet > /dev/null
"${MPI[@]}" "$TQP" eval --model "$MODEL" --text "$DATA/text/tinystories_eval.txt" --ctx 256 \
  --quiet --json "$WORK/fp.json" > /dev/null

seeds=$(awk '{ sub(/#.*/, "") } $1 == "@seeds" { print $2; exit }' "$JOBS")
seeds=${seeds:-1}
while IFS= read -r line; do
  line=${line%%#*} # as tqp report reads the job file: '#' starts a comment
  read -r method bits opts <<< "$line" || true
  [ -n "${method:-}" ] || continue
  [ "${method:0:1}" = "@" ] && continue # directives (@seeds)
  for ((seed = 0; seed < seeds; seed++)); do
    name=$method-$bits
    [ "$seeds" -gt 1 ] && name=$name-s$seed
    echo "ablation: $method $bits bits, seed $seed: tqp quantize $opts" >&2
    "${MPI[@]}" "$TQP" quantize --model "$MODEL" --hessians "$WORK/h.h5" --bits "$bits" $opts \
      --seed "$seed" --out "$WORK/$name.h5" --force --quiet --json "$WORK/$name.json" \
      < /dev/null > /dev/null
    "${MPI[@]}" "$TQP" eval --model "$MODEL" --quantized "$WORK/$name.h5" \
      --text "$DATA/text/tinystories_eval.txt" --ctx 256 --quiet \
      --json "$WORK/$name.eval.json" < /dev/null > /dev/null
  done
done < "$JOBS"

cpu=$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)
notes="Produced by \`tools/ablation.sh $JOBS $PREFIX\` at commit $commit on $(date -u +%Y-%m-%d),
$RANKS MPI ranks, $cpu. Hessians: 128 x 256 windows of tinystories_calib.txt;
perplexity: tinystories_eval.txt, ctx 256, 618 windows. Discussion:
results/ablation_stories260K_discussion.md."
"$TQP" report --jobs "$JOBS" --dir "$WORK" --out "$PREFIX" --fp-eval "$WORK/fp.json" \
  --title "Ablation: stories260K, $(basename "$JOBS")" --notes "$notes"

# Which matrices cost perplexity: each matrix type decoded alone (the rest full precision), for
# the cells named in PER_MATRIX ("method-bits" pairs).
PER_MATRIX=${TQP_PER_MATRIX:-"GPTQ-3 QuIP-3"}
{
  echo "| matrices quantized | $(echo $PER_MATRIX | sed 's/ / | /g') |"
  echo "|---$(for c in $PER_MATRIX; do printf '|---'; done)|"
  suffix=""
  [ "$seeds" -gt 1 ] && suffix=-s0 # with seeds: the first seed's files
  for only in q k v o gate up down q,k,v,o,gate,up,down; do
    row="| $only"
    for cell in $PER_MATRIX; do
      [ -f "$WORK/$cell$suffix.h5" ] || { row="$row | -"; continue; }
      "${MPI[@]}" "$TQP" eval --model "$MODEL" --quantized "$WORK/$cell$suffix.h5" --only "$only" \
        --text "$DATA/text/tinystories_eval.txt" --ctx 256 --quiet --json "$WORK/o.json" < /dev/null > /dev/null
      row="$row | $(printf '%.4f' "$(field "$WORK/o.json" ppl)")"
    done
    echo "$row |"
  done
} > "${PREFIX}_per_matrix.md"

echo "ablation: wrote ${PREFIX}_per_matrix.md; summaries in $WORK" >&2
