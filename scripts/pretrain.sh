#!/usr/bin/env bash
# Launch `python -m bigs.pretrain` for one workflow run (rules/pretrain.smk).
#   usage: pretrain.sh OUTPUT_DIR SETTINGS_HASH NGPUS THREADS BIGS_PRETRAIN_FLAGS...
# - Resume: Snakemake reruns a job both after a failure/preemption (same settings: continue from
#   the last checkpoint, --resume auto) and after a settings change (start over, --resume never;
#   bigs.pretrain then moves the old checkpoints aside). OUTPUT_DIR/.workflow-settings tells which.
# - NGPUS (GPUs per node) > 1: one process per GPU via torchrun (DDP).
# - Several nodes (a SLURM job of more than one node, resource `nodes`): one torchrun per node
#   started by `srun`, a c10d rendezvous on the job's first node (its NodeAddr, port from the job
#   id or BIGS_RDZV_PORT), NGPUS (or 1 on CPU) processes per node. OUTPUT_DIR must be on a shared
#   file system (bigs.pretrain checks). The node count and list come from `scontrol show job`:
#   the Snakemake SLURM plugin runs the job inside a one-node, one-task step whose SLURM_* variables
#   describe that step, not the job: they are dropped (as the plugin does) so that srun asks the
#   controller for the job's allocation, and `--overlap` lets our step start beside that one.
#   BIGS_LAUNCH_DRY_RUN=1 prints the srun line instead of running it (tests).
# - final/metrics.jsonl: a copy of the run's metrics next to the model, the file the workflow
#   declares; the live OUTPUT_DIR/metrics.jsonl is never deleted by Snakemake, so a resumed run
#   keeps its whole history.
# Exit code: bigs.pretrain's (3 = preempted after a checkpoint: rerun/requeue resumes; 5 = a peer
# node was lost) for one process; torchrun's (1 on any worker failure) otherwise.
set -euo pipefail
out=$1 settings=$2 ngpus=$3 threads=$4
shift 4
nnodes=1
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    job=$(scontrol show job "$SLURM_JOB_ID" -o 2>/dev/null || true)
    nnodes=$(sed -n 's/.* NumNodes=\([0-9]*\).*/\1/p' <<< "$job")
    nodelist=$(sed -n 's/.* NodeList=\([^ ]*\).*/\1/p' <<< "$job")
    nnodes=${nnodes:-1}
fi

mkdir -p "$out"
resume=never
if [[ -f "$out/.workflow-settings" && "$(cat "$out/.workflow-settings")" == "$settings" ]]; then
    resume=auto
fi
echo "$settings" > "$out/.workflow-settings"
echo "pretrain.sh: output_dir=$out nodes=$nnodes gpus/node=$ngpus threads=$threads resume=$resume"

if (( nnodes > 1 )); then
    head=$(scontrol show hostnames "$nodelist" | head -n1)
    addr=$(scontrol show node "$head" -o | sed -n 's/.* NodeAddr=\([^ ]*\).*/\1/p')
    port=${BIGS_RDZV_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}
    nproc=$(( ngpus > 0 ? ngpus : 1 ))
    export OMP_NUM_THREADS=$(( threads / nproc > 0 ? threads / nproc : 1 ))
    cmd=(srun --jobid="$SLURM_JOB_ID" --overlap --kill-on-bad-exit=1 --nodes="$nnodes" --ntasks="$nnodes" --ntasks-per-node=1
         --cpus-per-task="$threads")
    if (( ngpus > 0 )); then cmd+=(--gpus-per-node="$ngpus"); fi
    cmd+=(python -m torch.distributed.run --nnodes="$nnodes" --nproc_per_node="$nproc" --max-restarts=0
          --rdzv_backend=c10d --rdzv_endpoint="${addr:-$head}:$port" --rdzv_id="slurm-${SLURM_JOB_ID}"
          -m bigs.pretrain "$@" --resume "$resume")
    echo "pretrain.sh: ${cmd[*]}"
    if [[ -n "${BIGS_LAUNCH_DRY_RUN:-}" ]]; then exit 0; fi
    step_env=()
    for v in $(compgen -e); do
        if [[ ($v == SLURM_* || $v == SRUN_* || $v == SBATCH_*) && $v != SLURM_JOB_ID && $v != SLURM_CONF ]]; then
            step_env+=(-u "$v")
        fi
    done
    env "${step_env[@]}" "${cmd[@]}"
elif (( ngpus > 1 )); then
    export OMP_NUM_THREADS=$(( threads / ngpus > 0 ? threads / ngpus : 1 ))
    torchrun --standalone --nproc_per_node="$ngpus" -m bigs.pretrain "$@" --resume "$resume"
else
    export OMP_NUM_THREADS=$threads
    python -m bigs.pretrain "$@" --resume "$resume"
fi
cp "$out/metrics.jsonl" "$out/final/metrics.jsonl.tmp"
mv "$out/final/metrics.jsonl.tmp" "$out/final/metrics.jsonl"
