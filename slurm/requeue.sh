# Shared by the distgan sbatch templates (sourced, not run): run the training step in the
# background, forward USR1/TERM to the trainer, and requeue the job after its clean stop.
#
# Bash runs a trap only after the foreground command returns, hence `srun … &` + `wait`.
# Forwarding goes through a file, $DISTGAN_STOP_REQUEST, that the trainer polls every
# train.stop_check_every steps: signalling srun would abort the step at once, and signalling
# accelerate's launcher makes it SIGKILL its workers 30 s later, possibly mid-checkpoint. The
# ranks agree on a step, write one checkpoint, exit 75 and write $DISTGAN_STOPPED, which is
# what tells this script to requeue (the trainer also stops so at train.time_limit). The batch
# script runs on the job's first node, where rank 0 runs, so node-local files suffice.

export DISTGAN_STOP_REQUEST=${TMPDIR:-/tmp}/distgan-$SLURM_JOB_ID.stop-request
export DISTGAN_STOPPED=${TMPDIR:-/tmp}/distgan-$SLURM_JOB_ID.stopped
rm -f "$DISTGAN_STOP_REQUEST" "$DISTGAN_STOPPED"

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
