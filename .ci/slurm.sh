#!/usr/bin/env bash
# SLURM lane: a real SLURM on this machine, the small workflow through
# `--profile profiles/slurm` (data stages and a short pretrain as sbatch jobs), checks, teardown.
# Plus a two-node partition — two more slurmd daemons on one host, each its own NodeName
# on its own loopback address and port (Debian's 22.05 build runs several slurmd per host with
# `slurmd -N NAME` when slurm.conf gives each node a Port and %n in the spool/pid/log paths) — for a
# CPU/gloo pretrain job on 2 nodes (tests/test_slurm.py::test_two_node_job_*).
#
#   bash .ci/slurm.sh            # from the repo root, as root (apt-get); ~5-10 min on 2 cores
#
# Installs Debian slurm-wlm + munge if missing, writes slurm.conf/gres.conf for this host on
# loopback (REFERENCE.md §4: proctrack/linuxproc, task/none, select/cons_tres, MinJobAge=600,
# a fake GPU gres so `--gpus=1` schedules), starts munged, slurmctld and slurmd by hand (no
# systemd), runs tests/test_slurm.py (the workflow run and its checks), then stops the daemons
# by PID. Idempotent: everything lives in a fresh temp dir; ports are not the SLURM defaults.
# Bounded: the whole lane by $SLURM_LANE_TIMEOUT seconds (default 1500). Exit 0 = passed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIMIT=${SLURM_LANE_TIMEOUT:-1500}
if [[ -z "${SLURM_LANE_INNER:-}" ]]; then  # re-run self under one overall time limit
    SLURM_LANE_INNER=1 exec timeout --signal=INT --kill-after=60 "$LIMIT" bash "$0" "$@"
fi

log() { echo "[slurm-lane $(date +%H:%M:%S)] $*"; }
start=$(date +%s)

# ---- 1. packages
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge (apt)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq
    timeout 600 apt-get install -y -qq slurm-wlm munge >/dev/null
fi
log "$(slurmctld -V)"

# ---- 2. config in a fresh dir
WORK=$(mktemp -d /tmp/bigs-slurm-lane.XXXXXX)
HOST=$(hostname -s)
# A node of cluster size (SlurmdParameters=config_overrides: slurmd believes slurm.conf, not the
# hardware), so profiles/slurm's real requests (8 CPUs, 64 GB for pretrain) schedule unchanged.
CPUS=32
MEM_MB=256000
mkdir -p "$WORK"/{state,spool,munge,logs}
NODE_A=${HOST}-a NODE_B=${HOST}-b  # the two-node partition
mkdir -p "$WORK/spool/$HOST" "$WORK/spool/$NODE_A" "$WORK/spool/$NODE_B"
export SLURM_CONF="$WORK/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=bigslane
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool/%n
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd-%n.pid
SlurmctldLogFile=$WORK/logs/slurmctld.log
SlurmdLogFile=$WORK/logs/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
GresTypes=gpu
MinJobAge=600
ReturnToService=2
SlurmdParameters=config_overrides
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
NodeName=$NODE_A NodeAddr=127.0.0.2 Port=16821 CPUs=8 RealMemory=32000 State=UNKNOWN
NodeName=$NODE_B NodeAddr=127.0.0.3 Port=16822 CPUs=8 RealMemory=32000 State=UNKNOWN
PartitionName=lane Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=two Nodes=$NODE_A,$NODE_B MaxTime=INFINITE State=UP
EOF
# A fake GPU for scheduling only: a plain file stands in for /dev/nvidia0 (task/none binds
# nothing), enough for `--gpus=1` to be granted.
touch "$WORK/fake-nvidia0"
printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s\n' "$HOST" "$WORK/fake-nvidia0" > "$WORK/gres.conf"

# ---- 3. daemons (by hand, no systemd); stopped by PID on any exit
MUNGE_SOCK="$WORK/munge/munge.socket"
stop_daemons() {
    rc=$?
    for f in "$WORK"/slurmd-*.pid "$WORK/slurmctld.pid" "$WORK/munge/munged.pid"; do
        if [[ -s "$f" ]]; then
            pid=$(cat "$f")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    log "daemons stopped; logs in $WORK/logs; lane took $(( $(date +%s) - start )) s; exit $rc"
    exit $rc
}
trap stop_daemons EXIT

KEY="$WORK/munge/munge.key"  # a key of our own: /etc/munge is left alone
dd if=/dev/urandom of="$KEY" bs=1 count=1024 status=none
chmod 755 "$WORK" "$WORK/munge"  # the socket must be reachable
chmod 400 "$KEY"
log "starting munged"
munged --force --socket="$MUNGE_SOCK" --pid-file="$WORK/munge/munged.pid" \
    --log-file="$WORK/logs/munged.log" --seed-file="$WORK/munge/munge.seed" --key-file="$KEY"
# slurm's auth/munge plugin finds the socket through this option
sed -i "s|^AuthType=auth/munge|AuthType=auth/munge\nAuthInfo=socket=$MUNGE_SOCK|" "$SLURM_CONF"
timeout 10 munge -n --socket="$MUNGE_SOCK" | timeout 10 unmunge --socket="$MUNGE_SOCK" >/dev/null

log "starting slurmctld and 3 slurmd (host $HOST, $CPUS CPUs, ${MEM_MB} MB, 1 fake GPU; $NODE_A, $NODE_B)"
slurmctld -f "$SLURM_CONF" -i
for node in "$HOST" "$NODE_A" "$NODE_B"; do slurmd -f "$SLURM_CONF" -N "$node"; done
for _ in $(seq 60); do
    states=$(sinfo -h -N -o %T 2>/dev/null | sort -u | tr '\n' ' ' || true)
    [[ $states == "idle " ]] && break
    sleep 1
done
[[ $states == "idle " ]] || { log "nodes not idle (states '$states')"; tail -n 20 "$WORK"/logs/*.log; exit 1; }
sinfo -N -o "%N %T %c %m %G"

# snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable but a few before its
# inner `srun`, SLURM_CONF included; on a real cluster slurm.conf sits at the default path.
# Here a tiny srun shim on PATH puts our config back (nothing under /etc is touched).
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexport SLURM_CONF=%s\nexec %s "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$WORK/bin/srun"
chmod +x "$WORK/bin/srun"
export PATH="$WORK/bin:$PATH"

# ---- 4. the workflow through the SLURM profile, and its checks (tests/test_slurm.py)
log "running tests/test_slurm.py"
cd "$ROOT"
if [[ -f .venv/bin/activate && -z "${VIRTUAL_ENV:-}" ]]; then . .venv/bin/activate; fi
export BIGS_SLURM_LANE_DIR="$WORK"
python -m pytest -m slurm tests/test_slurm.py -q -rA -p no:cacheprovider
log "SLURM lane passed"
