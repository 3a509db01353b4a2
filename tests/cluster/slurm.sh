#!/usr/bin/env bash
# A single-node SLURM for the `slurm` tests: `tests/cluster/slurm.sh start|stop|status`.
#
# start: when no SLURM of ours answers, installs Debian's slurm-wlm and munge (as root, with
#   apt-get) if they are missing, writes a one-node slurm.conf (this machine's host name, core
#   count and memory) into $LIGHTHEAD_SLURM_DIR (default /tmp/lighthead-slurm), starts munged
#   (its own socket there), slurmctld and slurmd with that config, and waits until `sinfo` shows
#   the node idle. It writes DIR/env (`export SLURM_CONF=DIR/slurm.conf`, which sbatch, squeue
#   and scancel need; the tests read it) and prints that line. Exit 1 with one line saying why
#   when it cannot start SLURM (not root, no apt-get, a daemon that does not come up).
# stop: stops exactly the daemons `start` recorded in DIR/pids, then removes DIR.
# status: exit 0 when the node answers.
set -euo pipefail

DIR=${LIGHTHEAD_SLURM_DIR:-/tmp/lighthead-slurm}
CTLD_PORT=${LIGHTHEAD_SLURM_PORT:-6817}  # slurmd listens on the next port
CONF=$DIR/slurm.conf
PIDS=$DIR/pids

die() { echo "slurm.sh: cannot start SLURM: $*" >&2; exit 1; }

answers() {  # the node is up (idle, or busy with jobs) under our config
    [ -f "$CONF" ] || return 1
    local state
    state=$(SLURM_CONF=$CONF timeout 10 sinfo -h -N -o %t 2>/dev/null | head -n1) || return 1
    case "$state" in idle|mix|alloc|comp) return 0 ;; *) return 1 ;; esac
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "${missing[*]} not installed and not root (install them, or run as root)"
    command -v apt-get >/dev/null || die "${missing[*]} not installed and no apt-get on this machine"
    # Quiet; services are not started by the packages' scripts where policy-rc.d forbids it,
    # and we start our own daemons below in any case.
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${missing[@]}" >"${TMPDIR:-/tmp}/lighthead-slurm-apt.log" 2>&1 \
        || DEBIAN_FRONTEND=noninteractive timeout 600 sh -c 'apt-get update -qq && apt-get install -y -qq "$@"' sh "${missing[@]}" \
            >>"${TMPDIR:-/tmp}/lighthead-slurm-apt.log" 2>&1 \
        || die "apt-get install ${missing[*]} failed (see ${TMPDIR:-/tmp}/lighthead-slurm-apt.log)"
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mem=$((mem > 1024 ? mem - 512 : mem))  # leave the daemons some room
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    chmod 700 "$DIR"
    cat >"$CONF" <<EOF
# One-node SLURM for the lighthead tests (tests/cluster/slurm.sh); everything lives in $DIR.
ClusterName=lighthead
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Every ended job, with its state (COMPLETED, CANCELLED, TIMEOUT), for the tests to read.
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
# A job past its time limit is killed 2 s after its SIGTERM (the default waits 30 s).
KillWait=2
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    echo "export SLURM_CONF=$CONF" >"$DIR/env"
}

start_daemon() {  # name, command...: run in the background in its own session, record the PID
    local name=$1
    shift
    setsid "$@" >"$DIR/log/$name.out" 2>&1 </dev/null &
    echo "$name $!" >>"$PIDS"
}

alive() {  # name: the recorded daemon still runs
    local pid
    pid=$(awk -v n="$1" '$1 == n {print $2}' "$PIDS" 2>/dev/null)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start() {
    if answers; then
        echo "slurm.sh: SLURM already running ($CONF)" >&2
        cat "$DIR/env"
        return 0
    fi
    [ -f "$PIDS" ] && stop_recorded  # daemons of an earlier start that no longer answer
    install_packages
    [ "$(id -u)" -eq 0 ] || die "the daemons run as root here; run as root"
    [ -r /etc/munge/munge.key ] || die "no munge key at /etc/munge/munge.key (install munge)"
    rm -rf "$DIR"
    mkdir -p "$DIR"
    write_conf
    : >"$PIDS"
    start_daemon munged munged --foreground --force --socket="$DIR/munge.socket" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munged.seed"
    for _ in $(seq 50); do [ -S "$DIR/munge.socket" ] && break; alive munged || break; sleep 0.2; done
    [ -S "$DIR/munge.socket" ] || { stop_recorded; die "munged did not start: $(tail -n1 "$DIR/log/munged.log" 2>/dev/null)"; }
    start_daemon slurmctld slurmctld -D -f "$CONF"
    start_daemon slurmd slurmd -D -f "$CONF"
    for _ in $(seq 120); do
        answers && break
        for d in slurmctld slurmd; do
            alive $d || { local why; why=$(tail -n1 "$DIR/log/$d.log" "$DIR/log/$d.out" 2>/dev/null | grep -v '^==' | grep . | tail -n1)
                          stop_recorded; die "$d exited: $why"; }
        done
        sleep 0.5
    done
    answers || { stop_recorded; die "the node is not idle after 60 s (see $DIR/log)"; }
    echo "slurm.sh: SLURM $(SLURM_CONF=$CONF sinfo -V | awk '{print $2}') up, node $(hostname -s); for sbatch/squeue/scancel:" >&2
    cat "$DIR/env"
}

stop_recorded() {  # the daemons in $PIDS, slurmd first; SIGTERM, then SIGKILL after 10 s
    [ -f "$PIDS" ] || return 0
    local name pid
    # Jobs still running on the node go first: their processes are slurmd's children.
    if alive slurmctld && [ -f "$CONF" ]; then
        SLURM_CONF=$CONF timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 25); do
            [ -z "$(SLURM_CONF=$CONF timeout 10 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.4
        done
    fi
    for name in slurmd slurmctld munged; do
        pid=$(awk -v n="$name" '$1 == n {print $2}' "$PIDS")
        [ -n "$pid" ] || continue
        # Only our daemon: a recorded PID that another program reuses now is left alone.
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || continue
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -f "$PIDS"
}

stop() {
    if [ ! -f "$PIDS" ]; then
        echo "slurm.sh: nothing to stop (no $PIDS)" >&2
        return 0
    fi
    stop_recorded
    rm -rf "$DIR"
    echo "slurm.sh: stopped" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
