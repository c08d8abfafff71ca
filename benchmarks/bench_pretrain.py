"""Training-step and data-loader throughput on the device present; prints figures, asserts nothing.

    python benchmarks/bench_pretrain.py                      # tiny + paper size, CPU or the GPU
    python benchmarks/bench_pretrain.py --sizes paper --batch 131 --precision bf16 --steps 20   # on a GPU
    python benchmarks/bench_pretrain.py --smoke              # tiny only, a few steps (CI)

For each size: tokens/s of one optimizer step — bigs.train.step.train_step, the step the trainer
runs (forward + backward over the micro-batch, the token-weighted loss, clipping, AdamW with the
trainer's groups), on the trainer's model and batches (bigs.data.stream.TrainStream) — model-FLOPs
utilisation where the device's peak is known, and the projected wall time of the paper recipe
(100k steps × global batch 1048 × 128 tokens) on this one device. Then the data loader alone,
which must never be the bottleneck.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bigs.data.format import write_shard
from bigs.data.stream import TrainStream
from bigs.pretrain import build_model, mlm_gather, parse_args
from bigs.train.metrics import flops_per_token, peak_flops
from bigs.train.optim import build_optimizer
from bigs.train.runtime import Runtime, setup
from bigs.train.step import loss_weights, train_step

SIZES = {  # name: trainer flags
    "tiny": ["--n_layers", "2", "--hidden_size", "128", "--intermediate_size", "256"],
    "paper": [],  # the trainer's defaults: 23 layers, H 1024, I 3072 (the seed's recipe)
}
RECIPE_TOKENS = 100_000 * 1048 * 128  # the paper: 100k steps × global batch 1048 × L 128


def synthetic_shard(path: Path, n: int, L: int = 128, P: int = 20, seed: int = 0) -> None:
    """Random ids with 15 % masked positions, in the hdf5 layout (bigs/data/format.py)."""
    r = np.random.default_rng(seed)
    ids = r.integers(1000, 30000, size=(n, L), dtype=np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    pos = np.sort(np.stack([r.choice(np.arange(1, L - 1), P, replace=False) for _ in range(n)]), axis=1).astype(
        np.int32
    )
    mids = np.take_along_axis(ids, pos, 1)
    np.put_along_axis(ids, pos, 103, 1)
    write_shard(
        path,
        input_ids=ids,
        input_mask=np.ones((n, L), np.int8),
        segment_ids=np.zeros((n, L), np.int8),
        masked_lm_positions=pos,
        masked_lm_ids=mids,
    )


def trainer_args(*flags: str) -> argparse.Namespace:
    """The trainer's parsed flags (defaults = the paper recipe; L 128 unless a flag says otherwise)."""
    return parse_args(["--output_dir", "-", "--dataset_path", "-", "--max_seq_length", "128", *flags])


def measure(step, steps: int, device: torch.device, warmup: int = 2) -> dict:
    """Time `step()` (returns a device loss): the first call alone (allocator, kernels, compilation),
    then `warmup` more, then `steps` timed calls ending in one host sync."""
    t = time.perf_counter()
    step().item()
    first = time.perf_counter() - t
    for _ in range(warmup - 1):
        step().item()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss = loss.item()  # waits for the queued steps
    return {"first_step_s": first, "s_per_step": (time.perf_counter() - t) / steps, "loss": loss}


def trainer_step(args, rt: Runtime, batches, forward=None, model=None):
    """A closure running the trainer's train_step on the next micro-batch of `batches` (one per step),
    with the trainer's model (or `model`) and optimizer."""
    model = model if model is not None else build_model(args, rt.kind).to(rt.device)
    forward = forward if forward is not None else model
    opt = build_optimizer(
        model, lr=args.learning_rate, weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon, adafactor=args.adafactor,
    )  # fmt: skip
    it = iter(batches)

    def step():
        micro = [next(it)]
        loss, _ = train_step(
            forward, micro, opt, rt=rt, weights=loss_weights(micro, rt), max_grad_norm=args.max_grad_norm
        )
        return loss

    return step


def batch_stream(args, rt: Runtime, shard: Path):
    """The trainer's batches from one shard, moved to the device in advance (the loader is timed apart)."""
    stream = TrainStream(
        [str(shard)], per_device=args.per_device_train_batch_size, fixed_shape=mlm_gather(args, rt.kind) == "positions"
    )
    for b in stream:
        yield rt.to_device(b)


def bench_step(size: str, batch: int, steps: int, rt: Runtime, shard: Path) -> None:
    args = trainer_args(*SIZES[size], "--per_device_train_batch_size", str(batch))
    torch.manual_seed(0)
    model = build_model(args, rt.kind).to(rt.device)
    r = measure(trainer_step(args, rt, batch_stream(args, rt, shard), model=model), steps, rt.device)
    tps = batch * args.max_seq_length / r["s_per_step"]
    peak = peak_flops(rt.device, rt.bf16)
    mfu = f"{tps * flops_per_token(model, args.max_seq_length) / peak:6.1%}" if peak else "   n/a"
    n = sum(p.numel() for p in model.parameters())
    print(
        f"{size:5s} {args.n_layers:2d}L H{args.hidden_size:<5d} I{args.intermediate_size:<5d} {n / 1e6:7.1f}M params | "
        f"batch {batch:4d} × 128 | {r['s_per_step'] * 1e3:8.1f} ms/step | {tps:10,.0f} tokens/s | MFU {mfu} | "
        f"paper recipe on this one device: {RECIPE_TOKENS / tps / 3600:10,.1f} h"
    )


def bench_loader(shards: list[Path], batch: int, seconds: float = 3.0) -> float:
    stream = iter(TrainStream([str(s) for s in shards], per_device=batch))
    next(stream)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        next(stream)
        n += 1
    tps = n * batch * 128 / (time.perf_counter() - t)
    print(f"data loader alone (hdf5 shards, batch {batch}): {tps:12,.0f} tokens/s")
    return tps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "paper"], choices=list(SIZES))
    p.add_argument(
        "--batch", type=int, default=None, help="per-step batch (default: 32 tiny / 4 paper on CPU, 131 on GPU)"
    )
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"], help="default: bf16 on CUDA, else fp32")
    p.add_argument("--smoke", action="store_true", help="tiny size, 3 steps, a short loader run (seconds)")
    a = p.parse_args()
    if a.smoke:
        a.sizes, a.steps = ["tiny"], 3
    rt = setup(a.device, bf16=None if a.precision is None else a.precision == "bf16")
    where = torch.cuda.get_device_name(rt.device) if rt.kind == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {rt.device} ({where}), {'bf16' if rt.bf16 else 'fp32'}")
    with tempfile.TemporaryDirectory() as d:
        shards = [Path(d) / f"train_shard_{k}.hdf5" for k in range(2)]
        for k, s in enumerate(shards):
            synthetic_shard(s, 512 if a.smoke else 2048, seed=k)
        for size in a.sizes:
            batch = a.batch or (131 if rt.kind == "cuda" else (32 if size == "tiny" else 4))
            bench_step(size, batch, a.steps, rt, shards[0])
        bench_loader(shards, 131, seconds=1.0 if a.smoke else 3.0)


if __name__ == "__main__":
    main()
