# The Slurm job scripts of slurm/ on a real single-node Slurm (Debian's slurm-wlm and munge):
# munged, slurmctld and slurmd are started here from a generated slurm.conf in a temporary
# directory and stopped by pid at the end.  The scripts are submitted unchanged, with settings
# only by environment and sbatch options:
#   (i)   slurm/quantize.sbatch runs the whole pipeline to its output and JSON summary;
#   (ii)  the same job, requeued with `scontrol requeue` while it quantizes, starts again,
#         resumes, and ends with the same file contents and perplexity as (i);
#   (iii) slurm/submit-chain.sh: hessian -> job array (jobs/ablation-smoke.txt) -> collect,
#         one results-table row per cell.
# Skips (exit 77) when not root, when Slurm or munge is not installed, or when the daemons do
# not come up.  TQP_LAUNCH, if set, is passed on to the jobs (default: the scripts' own).
source "$(dirname "$0")/lib.sh" "$@"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TQP=$(cd "$(dirname "$TQP")" && pwd)/$(basename "$TQP")
DATA=$(cd "$DATA" && pwd)
S=$WORK/slurm
pids=() # munged, slurmctld, slurmd
ctld=

skip() { echo "SKIP: test_slurm: $*"; exit 77; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2> /dev/null; }
stop_slurm() { # cancel every job, wait for them to leave, then stop the daemons (newest first)
  local i p
  if alive "${ctld:-}"; then
    timeout 10 scancel --quiet --user=root 2> /dev/null
    for i in $(seq 1 60); do
      [ -z "$(timeout 5 squeue -h -o %i 2> /dev/null)" ] && break
      sleep 0.5
    done
    for i in $(seq 1 50); do # a job step's socket goes when its slurmstepd has exited
      compgen -G "$S/spool/${node}_*" > /dev/null || break
      sleep 0.2
    done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[$i]}
    kill "$p" 2> /dev/null || continue
    for _ in $(seq 1 50); do alive "$p" || break; sleep 0.1; done
    kill -9 "$p" 2> /dev/null
  done
  pids=()
}
trap 'stop_slurm; rm -rf "$WORK"' EXIT
trap 'exit 1' INT TERM HUP

[ "$(id -u)" = 0 ] || skip "needs root (slurmd runs the test jobs as the submitting user, root)"
export PATH=$PATH:/usr/sbin:/sbin
for b in munged slurmctld slurmd sbatch scontrol squeue scancel sinfo srun; do
  command -v "$b" > /dev/null || skip "$b not found: install slurm-wlm and munge (tools/install-deps.sh)"
done

# A free TCP port on 127.0.0.1 (nothing answers a connection to it), other than $1.
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    [ "$p" != "${1:-}" ] && ! (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null && { echo "$p"; return 0; }
  done
  return 1
}

# --- Start munged, slurmctld and slurmd --------------------------------------------------------
mkdir -p "$S/state" "$S/spool" "$WORK/logs"
chmod 755 "$WORK" "$S"
head -c 1024 /dev/urandom > "$S/munge.key"
chmod 600 "$S/munge.key"
munged --foreground --force --key-file="$S/munge.key" --socket="$S/munge.sock" \
  --pid-file="$S/munged.pid" --seed-file="$S/munged.seed" --log-file="$S/munged.log" \
  > "$S/munged.out" 2>&1 &
pids+=("$!")
for _ in $(seq 1 50); do [ -S "$S/munge.sock" ] && break; sleep 0.1; done
[ -S "$S/munge.sock" ] || { cat "$S/munged.out" >&2; skip "munged did not start"; }

