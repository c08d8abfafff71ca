"""What both training loops (bigs.pretrain, bigs.finetune) share, one module per responsibility:

    runtime      device and precision (TF32, bf16 autocast), seeding, the process group, Σ over ranks
    distributed  multi-node start-up checks (shared output_dir, same checkpoint), a lost peer -> exit 5
    signals      StopFlag: SIGTERM / SIGUSR1 / a first Ctrl-C -> finish the step, checkpoint, exit 3
    schedule     learning-rate schedules (warmup, cosine / linear / constant)
    optim        AdamW with the original's groups, or optax.adafactor's defaults (adafactor)
    adafactor    optax.adafactor in PyTorch (the original's --adafactor)
    flags        argparse value types both CLIs use
    warmstart    a new run from a model's weights (--model_name_or_path): longer lengths, hub models
    xla_cpu      several XLA:CPU devices with working collectives: the TPU path on a CPU
    step         train_step: the one optimizer step both loops and every benchmark run
    checkpoint   TrainState, the checkpoint format, RNG state, the model files a run publishes
    rundir       the output dir: lock, resume policy, metrics truncation
    metrics      metrics.jsonl (+ TensorBoard), the log window, progress bar, MFU

A loop never imports another loop; nothing here imports one (tests/test_structure.py).
"""
