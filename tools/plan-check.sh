#!/usr/bin/env bash
# Peak resident memory of real tqp runs against `tqp plan`'s figures (results/plan_check.md).
#
#   tools/plan-check.sh [path/to/tqp] [ranks ...]       # the bundled model, 1 and 2 ranks
#   TQP_PLAN_PARTS="stories midsize synthetic" tools/plan-check.sh build/tqp 1 2
#
# Parts: `stories` (the bundled model: hessian, quantize, eval --quantized; a minute or two),
# `midsize` (a generated 2-layer llama2.c checkpoint of dim 2048, FFN 5632, every weight
# 0.0115: the same three commands; about 6 minutes per rank count, 2 GB per rank) and
# `synthetic` (tqp bench quantize-memory on Llama-2-70B-shaped matrices; 1-2 minutes each,
# up to 8.3 GB per rank).
#
# Every rank of every run is measured with /usr/bin/time (maximum resident set size).  The
# fixed cost of a process (MPI start-up, shared libraries) is measured with `tqp --version` at
# the same rank count and subtracted; the rest is compared with tqp plan --json's figure for
# that rank and phase.  Prints markdown tables.
set -u
TQP=${1:-build/tqp}
shift || true
RANKS=${*:-1 2}
DATA=${TQP_DATA_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}
MODEL=$DATA/models/stories260K/stories260K.bin
CALIB=$DATA/text/tinystories_calib.txt
EVAL=$DATA/text/tinystories_eval.txt
W=$(mktemp -d "${TMPDIR:-/tmp}/tqp-plan-check-XXXXXX")
trap 'rm -rf "$W"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
# glibc serves blocks up to 32 MiB from its heap once a block that size has been freed (the
# dynamic mmap threshold) and may keep them resident after free; every buffer of a 7B+ model is
# larger, so it is always mapped and returned.  A fixed threshold gives the small model the same
# behaviour; TQP_PLAN_GLIBC_DEFAULT=1 measures with glibc's default instead.
[ "${TQP_PLAN_GLIBC_DEFAULT:-0}" = 1 ] || export MALLOC_MMAP_THRESHOLD_=131072

# measure NAME P args...: tqp on P ranks; rank r's peak RSS (kB) goes to $W/NAME.r
measure() {
  local name=$1 p=$2; shift 2
  # shellcheck disable=SC2016 # expanded by the inner shell, once per rank
  mpiexec -n "$p" sh -c 'exec /usr/bin/time -f %M -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' \
    "$W/$name" "$TQP" "$@" > "$W/$name.out" 2> "$W/$name.err" ||
    { echo "failed: tqp $*" >&2; cat "$W/$name.err" >&2; exit 1; }
}

# planned KEY PLANJSON RANK: bytes of rank RANK in the array KEY of a plan
planned() {
  awk -v k="\"$1\":" -v r="$3" 'index($0, k) { sub(/.*\[/, ""); sub(/\].*/, "");
    split($0, a, /, */); print a[r + 1]; exit }' "$2"
}

PARTS=${TQP_PLAN_PARTS:-stories}

# row LABEL PHASE P PLANJSON: one table row per rank of the last measured run $W/NAME.*
row() {
  local label=$1 phase=$2 p=$3 plan=$4 name=${1//[^a-z0-9]/_}
  for ((r = 0; r < p; r++)); do
    m=$(cat "$W/$name.$r") b=$(cat "$W/version.$r") pl=$(planned "${phase}_per_rank" "$plan" "$r")
    awk -v n="tqp $label" -v P="$p" -v r="$r" -v m="$m" -v b="$b" -v pl="$pl" 'BEGIN {
      printf "| %s | %d | %d | %.1f MB | %.1f MB | %.1f MB | %+.1f MB |\n", n, P, r,
             m * 1.024e-3, (m - b) * 1.024e-3, pl / 1e6, (m - b) * 1.024e-3 - pl / 1e6 }'
  done
}

if [[ " $PARTS " == *" stories "* ]]; then
eval_tokens=$("$TQP" tokenize --model "$MODEL" --text "$EVAL" --out "$W/eval.u32" > /dev/null &&
  echo $(($(stat -c %s "$W/eval.u32") / 4)))