node=$(hostname -s)
ctld_port=$(free_port) || skip "no free TCP port"
slurmd_port=$(free_port "$ctld_port") || skip "no free TCP port"
cat > "$S/slurm.conf" << EOF
ClusterName=tqptest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$S/munge.sock,cred_expire=10
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
DependencyParameters=kill_invalid_depend
FirstJobId=$((1000 + RANDOM % 100000))
MinJobAge=600
KillWait=5
ReturnToService=2
MailProg=/bin/true
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
# The jobs see only this cluster and this environment.
for v in $(compgen -e | grep '^SLURM_'); do unset "$v"; done
export SLURM_CONF=$S/slurm.conf
slurmctld -D -i -f "$SLURM_CONF" > "$S/slurmctld.out" 2>&1 &
ctld=$!
pids+=("$ctld")
slurmd -D -N "$node" -f "$SLURM_CONF" > "$S/slurmd.out" 2>&1 &
slurmd=$!
pids+=("$slurmd")
up=0
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ] && alive "$ctld" && alive "$slurmd"; do
  case "$(timeout 5 sinfo -h -N -o %T 2> /dev/null)" in idle*) up=1; break ;; esac
  sleep 0.2
done
if [ "$up" != 1 ]; then
  tail -n 5 "$S/slurmctld.out" "$S/slurmd.out" >&2
  skip "the single-node Slurm did not come up (logs above)"
fi

