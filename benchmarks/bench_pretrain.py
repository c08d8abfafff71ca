"""Training-step and data-loader throughput on the device present; prints figures, asserts nothing.

    python benchmarks/bench_pretrain.py                      # tiny + paper size, CPU or the GPU
    python benchmarks/bench_pretrain.py --sizes paper --batch 131 --precision bf16 --steps 20   # on a GPU

For each size: tokens/s of one optimizer step (forward + backward + AdamW, the trainer's own
model, optimizer groups and batches), model-FLOPs utilisation where the device's peak is known,
and the projected wall time of the paper recipe (100k steps × global batch 1048 × 128 tokens) on
this one device. Then the data loader alone (bigs.pretrain.TrainStream over hdf5 shards), which
must never be the bottleneck.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from bigs.data.format import write_shard
from bigs.pretrain import TrainStream, build_model, flops_per_token, param_groups, peak_flops

SIZES = {  # name: (layers, hidden, intermediate)
    "tiny": (2, 128, 256),
    "paper": (23, 1024, 3072),
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


def bench_step(size: str, batch: int, steps: int, device: torch.device, precision: str, shard: Path) -> None:
    layers, H, I = SIZES[size]
    args = SimpleNamespace(
        model_type="s4-bert",
        hidden_size=H,
        n_layers=layers,
        intermediate_size=I,
        hidden_dropout_prob=0.1,
        dropout_mask="shared",
        max_seq_length=128,
        num_ssm=64,
        ssm_init="hippo",
    )
    torch.manual_seed(0)
    model = build_model(args, device.type).to(device)
    opt = torch.optim.AdamW(param_groups(model, 0.05, verbose=False), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    batches = iter(TrainStream([str(shard)], batch, 0, 1, seed=0))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        b = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with autocast:
            loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):  # warm-up (allocator, kernels)
        step().item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    dt = (time.perf_counter() - t) / steps
    tps = batch * 128 / dt
    fpt = flops_per_token(model, args)
    peak = peak_flops(device, precision)
    mfu = f"{tps * fpt / peak:6.1%}" if peak else "   n/a"
    n = sum(p.numel() for p in model.parameters())
    print(
        f"{size:5s} {layers:2d}L H{H:<5d} I{I:<5d} {n / 1e6:7.1f}M params | batch {batch:4d} × 128 | "
        f"{dt * 1e3:8.1f} ms/step | {tps:10,.0f} tokens/s | MFU {mfu} | "
        f"paper recipe on this one device: {RECIPE_TOKENS / tps / 3600:10,.1f} h"
    )


def bench_loader(shards: list[Path], batch: int, seconds: float = 3.0) -> float:
    stream = iter(TrainStream([str(s) for s in shards], batch, 0, 1, seed=0))
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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"])
    a = p.parse_args()
    device = torch.device(a.device)
    precision = a.precision or ("bf16" if device.type == "cuda" else "fp32")
    print(
        f"torch {torch.__version__}, device {device} "
        f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), {precision}"
    )
    with tempfile.TemporaryDirectory() as d:
        shards = [Path(d) / f"train_shard_{k}.hdf5" for k in range(2)]
        for k, s in enumerate(shards):
            synthetic_shard(s, 2048, seed=k)
        for size in a.sizes:
            batch = a.batch or (131 if device.type == "cuda" else (32 if size == "tiny" else 4))
            bench_step(size, batch, a.steps, device, precision, shards[0])
        bench_loader(shards, 131)


if __name__ == "__main__":
    main()
