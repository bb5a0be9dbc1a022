#!/usr/bin/env bash
# Submit slurm/ablation-array.sbatch as a job array with one task per cell of the job file
# (lines with something left once "#..." comments are cut off, "@" directives aside), times N
# with a line "@seeds N", and print the array's job id.
# Usage, from anywhere (it submits from the repository root; relative paths are taken from there):
#   slurm/submit-ablation.sh [sbatch options...]
#   e.g. JOBS=jobs/ablation-smoke.txt slurm/submit-ablation.sh -p compute --dependency=afterok:123
# Settings by environment: JOBS (default jobs/ablation-stories260K.txt), ARRAY_MAX (run at most
# this many cells at a time; default: no limit), and everything ablation-array.sbatch reads
# (DIR, HESS, MODEL, EVAL_TEXT, TQP_BIN, TQP_DATA_DIR, TQP_LAUNCH), which sbatch passes on.
set -euo pipefail
cd "$(dirname "$0")/.."
export JOBS=${JOBS:-jobs/ablation-stories260K.txt}
if [ ! -r "$JOBS" ]; then
  echo "submit-ablation.sh: $JOBS: cannot read the job file" >&2
  exit 2
fi
n=$(awk '{ sub(/#.*/, "") } $1 == "@seeds" { s = $2 } $1 != "" && substr($1, 1, 1) != "@" { n++ }
  END { print n * (s ? s : 1) }' "$JOBS")
if [ "$n" = 0 ]; then
  echo "submit-ablation.sh: $JOBS: no cells" >&2
  exit 2
fi
id=$(sbatch --parsable --array="0-$((n - 1))${ARRAY_MAX:+%$ARRAY_MAX}" "$@" slurm/ablation-array.sbatch)
echo "${id%%;*}"