# --- Helpers ------------------------------------------------------------------------------------
export TQP_BIN=$TQP TQP_DATA_DIR=$DATA
[ -n "${TQP_LAUNCH:-}" ] && export TQP_LAUNCH
submit() { (cd "$ROOT" && timeout 30 sbatch --parsable --output="$WORK/logs/%x-%j.out" "$@"); }
# states ID: the state of the job, one line per task of an array (ended jobs included).
states() { timeout 10 squeue -h -j "$1" -t all -o %T 2> /dev/null; }
ENDED='^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)$'
# wait_job ID SECONDS: wait until the job (every task of an array) has ended; true if all
# completed successfully.
wait_job() {
  local st deadline=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$deadline" ]; do
    st=$(states "$1")
    if [ -n "$st" ] && ! grep -qvE "$ENDED" <<< "$st"; then
      ! grep -qv '^COMPLETED$' <<< "$st"
      return
    fi
    sleep 0.2
  done
  echo "job $1 still not finished after $2 s: $(tr '\n' ' ' <<< "$st")" >&2
  return 1
}
# rows FILE METHOD BITS: the markdown table rows of a cell that have a perplexity.
rows() { awk -F'|' -v m="$2" -v b="$3" '{ for (i = 2; i <= 4; i++) gsub(/^ +| +$/, "", $i) }
  $2 == m && $3 == b && $4 ~ /^[0-9]/ { n++ } END { print n + 0 }' "$1"; }
# h5 FILE: the file's contents (every dataset and attribute) as text, without its name.
h5() { h5dump -m %.9g "$1" | tail -n +2; }
show_logs() { tail -n 20 "$WORK"/logs/* "$S"/slurmctld.out "$S"/slurmd.out >&2; }

# Calibration 32 x 256 tokens; perplexity on the first 20 kB of the evaluation text.
head -c 20000 "$EVAL_TEXT" > "$WORK/eval.txt"
export TEXT=$CALIB_TEXT EVAL_TEXT=$WORK/eval.txt BITS=2
export METHOD_OPTS="--codebook trellis --code 1mad --nsamples 32"

# --- (i) The full pipeline ----------------------------------------------------------------------
export OUT=$WORK/pipe/q.h5
j=$(submit slurm/quantize.sbatch)
check "quantize.sbatch is accepted" [ -n "$j" ]
wait_job "$j" 120
check "quantize.sbatch completes" [ $? = 0 ]
check "the pipeline writes its output" h5dump -H "$WORK/pipe/q.h5" > /dev/null
check "the pipeline writes its JSON" [ -s "$WORK/pipe/q.json" ]
check "the JSON has the quantized perplexity" [ -n "$(json "$WORK/pipe/q.json" ppl_quantized)" ]
check "the JSON has the full-precision perplexity" [ -n "$(json "$WORK/pipe/q.json" ppl_full_precision)" ]
check "one start logged" [ "$(grep -c 'quantize.sbatch: job' "$WORK/logs/tqp-quantize-$j.out")" = 1 ]
mv "$WORK/pipe" "$WORK/first"

# --- (ii) The same job requeued while it runs: same OUT, so the same file is expected ----------
j=$(submit slurm/quantize.sbatch)
log=$WORK/logs/tqp-quantize-$j.out
seen=0 deadline=$((SECONDS + 120))
while [ "$SECONDS" -lt "$deadline" ]; do
  grep -qE '^quantize: layer [0-9]+/[0-9]+ committed' "$log" 2> /dev/null && { seen=1; break; }
  grep -qE "$ENDED" <<< "$(states "$j")" && break
  sleep 0.1
done
check "the job reaches quantization" [ "$seen" = 1 ]
timeout 10 scontrol requeue "$j"
check "scontrol requeue is accepted" [ $? = 0 ]
# A requeued job begins again after cred_expire + 1 seconds (AuthInfo above; 120 by default).
wait_job "$j" 120
check "the requeued job completes" [ $? = 0 ]
check "the job was killed while running" grep -q 'DUE TO JOB REQUEUE' "$log"
check "the log shows the second start" grep -q "quantize.sbatch: job $j, start 2" "$log"
check "Slurm counts one restart" grep -q 'Restarts=1' <(timeout 10 scontrol show job "$j")
check "the resumed output has the same contents" cmp -s <(h5 "$WORK/first/q.h5") <(h5 "$WORK/pipe/q.h5")
check "the resumed output is byte-identical" cmp -s "$WORK/first/q.h5" "$WORK/pipe/q.h5"
check "the resumed run has the same perplexity" \
  [ "$(json "$WORK/pipe/q.json" ppl_quantized)" = "$(json "$WORK/first/q.json" ppl_quantized)" ]

# --- (iii) The chain: hessian -> array -> collect -----------------------------------------------
unset OUT
export JOBS=jobs/ablation-smoke.txt DIR=$WORK/grid PREFIX=$WORK/grid/table NSAMPLES=32
# Run from elsewhere: the driver submits from the repository root itself.
ids=$(cd "$WORK" && timeout 120 "$ROOT/slurm/submit-chain.sh" --output="$WORK/logs/%x-%j.out")
check "submit-chain.sh submits three jobs" [ "$(wc -l <<< "$ids")" = 3 ]
jid() { awk -v k="$1" '$1 == k { print $2 }' <<< "$ids"; }
wait_job "$(jid collect)" 180
check "the chain completes" [ $? = 0 ]
cells=$(awk '{ sub(/#.*/, "") } $1 != "" { print $1 "-" $2 }' "$ROOT/$JOBS")
n=$(wc -w <<< "$cells")
wait_job "$(jid hessian)" 5
check "the Hessian job completed" [ $? = 0 ]
wait_job "$(jid ablation)" 5
check "every array task completed" [ $? = 0 ]
check "one array task per cell" [ "$(states "$(jid ablation)" | wc -l)" = "$n" ]
check "the Hessians are shared" [ -e "$WORK/grid/hessians.h5" ]
for c in $cells; do
  check "cell $c has its output" [ -s "$WORK/grid/$c.h5" ]
  check "cell $c has its perplexity" [ -n "$(json "$WORK/grid/$c.json" ppl_quantized)" ]
  check "one table row for $c" [ "$(rows "$WORK/grid/table.md" "${c%-*}" "${c##*-}")" = 1 ]
done
check "the table has a row per cell" [ "$(grep -c '^| ' "$WORK/grid/table.md")" = $((n + 1)) ]
check "the CSV has a row per cell" [ "$(wc -l < "$WORK/grid/table.csv")" = $((n + 1)) ]
check "the plot is written" grep -q '<svg' "$WORK/grid/table.svg"

[ "$failed" = 0 ] || show_logs
done_tests
