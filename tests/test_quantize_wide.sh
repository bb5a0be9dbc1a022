# A synthetic Llama-shaped model wide enough for several ScaLAPACK blocks per rank (dim 512,
# FFN 1376, GQA 8/4 heads, one layer, made by tests/mkmodel.c) quantized with the scalar grid
# (QuIP, on 1, 2, 3 and 4 ranks) and the trellis (QTIP, on 1 and 3) under every OpenBLAS core
# type this CPU can run: every file is byte-identical to the one from 1 rank with that core type, and no rank
# of 4 allocates an n x n buffer.  The Hessians are collected once.  The trellis runs at
# L = 10 to keep the suite short; the factor, the rounding feedback and the bands are the same
# as at L = 16.
source "$(dirname "$0")/lib.sh" "$@"
M=$WORK/wide.bin
"$TESTBIN/mkmodel" "$M" 512 1376 1 8 4 512 256 7
check "synthetic model written" [ -s "$M" ]
run_mpi 2 hessian --model "$M" --tokenizer "$DATA/models/stories260K/tok512.bin" --text "$CALIB_TEXT" --nsamples 16 --ctx 128 --out "$WORK/h.h5" --quiet > /dev/null 2>&1
check "hessians of the wide model" [ $? = 0 ]

core_types Haswell SkylakeX Cooperlake SapphireRapids Zen SandyBridge Nehalem
check "at least one core type runs" test -n "$CORE_TYPES"
types=$CORE_TYPES

for t in $types; do
  for cb in scalar trellis; do
    opts="--codebook $cb"
    [ $cb = trellis ] && opts="$opts --code 1mad --trellis-L 10"
    ranks="1 2 3 4"
    # the trellis's bands (no ScaLAPACK) on 1 and 3 ranks, and 4 for the first core type's
    # allocation check below; its rank invariance is covered in test_quantize_cli too
    [ $cb = trellis ] && ranks="1 3" && [ $t = "${types%% *}" ] && ranks="1 3 4"
    for n in $ranks; do
      OPENBLAS_CORETYPE=$t run_mpi $n quantize --model "$M" --hessians "$WORK/h.h5" $opts --quiet \
        --out "$WORK/$t-$cb-$n.h5" --json "$WORK/$t-$cb-$n.json" > "$WORK/out" 2>&1
      check "$t $cb on $n ranks runs" [ $? = 0 ] || cat "$WORK/out"
      [ $n = 1 ] && continue
      check "$t $cb: $n ranks byte-identical to 1 rank" cmp -s "$WORK/$t-$cb-1.h5" "$WORK/$t-$cb-$n.h5"
    done
  done
done
# No rank allocates a whole n x n (or m x n) matrix: the largest single allocation of any rank
# in the quantization phase, as counted by tqp_malloc, stays under a third of the widest
# group's n x n float64 (n = 1376: 15.1 MB) on 4 ranks (the factor's block-cyclic part, about
# a quarter, is the largest); on 1 rank it is the n x n factor itself (so the count sees it).
nn=$((8 * 1376 * 1376))
set -- $types
for cb in scalar trellis; do
  big1=$(json "$WORK/$1-$cb-1.json" quantize_largest_allocation_bytes)
  big4=$(json "$WORK/$1-$cb-4.json" quantize_largest_allocation_bytes)
  check "$cb: 1 rank allocates the n x n factor ($big1 >= $nn)" awk -v a="$big1" -v b=$nn 'BEGIN { exit !(a >= b) }'
  check "$cb: no rank of 4 allocates n^2 / 3 ($big4 < $nn / 3)" awk -v a="$big4" -v b=$nn 'BEGIN { exit !(a < b / 3) }'
done

# Not asserted (OpenBLAS's kernels also serve the rotations and the rounding feedback, whose
# call shapes do not depend on the rank count but whose rounding depends on the core type):
# whether the files agree across core types.
for cb in scalar trellis; do
  set -- $types
  first=$1
  for t in $types; do
    if cmp -s "$WORK/$first-$cb-1.h5" "$WORK/$t-$cb-1.h5"; then echo "$cb: $t = $first"
    else echo "$cb: $t differs from $first"; fi
  done
done
done_tests