echo "Bundled model $MODEL, commit $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null)"
echo
echo "| command | ranks | rank | peak RSS | minus tqp --version | planned | difference |"
echo "|---|---|---|---|---|---|---|"
for P in $RANKS; do
  measure version "$P" --version
  # label|phase|tqp plan options|tqp arguments
  runs=(
    "hessian|hessian|--nsamples 128|hessian --model $MODEL --text $CALIB --out $W/h$P.h5 --quiet --force"
    "hessian --nsamples 32|hessian|--nsamples 32|hessian --model $MODEL --text $CALIB --nsamples 32 --out $W/h32.h5 --quiet --force"
    "hessian --nsamples 448|hessian|--nsamples 448|hessian --model $MODEL --text $CALIB --nsamples 448 --out $W/h448.h5 --quiet --force"
    "hessian --batch 8|hessian|--batch 8|hessian --model $MODEL --text $CALIB --batch 8 --out $W/hb8.h5 --quiet --force"
    "quantize (QuIP, 2 bits)|quantize||quantize --model $MODEL --hessians $W/h$P.h5 --bits 2 --out $W/q$P.h5 --quiet --force"
    "quantize --codebook trellis|quantize|--codebook trellis|quantize --model $MODEL --hessians $W/h$P.h5 --bits 2 --codebook trellis --out $W/t$P.h5 --quiet --force"
    "eval --quantized|eval|--eval-tokens $eval_tokens|eval --model $MODEL --quantized $W/q$P.h5 --text $EVAL --quiet"
  )
  for spec in "${runs[@]}"; do
    IFS='|' read -r label phase popts args <<< "$spec"
    name=${label//[^a-z0-9]/_}
    # shellcheck disable=SC2086
    measure "$name" "$P" $args
    # shellcheck disable=SC2086
    "$TQP" plan --config "$MODEL" --ranks "$P" $popts --json "$W/plan.json" > /dev/null
    row "$label" "$phase" "$P" "$W/plan.json"
  done
done
fi

if [[ " $PARTS " == *" midsize "* ]]; then
  # llama2.c header (dim, FFN, layers, heads, KV heads, vocab, seq_len) and every float the
  # byte pattern 0x3c3c3c3c (0.0115): finite activations, SPD Hessians after damping
  le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) \
    $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }
  d=2048 h=5632 L=2 nh=16 nkv=4 V=256 S=1024
  hd=$((d / nh)) kv=$((nkv * d / nh))
  floats=$((V * d + L * (d + d * d + 2 * kv * d + d * d + d + 3 * h * d) + d + S * hd))
  MID=$W/mid.bin
  # shellcheck disable=SC2059 # the format is the header's escaped bytes
  { printf "$(le32 $d)$(le32 $h)$(le32 $L)$(le32 $nh)$(le32 $nkv)$(le32 $V)$(le32 $S)"
    head -c $((4 * floats)) /dev/zero | tr '\0' '<'; } > "$MID"
  head -c $((4 * 16 * 512)) /dev/zero > "$W/mid.u32" # 16 windows of token 0
  echo
  echo "Generated checkpoint: dim $d, FFN $h, $L layers, $nh heads ($nkv KV), vocab $V, F32;"
  echo "16 windows of 512 tokens. The F32 layers are read from the file's mapping, so pages of"
  echo "the layer before stay resident: $(awk -v l=$((4 * (d + d * d + 2 * kv * d + d * d + d + 3 * h * d))) 'BEGIN { printf "%.1f MB", l / 1e6 }') for hessian and quantize."
  echo
  echo "| command | ranks | rank | peak RSS | minus tqp --version | planned | difference |"
  echo "|---|---|---|---|---|---|---|"
  for P in $RANKS; do
    measure version "$P" --version
    "$TQP" plan --config "$MID" --ranks "$P" --nsamples 16 --ctx 512 --eval-tokens 8192 \
      --json "$W/plan.json" > /dev/null
    measure "mid_hessian" "$P" hessian --model "$MID" --tokens "$W/mid.u32" --nsamples 16 --ctx 512 \
      --out "$W/mh.h5" --quiet --force
    row "mid hessian" hessian "$P" "$W/plan.json"
    measure "mid_quantize" "$P" quantize --model "$MID" --hessians "$W/mh.h5" --out "$W/mq.h5" \
      --quiet --force
    row "mid quantize" quantize "$P" "$W/plan.json"
    measure "mid_eval___quantized" "$P" eval --model "$MID" --quantized "$W/mq.h5" \
      --tokens "$W/mid.u32" --ctx 512 --quiet
    row "mid eval --quantized" eval "$P" "$W/plan.json"
  done
fi

[[ " $PARTS " == *" synthetic "* ]] || exit 0
echo
echo "Synthetic Llama-2-70B-shaped layer: tqp bench quantize-memory (planned figure included)"
for P in $RANKS; do
  for args in "--matrix q --rows 32" "--matrix k --rows 32" \
              "--matrix gate --rows 32" "--matrix q --codebook trellis --rows 32" \
              "--matrix gate --codebook trellis --rows 32"; do
    echo
    echo "mpiexec -n $P tqp bench quantize-memory --synthetic $args"
    # shellcheck disable=SC2086
    mpiexec -n "$P" "$TQP" bench quantize-memory --synthetic $args | tail -n +3
  done
done
