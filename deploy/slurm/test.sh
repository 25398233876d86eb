#!/bin/bash
# Runs deploy/slurm/dtask.sbatch for real on a one-node Slurm started here
# (Debian's slurm-wlm: munged, slurmctld and slurmd as root, in a scratch
# directory), with a map+gather as the workload, and checks its output.
# Needs root and slurm-wlm; `just slurm-test` runs it, and so does the test
# suite when both are there. Usage: test.sh DTASK_BINARY TASKS_WASM
set -euo pipefail
dtask=$(realpath "$1")
tasks=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d /tmp/dtask-slurm.XXXXXX)
chmod 755 "$scratch"
node=$(hostname -s)
cpus=$(nproc)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  scancel --full --quiet -u root 2>/dev/null || true
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT

# munge: the authentication every Slurm daemon and command uses.
mkdir -p "$scratch/munge" "$scratch/munge-run"
dd if=/dev/urandom bs=1 count=1024 of="$scratch/munge/munge.key" status=none
chown -R munge: "$scratch/munge" "$scratch/munge-run" 2>/dev/null || true
chmod 700 "$scratch/munge"; chmod 400 "$scratch/munge/munge.key"
munged --key-file="$scratch/munge/munge.key" --socket="$scratch/munge-run/munge.socket" \
  --pid-file="$scratch/munge-run/munged.pid" --seed-file="$scratch/munge/seed" \
  --log-file="$scratch/munge/munged.log" --force
for _ in $(seq 50); do [ -S "$scratch/munge-run/munge.socket" ] && break; sleep 0.1; done
pids+=("$(cat "$scratch/munge-run/munged.pid")")

mkdir -p "$scratch/spool/ctld" "$scratch/spool/d" "$scratch/log" "$scratch/home"
cat > "$scratch/slurm.conf" <<CONF
ClusterName=dtasktest
SlurmctldHost=$node
AuthType=auth/munge
AuthInfo=socket=$scratch/munge-run/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$((17000 + RANDOM % 1000))
SlurmdPort=$((18000 + RANDOM % 1000))
StateSaveLocation=$scratch/spool/ctld
SlurmdSpoolDir=$scratch/spool/d
SlurmctldPidFile=$scratch/slurmctld.pid
SlurmdPidFile=$scratch/slurmd.pid
SlurmctldLogFile=$scratch/log/slurmctld.log
SlurmdLogFile=$scratch/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$node CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$scratch/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  [ -f "$scratch/slurmctld.pid" ] && [ -f "$scratch/slurmd.pid" ] && break
  sleep 0.1
done
pids+=("$(cat "$scratch/slurmctld.pid")" "$(cat "$scratch/slurmd.pid")")
for _ in $(seq 200); do
  sinfo -h -o %T 2>/dev/null | grep -Eq '^idle' && break
  sleep 0.1
done
sinfo -h -o '%N %T %c' >&2

export DTASK="$dtask" DTASK_JOB_DIR="$scratch/job" HOME="$scratch/home"
out="$scratch/out.txt"
sbatch --wait --nodes=1 --cpus-per-task="$cpus" --output="$scratch/job.log" \
  --chdir="$scratch" "$here/dtask.sbatch" \
  sh -c "seq 200 | \"$dtask\" map \"$tasks\" inc | \"$dtask\" gather > \"$out\" && \"$dtask\" workers >&2" \
  || { cat "$scratch/job.log" "$scratch/job/"*.log "$scratch/log/"*.log >&2 || true; exit 1; }
cat "$scratch/job.log" >&2
sum=$(awk '{s += $1} END {print s}' "$out")
want=$(( (201 * 202) / 2 - 1 ))
if [ "$sum" != "$want" ]; then
  echo "slurm-test: the job's map+gather summed to $sum, not $want" >&2
  exit 1
fi
# The worker took its slots from Slurm.
grep -q "nthreads=$cpus" "$scratch/job.log" || {
  echo "slurm-test: the worker did not take $cpus slots from SLURM_CPUS_PER_TASK" >&2; exit 1; }
echo "slurm-test: ok (200 tasks through a dtask cluster in Slurm job on $node, $cpus slots)"
