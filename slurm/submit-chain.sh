#!/usr/bin/env bash
# Submit an ablation grid as three dependent jobs and print their ids:
#   slurm/hessian.sbatch         Hessians into HESS
#   slurm/ablation-array.sbatch  one array task per cell of JOBS   (afterok: the Hessian job)
#   slurm/collect.sbatch         PREFIX.csv, PREFIX.md, PREFIX.svg (afterok: every array task)
# If a job fails, the jobs that depend on it are never started (cancel them with scancel, unless
# the cluster sets DependencyParameters=kill_invalid_depend).
# Usage, from anywhere (it submits from the repository root; relative paths are taken from there):
#   slurm/submit-chain.sh [sbatch options for all three jobs, e.g. -p compute -A project]
# Settings by environment, passed on to the jobs:
#   JOBS (jobs/ablation-stories260K.txt), DIR (out/<job file name without .txt>),
#   HESS (DIR/hessians.h5), PREFIX (DIR/results), and what the scripts read: MODEL, TEXT,
#   NSAMPLES, CTX, EVAL_TEXT, TQP_BIN, TQP_DATA_DIR, TQP_LAUNCH, ARRAY_MAX.
#   HESSIAN_SBATCH, ARRAY_SBATCH, COLLECT_SBATCH: further sbatch options for one of the jobs
#   (e.g. ARRAY_SBATCH="--ntasks-per-node=4 --time=04:00:00").
# Output: three lines, "hessian <id>", "ablation <id>", "collect <id>".
set -euo pipefail
cd "$(dirname "$0")/.."
export JOBS=${JOBS:-jobs/ablation-stories260K.txt}
export DIR=${DIR:-out/$(basename "$JOBS" .txt)}
export HESS=${HESS:-$DIR/hessians.h5}
export PREFIX=${PREFIX:-$DIR/results}
read -r -a hopts <<< "${HESSIAN_SBATCH:-}"
read -r -a aopts <<< "${ARRAY_SBATCH:-}"
read -r -a copts <<< "${COLLECT_SBATCH:-}"
submitted=()
undo() { # a submission failed: cancel the jobs already submitted
  if [ "${#submitted[@]}" -gt 0 ]; then
    echo "submit-chain.sh: cancelling ${submitted[*]}" >&2
    scancel "${submitted[@]}" || true
  fi
}
trap undo ERR

h=$(sbatch --parsable "$@" "${hopts[@]}" slurm/hessian.sbatch)
h=${h%%;*}
submitted+=("$h")
a=$(slurm/submit-ablation.sh "$@" "${aopts[@]}" --dependency="afterok:$h")
submitted+=("$a")
c=$(sbatch --parsable "$@" "${copts[@]}" --dependency="afterok:$a" slurm/collect.sbatch)
c=${c%%;*}
echo "hessian $h"
echo "ablation $a"
echo "collect $c"
