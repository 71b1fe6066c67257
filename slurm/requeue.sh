# Shared by the distgan sbatch templates (sourced, not run): run the training step in the
# background, forward USR1/TERM to the trainer, and requeue the job after its clean stop.
#
# Bash runs a trap only after the foreground command returns, hence `srun … &` + `wait`.
# Forwarding goes through a file, $DISTGAN_STOP_REQUEST, that the trainer polls every
# train.stop_check_every steps: signalling srun would abort the step at once, and signalling
# accelerate's launcher makes it SIGKILL its workers 30 s later, possibly mid-checkpoint. The
# ranks agree on a step, write one checkpoint, exit 75 and write $DISTGAN_STOPPED, which is
# what tells this script to requeue (the trainer also stops so at train.time_limit). The batch
# script runs on the job's first node, where rank 0 runs, so node-local files suffice. They lie
# in a private directory of this job (mode 0700, an unpredictable name): on a shared /tmp,
# another user could create a predictable file first and stop every requeue.

DISTGAN_JOB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/distgan-$SLURM_JOB_ID.XXXXXXXX") || exit 1
trap 'rm -rf "$DISTGAN_JOB_DIR"' EXIT
export DISTGAN_STOP_REQUEST=$DISTGAN_JOB_DIR/stop-request
export DISTGAN_STOPPED=$DISTGAN_JOB_DIR/stopped

_distgan_forward() {
    echo "distgan-slurm: $1 received, asking the trainer to checkpoint and stop"
    echo "$1 (pre-emption)" > "$DISTGAN_STOP_REQUEST"
}

run_and_requeue() {
    trap '_distgan_forward USR1' USR1
    trap '_distgan_forward TERM' TERM
    "$@" &
    local child=$! rc
    while :; do
        wait "$child"
        rc=$?
        kill -0 "$child" 2>/dev/null || break   # still running: the wait was cut by a trap
    done
    rm -f "$DISTGAN_STOP_REQUEST"
    if [ -e "$DISTGAN_STOPPED" ]; then
        echo "distgan-slurm: clean stop ($(cat "$DISTGAN_STOPPED")); requeueing job $SLURM_JOB_ID"
        rm -f "$DISTGAN_STOPPED"
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
    echo "distgan-slurm: training exited with $rc"
    exit "$rc"
}
