#!/usr/bin/env bash
# Launch `python -m bigs.pretrain` for one workflow run (rules/pretrain.smk).
#   usage: pretrain.sh OUTPUT_DIR SETTINGS_HASH NGPUS THREADS BIGS_PRETRAIN_FLAGS...
# - Resume: Snakemake reruns a job both after a failure/preemption (same settings: continue from
#   the last checkpoint, --resume auto) and after a settings change (start over, --resume never;
#   bigs.pretrain then moves the old checkpoints aside). OUTPUT_DIR/.workflow-settings tells which.
# - NGPUS > 1 (the job's `gpu` resource): one process per GPU via torchrun (DDP).
# - final/metrics.jsonl: a copy of the run's metrics next to the model, the file the workflow
#   declares; the live OUTPUT_DIR/metrics.jsonl is never deleted by Snakemake, so a resumed run
#   keeps its whole history.
# Exit code is bigs.pretrain's: 3 = preempted after a checkpoint (rerun/requeue resumes).
set -euo pipefail
out=$1 settings=$2 ngpus=$3 threads=$4
shift 4

mkdir -p "$out"
resume=never
if [[ -f "$out/.workflow-settings" && "$(cat "$out/.workflow-settings")" == "$settings" ]]; then
    resume=auto
fi
echo "$settings" > "$out/.workflow-settings"
echo "pretrain.sh: output_dir=$out gpus=$ngpus threads=$threads resume=$resume"

if (( ngpus > 1 )); then
    export OMP_NUM_THREADS=$(( threads / ngpus > 0 ? threads / ngpus : 1 ))
    torchrun --standalone --nproc_per_node="$ngpus" -m bigs.pretrain "$@" --resume "$resume"
else
    export OMP_NUM_THREADS=$threads
    python -m bigs.pretrain "$@" --resume "$resume"
fi
cp "$out/metrics.jsonl" "$out/final/metrics.jsonl.tmp"
mv "$out/final/metrics.jsonl.tmp" "$out/final/metrics.jsonl"
