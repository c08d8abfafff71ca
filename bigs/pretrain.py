"""BiGS masked-LM pretraining, one flat loop: `python -m bigs.pretrain --output_dir D --dataset_path P ...`.

Takes the seed's command line as is (the original BiGS pre-training README, jxiw/BiGS) with
`python -m bigs.pretrain` in place of `python pretrain.py`, plus device, precision, resume and
logging flags. Runs on
  - CPU:   python -m bigs.pretrain ...            (several processes: torchrun, gloo)
  - CUDA:  torchrun --nproc_per_node=8 -m bigs.pretrain ... --precision bf16   (NCCL DDP)
  - TPU:   PJRT_DEVICE=TPU python -m bigs.pretrain ... --device xla  (torch_xla.launch, all cores)
`--dataset_path` is a local directory or gs://bucket/prefix (shards are streamed: fetched,
used, deleted; the next one is prefetched in the background).

Reading order: flags -> pure helpers (lr schedule, batches, checkpoints) -> main(): device,
data, model, optimizer, resume, loop. Device back-ends differ only in lines marked `# [xla]`,
`# [cuda]` or `# [ddp]`.

Exit codes: 0 done, 2 bad input, 3 stopped by SIGTERM/SIGUSR1 after writing a checkpoint
(requeue the job: it resumes), 4 non-finite loss (names the step and the last good checkpoint),
5 a peer rank or node died or hung past --dist_timeout (rerun on every node: it resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from bigs.errors import BigsError, atomic_dir, atomic_path, cli_main

EXIT_PREEMPTED = 3
EXIT_NONFINITE = 4
EXIT_PEER_LOST = 5


# ----------------------------------------------------------------------------- flags
def str2bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "y"):
        return True
    if s.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def positive(kind):
    def parse(s):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bigs.pretrain", description=__doc__.split("\n")[0])
    # --- the original script's flags (REFERENCE.md §1), same names and meaning
    p.add_argument("--output_dir", required=True)
    p.add_argument("--dataset_path", required=True, help="dir or gs://bucket/prefix with *train*/*test* hdf5 shards")
    p.add_argument("--model_type", default="s4-bert", choices=["s4-bert", "bert"])
    p.add_argument("--overwrite_output_dir", action="store_true",
                   help="allow a fresh start in a non-empty output_dir; with --resume auto a checkpoint there is still resumed")
    p.add_argument("--max_seq_length", type=positive(int), default=128)
    p.add_argument("--per_device_train_batch_size", type=positive(int), default=131)
    p.add_argument("--per_device_eval_batch_size", type=positive(int), default=131)
    p.add_argument("--learning_rate", type=positive(float), default=6e-4)
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.98)
    p.add_argument("--adam_epsilon", type=float, default=1e-6)
    p.add_argument("--adafactor", type=str2bool, nargs="?", const=True, default=False)
    p.add_argument("--max_train_shards", type=positive(int), default=3000,
                   help="stop after this many shard visits (over epochs), as the original; the last shard finishes")
    p.add_argument("--logging_steps", type=positive(int), default=100)
    p.add_argument("--save_steps", type=positive(int), default=5000)
    p.add_argument("--eval_steps", type=positive(int), default=8000)
    p.add_argument("--warmup_steps", type=int, default=2000)
    p.add_argument("--num_total_train_steps", type=positive(int), default=100000)
    p.add_argument("--schedule_type", default="cosine", choices=["cosine", "linear", "constant"])
    p.add_argument("--cosine_schedule_alpha", type=float, default=0.1)
    p.add_argument("--n_layers", type=positive(int), default=23)
    p.add_argument("--hidden_size", type=positive(int), default=1024)
    p.add_argument("--intermediate_size", type=positive(int), default=3072)
    p.add_argument("--hidden_dropout_prob", type=float, default=0.1)
    p.add_argument("--dropout_mask", default="shared", choices=["shared", "per_example"],
                   help="shared: one embedding-dropout mask per micro-batch, as the original (REFERENCE.md §5a)")
    p.add_argument("--num_ssm", type=positive(int), default=64)
    p.add_argument("--max_predictions_per_seq", type=positive(int), default=20)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num_workers", type=int, default=4, help="accepted for compatibility; shards load in a background thread")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="original flag; bfloat16 = --precision bf16")
    p.add_argument("--do_train", type=str2bool, nargs="?", const=True, default=True)
    p.add_argument("--do_eval", type=str2bool, nargs="?", const=True, default=True)
    # --- ours
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "xla"])
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"], help="bf16 = autocast (default: from --dtype)")
    p.add_argument("--global_batch_size", type=positive(int), default=None,
                   help="sequences per optimizer step over all devices (the paper: 1048); accumulation = this / "
                        "(per-device batch × world size), derived at start-up")
    p.add_argument("--gradient_accumulation_steps", type=positive(int), default=None,
                   help="micro-batches per optimizer step (default 1, or derived from --global_batch_size)")
    p.add_argument("--max_grad_norm", type=float, default=0.0, help="clip gradients to this norm; 0 = off (the original)")
    p.add_argument("--ssm_init", default="hippo", choices=["hippo", "lin", "inv"])
    p.add_argument("--resume", default="auto", help="auto (latest checkpoint in output_dir), never, or a checkpoint dir")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA/CPU)")
    p.add_argument("--mlm_gather", default="auto", choices=["auto", "boolean", "positions"],
                   help="how the MLM head finds the masked tokens: boolean = labels (B, L) != -100 (data-dependent "
                        "shape), positions = gather at masked_positions (B, P) (fixed shape); auto = positions on XLA, "
                        "boolean elsewhere")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events to output_dir/tb")
    p.add_argument("--eval_batches", type=int, default=0, help="max test batches per evaluation (0 = all)")
    p.add_argument("--save_total_limit", type=int, default=2, help="keep the newest K checkpoint-* dirs (0 = all)")
    p.add_argument("--shard_cache_dir", default=None, help="where gs:// shards are staged (default output_dir/.shard-cache)")
    p.add_argument("--dist_timeout", type=positive(float), default=1800,
                   help="seconds a collective waits for the other ranks (several processes/nodes) before the run "
                        f"stops with exit {EXIT_PEER_LOST} naming the lost peer; rerun to resume")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.precision is None:
        args.precision = "bf16" if args.dtype == "bfloat16" else "fp32"
    if args.max_predictions_per_seq >= args.max_seq_length:
        raise BigsError(f"--max_predictions_per_seq: {args.max_predictions_per_seq} must be < --max_seq_length {args.max_seq_length}")
    if args.warmup_steps < 0 or args.warmup_steps > args.num_total_train_steps:
        raise BigsError(f"--warmup_steps: {args.warmup_steps} must be in [0, --num_total_train_steps]")
    if not args.do_train:
        raise BigsError("--do_train: false is not supported; use `python -m bigs.evaluate` to evaluate a checkpoint")
    return args


# ----------------------------------------------------------------------------- pure helpers
PAPER_GLOBAL_BATCH = 1048  # 8 TPU-v3 cores × 131 sequences (REFERENCE.md §1)


def accumulation_steps(args, world: int) -> int:
    """Micro-batches per optimizer step: --global_batch_size / (per-device batch × world), else the flag or 1."""
    if args.global_batch_size is None:
        return args.gradient_accumulation_steps or 1
    micro = args.per_device_train_batch_size * world
    acc, rest = divmod(args.global_batch_size, micro)
    if rest or acc == 0:
        raise BigsError(f"--global_batch_size: {args.global_batch_size} is not a multiple of --per_device_train_batch_size "
                        f"{args.per_device_train_batch_size} × {world} devices = {micro}; choose a per-device batch "
                        "that divides it")
    if args.gradient_accumulation_steps not in (None, acc):
        raise BigsError(f"--gradient_accumulation_steps: {args.gradient_accumulation_steps} conflicts with "
                        f"--global_batch_size {args.global_batch_size} = {args.per_device_train_batch_size} per device × "
                        f"{world} devices × {acc}; pass only one of the two")
    return acc


def is_paper_recipe(args) -> bool:
    """The paper's model and step count (23 layers, H 1024, 100k steps): its global batch is 1048."""
    return (args.n_layers, args.hidden_size, args.num_total_train_steps) == (23, 1024, 100_000)


def eval_cost_fraction(args, global_batch: int, world: int) -> float | None:
    """Compute of all in-run evaluations / training compute (a forward is ≈ 1/3 of forward + backward).

    None when evaluation is unbounded (--eval_batches 0 reads the whole test split).
    """
    if not args.eval_batches:
        return None
    T = args.num_total_train_steps
    n_evals = T // args.eval_steps + (T % args.eval_steps != 0)  # every eval_steps, and at the end
    eval_seqs = n_evals * args.eval_batches * args.per_device_eval_batch_size * world
    return eval_seqs / (3 * T * global_batch)


def lr_at(step: int, args) -> float:
    """Learning rate for optimizer update number `step` (0-based), as optax in the original.

    Linear warmup 0 -> lr over warmup_steps, then cosine to alpha*lr (REFERENCE.md §1),
    linear to 0, or constant.
    """
    lr, w, total = args.learning_rate, args.warmup_steps, args.num_total_train_steps
    if step < w:
        return lr * step / w
    t, T = step - w, max(total - w, 1)
    if args.schedule_type == "cosine":
        a = args.cosine_schedule_alpha
        return lr * ((1 - a) * 0.5 * (1 + math.cos(math.pi * min(t, T) / T)) + a)
    if args.schedule_type == "linear":
        return lr * max(0.0, 1 - t / T)
    return lr


def param_groups(model: torch.nn.Module, weight_decay: float, verbose: bool = True) -> list[dict]:
    """AdamW groups: no decay on biases and LayerNorm weights, decay on the rest (REFERENCE.md §1).

    A parameter may carry its own settings in `param._optim` (e.g. {"weight_decay": 0.0,
    "lr_multiplier": 0.1} on the SSM parameters, set where the model creates them; bigs/model.py).
    """
    hints = model.optim_hints() if hasattr(model, "optim_hints") else {}
    groups: dict[tuple, dict] = {}
    for name, prm in model.named_parameters():
        if not prm.requires_grad:
            continue
        no_decay = name.endswith("bias") or "LayerNorm" in name  # SSM A/log_step/D decay, as the original
        opt = hints.get(name, {})
        wd = opt.get("weight_decay", 0.0 if no_decay else weight_decay)
        mult = opt.get("lr_multiplier", 1.0)
        g = groups.setdefault((wd, mult), {"params": [], "weight_decay": wd, "lr_mult": mult})
        g["params"].append(prm)
    if verbose:
        for g in groups.values():
            n = sum(p.numel() for p in g["params"])
            print(f"optimizer group: weight_decay={g['weight_decay']} lr_mult={g['lr_mult']}: "
                  f"{len(g['params'])} tensors, {n:,} parameters")
    return list(groups.values())


def batch_from_arrays(arrays: dict, idx: np.ndarray, fixed_shape: bool = False) -> dict[str, torch.Tensor]:
    """One batch from a shard's numpy arrays (format.py layout), labels by REFERENCE.md §3.

    fixed_shape: labels (B, P) at `masked_positions` (B, P) instead of (B, L), so the BiGS head
    gathers exactly P rows per sequence and XLA sees no data-dependent shape (bigs/model.py).
    """
    from bigs.data.format import IGNORE_INDEX, mlm_labels

    ids = arrays["input_ids"][idx]
    pos, mids = arrays["masked_lm_positions"][idx], arrays["masked_lm_ids"][idx]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
    batch = {"input_ids": t(ids), "attention_mask": t(arrays["input_mask"][idx]), "token_type_ids": t(arrays["segment_ids"][idx])}
    if fixed_shape:
        batch["masked_positions"] = t(pos)
        batch["labels"] = t(np.where(pos != 0, mids, IGNORE_INDEX))
    else:
        batch["labels"] = t(mlm_labels(ids, pos, mids))
    return batch


class TrainStream:
    """This rank's micro-batches, resumable from (epoch, shard, offset).

    Shard order is a seeded permutation per epoch; within a shard a seeded permutation
    (RandomSampler) cut into global batches of `per_device * world * accumulation` samples
    (drop_last), each split into `accumulation` global micro-batches of which rank r takes slice r.
    So every sample is seen by one rank only, and a run's data is the same for any split of the
    same global batch over devices and accumulation steps.
    The stream ends after `max_visits` shard visits (epoch × shards + shard index), the original's
    --max_train_shards (REFERENCE.md §5d); None = endless.
    """

    def __init__(self, shards, per_device, rank, world, seed, cache_dir=None, position=None, fixed_shape=False,
                 max_seq_length=None, max_visits=None, accumulation=1):
        self.shards, self.per_device, self.rank, self.world, self.seed = shards, per_device, rank, world, seed
        self.accumulation = accumulation
        self.max_visits = max_visits
        self.fixed_shape, self.max_seq_length = fixed_shape, max_seq_length
        self.cache_dir = cache_dir
        self.epoch, self.shard_i, self.offset = position or (0, 0, 0)
        self.pool = ThreadPoolExecutor(max_workers=1)  # prefetches the next shard
        self._next = None

    def position(self) -> tuple[int, int, int]:
        return self.epoch, self.shard_i, self.offset

    def _order(self, epoch):
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))

    def _load(self, epoch, shard_i):
        from bigs.data.format import read_shard
        from bigs.data.storage import local_copy

        path = self.shards[self._order(epoch)[shard_i]]
        with local_copy(path, self.cache_dir) as local:  # gs://: download, read, delete (small TPU-VM disks)
            arrays = read_shard(local)
        L = arrays["input_ids"].shape[1]
        if self.max_seq_length is not None and L != self.max_seq_length:
            raise BigsError(f"{path}: input_ids: sequences of length {L}, but --max_seq_length is "
                            f"{self.max_seq_length} (the model's max_position_embeddings); train with "
                            f"--max_seq_length {L} or rebuild the samples")
        return path, arrays

    def visits(self) -> int:
        """Shards started before the current one (the original's shard counter)."""
        return self.epoch * len(self.shards) + self.shard_i

    def _advance(self, epoch, shard_i):
        shard_i += 1
        if shard_i == len(self.shards):
            return epoch + 1, 0
        return epoch, shard_i

    def __iter__(self):
        G = self.per_device * self.world  # one global micro-batch; `offset` counts them within a shard
        A = self.accumulation
        batches_this_epoch = int(self.shard_i > 0 or self.offset > 0)  # resumed mid-epoch: it had batches
        while self.max_visits is None or self.visits() < self.max_visits:
            if self._next is None:
                self._next = self.pool.submit(self._load, self.epoch, self.shard_i)
            path, arrays = self._next.result()
            self._next = self.pool.submit(self._load, *self._advance(self.epoch, self.shard_i))
            n = len(arrays["input_ids"])
            perm = np.random.default_rng([self.seed, self.epoch, self.shard_i]).permutation(n)
            if n < G * A:
                print(f"warning: {path}: {n} instances < global batch {G * A}; shard skipped", file=sys.stderr)
            while (self.offset // A + 1) * G * A <= n:  # the whole global batch fits (drop_last)
                lo = self.offset * G + self.rank * self.per_device
                self.offset += 1
                batches_this_epoch += 1
                yield batch_from_arrays(arrays, np.sort(perm[lo : lo + self.per_device]), self.fixed_shape)
            self.epoch, self.shard_i = self._advance(self.epoch, self.shard_i)
            self.offset = 0
            if self.shard_i == 0:  # an epoch ended
                if batches_this_epoch == 0:
                    raise BigsError(f"{path}: input_ids: every train shard has fewer instances than one global "
                                    f"batch ({G * A} = per-device batch × devices × accumulation); lower "
                                    "--per_device_train_batch_size or --global_batch_size, or make bigger shards")
                batches_this_epoch = 0


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """Every RNG this process draws from: JSON-able part and tensor part."""
    np_state = np.random.get_state()
    js = {"python": json.loads(json.dumps(random.getstate())),
          "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    ts = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # [cuda]
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            ts[f"cuda{i}"] = s
    return js, ts


def set_rng_state(js: dict, ts: dict[str, torch.Tensor]) -> None:
    v, state, gauss = js["python"]
    random.setstate((v, tuple(state), gauss))
    n = js["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(ts["torch"])
    if torch.cuda.is_available():  # [cuda]
        torch.cuda.set_rng_state_all([ts[k] for k in sorted((k for k in ts if k.startswith("cuda")), key=lambda k: int(k[4:]))])


CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(output_dir) -> list[Path]:
    """Checkpoints that finished writing (renamed into place with trainer_state.json), oldest first."""
    out = Path(output_dir)
    found = [(int(m.group(1)), d) for d in out.glob("checkpoint-*") if (m := CKPT_RE.match(d.name))]
    return [d for _, d in sorted(found) if (d / "trainer_state.json").is_file()]


def save_checkpoint(output_dir, step, model, optimizer, state: dict, rank: int, world: int, keep: int) -> Path:
    """checkpoint-<step>/: model (published names, safetensors), optimizer, RNG, data position."""
    from safetensors import SafetensorError

    final = Path(output_dir) / f"checkpoint-{step}"
    js, ts = rng_state()
    if world > 1:  # [ddp] every rank's RNG goes into the checkpoint
        gathered = [None] * world
        dist.all_gather_object(gathered, (js, {k: v.cpu() for k, v in ts.items()}))
    else:
        gathered = [(js, ts)]
    if rank == 0:
        try:
            _write_checkpoint(final, model, optimizer, state, gathered)
        except (OSError, RuntimeError, SafetensorError) as exc:  # full disk, quota: the previous one stays intact
            prev = complete_checkpoints(output_dir)
            free = shutil.disk_usage(output_dir).free
            raise BigsError(f"{final}: checkpoint: write failed ({getattr(exc, 'strerror', None) or exc}; "
                            f"{free / 2**20:.1f} MiB free); nothing was written there and "
                            f"{prev[-1] if prev else 'no earlier checkpoint'} is intact — free space "
                            "(or lower --save_total_limit) and rerun to resume") from exc
        if keep > 0:
            for old in complete_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    if world > 1:  # [ddp]
        dist.barrier()
    return final


def _write_checkpoint(final: Path, model, optimizer, state: dict, gathered: list) -> None:
    from safetensors.torch import save_file

    with atomic_dir(final) as tmp:
        save_model(model, tmp)
        torch.save(optimizer_state_cpu(optimizer), tmp / "optimizer.pt")
        for r, (_, t) in enumerate(gathered):
            save_file({k: v.contiguous() for k, v in t.items()}, str(tmp / f"rng-rank{r}.safetensors"))
        state = {**state, "rng": [j for j, _ in gathered]}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        if os.environ.get("BIGS_FAULT_CHECKPOINT_DELAY"):  # fault injection for tests: a slow write
            time.sleep(float(os.environ["BIGS_FAULT_CHECKPOINT_DELAY"]))


def save_model(model, directory: Path) -> None:
    """HF layout (config.json + model.safetensors, published key names) from host copies ([xla] safe)."""
    cpu_sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    model.save_pretrained(directory, state_dict=cpu_sd, safe_serialization=True)


def optimizer_state_cpu(optimizer) -> dict:
    sd = optimizer.state_dict()
    sd["state"] = {k: {n: (v.detach().cpu() if torch.is_tensor(v) else v) for n, v in s.items()} for k, s in sd["state"].items()}
    return sd


def load_checkpoint(ckpt: Path, model, optimizer) -> dict:
    """Restore model and optimizer from `ckpt` (safetensors; weights_only); return the trainer state."""
    state = json.loads((ckpt / "trainer_state.json").read_text())
    saved_cfg = json.loads((ckpt / "config.json").read_text())
    for key in ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_ssm"):
        if key in saved_cfg and saved_cfg[key] != getattr(model.config, key, saved_cfg[key]):
            raise BigsError(f"{ckpt}: config.json: {key} is {saved_cfg[key]!r} but this run builds "
                            f"{getattr(model.config, key)!r}; use the same model flags, or another --output_dir")
    saved = type(model).from_pretrained(ckpt)  # safetensors only, and re-ties the decoder
    model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu"))
    return state


def restore_rng(ckpt: Path, state: dict, rank: int) -> None:
    from safetensors.torch import load_file

    if rank >= len(state["rng"]):
        raise BigsError(f"{ckpt}: trainer_state.json: written by {len(state['rng'])} ranks, resumed with more; "
                        "resume with the same world size or start over with --resume never")
    set_rng_state(state["rng"][rank], load_file(str(ckpt / f"rng-rank{rank}.safetensors")))


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint (they will be written again)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))


PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "V100": 125e12}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Dense bf16 peak of known accelerators (for MFU); None where unknown (CPU)."""
    if device.type != "cuda":  # [cuda]
        return None
    name = torch.cuda.get_device_name(device)
    for key, f in PEAK_FLOPS.items():
        if key in name:
            return f if precision == "bf16" else f / 2  # TF32 ≈ half the bf16 rate
    return None


def flops_per_token(model, args) -> float:
    """Training FLOPs per token (fwd + bwd = 3 × fwd), both models with the head at ≈15 % of positions."""
    if hasattr(model, "flops_per_token"):  # BiGS counts its own (bigs/model.py)
        return float(model.flops_per_token(args.max_seq_length, mlm_fraction=0.15))
    H, I, L, V = args.hidden_size, args.intermediate_size, args.max_seq_length, model.config.vocab_size
    layer = 2 * (4 * H * H + 2 * H * I) + 2 * 2 * L * H  # dense matmuls + QK^T and AV
    head = 2 * (H * H + H * V) * 0.15
    return 3.0 * (args.n_layers * layer + head)


def lock_output_dir(out: Path):
    """Refuse a second live run in `out`: an advisory flock on out/.lock that the kernel drops when
    the holder dies (kill -9, node loss), so a requeued job is never blocked. Keep the returned
    file open for the run's life."""
    import fcntl
    import socket

    f = open(out / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise BigsError(f"{out}: --output_dir: in use by a running bigs.pretrain ({holder}); wait for it, "
                        "stop it, or choose another --output_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def install_stop_handlers(stop: dict) -> None:
    """SIGTERM/SIGUSR1 (SLURM preemption) and a first SIGINT (Ctrl-C): finish the step, checkpoint,
    exit EXIT_PREEMPTED. A second SIGINT quits at once (the default action)."""

    def on_signal(signum, _frame):
        stop["signal"] = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            print("\ninterrupted: finishing this step and writing a checkpoint (Ctrl-C again to quit at once)",
                  file=sys.stderr)

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, on_signal)


# ----------------------------------------------------------------------------- model
def build_model(args, device_kind: str):
    if args.model_type == "bert":  # the paper's baseline, same data and sizes
        from transformers import BertConfig

        from bigs.bert import BertForMaskedLMMaskedHead

        cfg = BertConfig(vocab_size=30522, hidden_size=args.hidden_size, num_hidden_layers=args.n_layers,
                         num_attention_heads=max(1, args.hidden_size // 64), intermediate_size=args.intermediate_size,
                         hidden_dropout_prob=args.hidden_dropout_prob, max_position_embeddings=max(512, args.max_seq_length))
        return BertForMaskedLMMaskedHead(cfg)  # same head trick as BiGS: a fair speed comparison
    from bigs.model import BiGSConfig, BiGSForMaskedLM

    cfg = BiGSConfig(hidden_size=args.hidden_size, num_hidden_layers=args.n_layers, intermediate_size=args.intermediate_size,
                     hidden_dropout_prob=args.hidden_dropout_prob, dropout_mask=args.dropout_mask,
                     max_position_embeddings=args.max_seq_length,
                     num_ssm=args.num_ssm, ssm_init=args.ssm_init,
                     conv_impl="toeplitz" if device_kind == "xla" else "auto")  # [xla] FFT has no lowering
    model = BiGSForMaskedLM(cfg)
    for name, prm in model.named_parameters():  # the pooler (kept for the published layout) gets no MLM gradient
        if ".pooler." in name:
            prm.requires_grad_(False)  # [ddp] would wait forever for its gradient
    return model


# ----------------------------------------------------------------------------- several nodes
# The multi-node contract (README "Several nodes"): output_dir is on a file system every node
# mounts at the same path; rank 0 alone writes checkpoints, metrics and final/ and holds the lock;
# every rank reads the checkpoint rank 0 chose at resume. Both are checked at start-up.
def check_shared_output_dir(out: Path, rank: int, world: int) -> None:
    """Rank 0 writes a nonce file in `out`; every rank must see it, or the run stops at once
    (without a shared file system each node would resume from its own, different checkpoints)."""
    import socket
    import uuid

    nonce = [uuid.uuid4().hex if rank == 0 else None]
    dist.broadcast_object_list(nonce)  # [ddp]
    probe = out / f".shared-fs-{nonce[0]}"
    if rank == 0:
        probe.write_text(nonce[0])
    dist.barrier()
    seen = probe.is_file() and probe.read_text() == nonce[0]
    views = [None] * world
    dist.all_gather_object(views, (rank, socket.gethostname(), seen))
    dist.barrier()  # everyone looked before rank 0 removes it
    if rank == 0:
        probe.unlink(missing_ok=True)
    blind = [f"rank {r} on {host}" for r, host, ok in views if not ok]
    if blind:
        raise BigsError(f"{out}: --output_dir: {', '.join(blind)} cannot see the file rank 0 ({views[0][1]}) wrote there; "
                        "a multi-node run needs output_dir on a shared file system (NFS, Lustre, GPFS…) mounted at the "
                        "same path on every node: rank 0 writes the checkpoints and every rank reads them at resume")


def check_same_resume(resume_from: Path | None, rank: int, world: int) -> None:
    """Every rank must resume from the checkpoint rank 0 chose (a stale NFS listing would not)."""
    chosen = [None] * world
    dist.all_gather_object(chosen, str(resume_from))  # [ddp]
    if len(set(chosen)) > 1:
        raise BigsError(f"{resume_from}: --resume: ranks disagree on the checkpoint to resume "
                        f"({', '.join(f'rank {r}: {c}' for r, c in enumerate(chosen))}); is output_dir shared by every node?")


def lost_peer_message(exc: BaseException, args: argparse.Namespace | None) -> str | None:
    """One line for a collective that failed because another rank died (connection closed) or hung
    past --dist_timeout; None for any other error (those keep their traceback)."""
    text = str(exc)
    markers = ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "Broken pipe",
               "Socket Timeout", "connection refused", "Connection refused", "NCCL communicator was aborted")
    if not isinstance(exc, (dist.DistError, RuntimeError)) or not any(m in text for m in markers):
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    import socket

    peer = re.search(r"\[([0-9a-fA-F.:]+)\]:(\d+)", text)
    where = f" (peer {peer.group(1)}:{peer.group(2)})" if peer else ""
    why = "hung past --dist_timeout" if "imed out" in text or "Timeout" in text else "closed its connection (died)"
    last = complete_checkpoints(args.output_dir) if args is not None else []
    detail = re.sub(r"^\[[^\]]*\] ", "", text.splitlines()[0]).split(". ")[0][:160]  # drop gloo's source location
    return (f"rank {dist.get_rank()} of {dist.get_world_size()} on {socket.gethostname()}: a peer rank{where} {why}: "
            f"a node or process of this run is gone; rerun the same command on every node to resume from "
            f"{last[-1] if last else 'the start (no checkpoint yet)'} ({type(exc).__name__}: {detail})")


def run_reporting_lost_peers(argv) -> int:
    """main(), but a failed collective after a peer's death is one line and exit EXIT_PEER_LOST, not
    a traceback. os._exit: the process group's threads would otherwise keep a dead peer's socket waiting."""
    try:
        return main(argv)
    except (RuntimeError, dist.DistError) as exc:
        try:
            args = parse_args(argv)
        except (SystemExit, BigsError):
            args = None
        msg = lost_peer_message(exc, args)
        if msg is None:
            raise
        sys.stdout.flush()
        print(f"\nerror: {msg}", file=sys.stderr, flush=True)  # \n: after the progress bar
        os._exit(EXIT_PEER_LOST)


# ----------------------------------------------------------------------------- main
def main(argv=None, index: int = 0) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    stop = {"signal": None}  # set by a signal; the loop checks it after each step
    install_stop_handlers(stop)

    # --- device and processes
    device_kind = args.device
    if device_kind == "auto":
        device_kind = "cuda" if torch.cuda.is_available() else "cpu"
    if device_kind == "xla":  # [xla]
        import torch_xla
        import torch_xla.core.xla_model as xm
        import torch_xla.distributed.parallel_loader as pl
        import torch_xla.runtime as xr

        device, rank, world = torch_xla.device(), xr.global_ordinal(), xr.world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if device_kind == "cuda":  # [cuda]
            if not torch.cuda.is_available():
                raise BigsError("--device: cuda requested but torch.cuda.is_available() is False")
            torch.cuda.set_device(local_rank)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if world > 1:  # [ddp]
            dist.init_process_group("nccl" if device_kind == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=args.dist_timeout))
    master = rank == 0
    args.gradient_accumulation_steps = accumulation_steps(args, world)  # before anything is written
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars in the logs
    autocast = torch.autocast(device_type="cuda" if device_kind == "cuda" else ("xla" if device_kind == "xla" else "cpu"),
                              dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()

    # --- data (fail fast: training never builds data)
    from bigs.data.format import list_shards

    train_shards = list_shards(args.dataset_path, "train")
    test_shards = list_shards(args.dataset_path, "test") if args.do_eval else []
    cache_dir = Path(args.shard_cache_dir or out / ".shard-cache") / f"rank{rank}"

    # --- output dir: writable, and not in use by another live run
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # one per process: ranks share the dir
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise BigsError(f"{out}: --output_dir: not writable ({exc.strerror or exc})") from exc
    lock = lock_output_dir(out) if master else None  # noqa: F841 (held open until the process ends)
    if world > 1 and device_kind != "xla":  # [ddp] several nodes: output_dir must be shared
        check_shared_output_dir(out, rank, world)

    # --- resume or start over
    ckpts = complete_checkpoints(out)
    resume_from = None
    if args.resume == "auto":
        resume_from = ckpts[-1] if ckpts else None
    elif args.resume != "never":
        resume_from = Path(args.resume)
        if not (resume_from / "trainer_state.json").is_file():
            raise BigsError(f"{resume_from}: trainer_state.json: not a complete checkpoint (--resume)")
    if world > 1 and device_kind != "xla":  # [ddp]
        check_same_resume(resume_from, rank, world)
    if resume_from is None and ckpts:
        if not args.overwrite_output_dir:
            raise BigsError(f"{out}: --output_dir holds {ckpts[-1].name}; use --resume auto to continue it, "
                            "or --resume never --overwrite_output_dir to start over (old checkpoints are moved aside)")
        if master:
            aside = out / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.mkdir()
            for d in ckpts + [out / "metrics.jsonl", out / "final"]:
                if d.exists():
                    d.rename(aside / d.name)
            print(f"--overwrite_output_dir: moved {len(ckpts)} old checkpoint(s) and metrics to {aside}")
    if resume_from is None and master:  # nothing resumable: clear a previous attempt's leftovers
        (out / "metrics.jsonl").unlink(missing_ok=True)
    if master:  # checkpoint writes cut short by a kill: never loaded, now removed
        for tmp in out.glob(".tmp-checkpoint-*"):
            shutil.rmtree(tmp, ignore_errors=True)
    if resume_from is not None and args.overwrite_output_dir and master:
        print(f"resuming from {resume_from} (--overwrite_output_dir never deletes a resumable run; "
              "use --resume never to start over)")

    # --- model and optimizer
    torch.manual_seed(args.seed)  # same initial weights on every rank
    random.seed(args.seed)
    np.random.seed(args.seed)
    model = build_model(args, device_kind).to(device)
    if device_kind == "xla":  # [xla] moving to the device re-creates parameters: tie the decoder again
        model.tie_weights()
    groups = param_groups(model, args.weight_decay, verbose=master)
    if args.adafactor:  # optax.adafactor's defaults, as the original: no weight decay, parameter scaling
        from bigs.optim import OptaxAdafactor

        optimizer = OptaxAdafactor(groups, lr=args.learning_rate)
    else:
        optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                      eps=args.adam_epsilon, weight_decay=args.weight_decay)
    step, position, tokens_seen = 0, None, 0
    torch.manual_seed(args.seed + 1000 * (rank + 1))  # dropout masks differ per rank
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer)
        restore_rng(resume_from, state, rank)
        step, position, tokens_seen = state["step"], tuple(state["data_position"]), state["tokens_seen"]
        if master:
            truncate_metrics(out / "metrics.jsonl", step)
            print(f"resumed from {resume_from} at step {step}")
    train_model = model
    if args.compile:
        train_model = torch.compile(train_model)
    if world > 1 and device_kind != "xla":  # [ddp]
        train_model = torch.nn.parallel.DistributedDataParallel(train_model, device_ids=[device.index] if device_kind == "cuda" else None)

    fixed_shape = args.mlm_gather == "positions" or (args.mlm_gather == "auto" and device_kind == "xla")  # [xla] no data-dependent shapes
    stream = TrainStream(train_shards, args.per_device_train_batch_size, rank, world, args.seed, cache_dir, position, fixed_shape,
                         args.max_seq_length, max_visits=args.max_train_shards, accumulation=args.gradient_accumulation_steps)
    batches = iter(stream)
    if device_kind == "xla":  # [xla] host->device copies in the background, fixed shapes
        batches = iter(pl.MpDeviceLoader(stream, device))

    # --- start-up summary
    global_batch = args.per_device_train_batch_size * world * args.gradient_accumulation_steps
    tokens_per_step = global_batch * args.max_seq_length
    n_params = sum(p.numel() for p in model.parameters())
    fpt = flops_per_token(model, args)
    peak = peak_flops(device, args.precision)
    if master:
        print(f"model {args.model_type}: {n_params:,} parameters, {args.n_layers} layers, H {args.hidden_size}, I {args.intermediate_size}")
        print(f"device {device_kind} × {world}; precision {args.precision}; global batch {global_batch} "
              f"({args.per_device_train_batch_size} × {world} devices × {args.gradient_accumulation_steps} accumulation); "
              f"{tokens_per_step:,} token positions per step; {len(train_shards)} train / {len(test_shards)} test shards")
        print(f"steps {step} -> {args.num_total_train_steps}; ≈{fpt * tokens_per_step:.3g} FLOPs per step")
        frac = eval_cost_fraction(args, global_batch, world)
        print(f"evaluation every {args.eval_steps} steps and at the end, "
              + (f"{args.eval_batches} batches × {args.per_device_eval_batch_size} × {world} devices each: "
                 f"≈{frac:.2%} of the training compute" if frac is not None else "the whole test split each")
              if test_shards else "evaluation: off (no test shards or --do_eval false)")
        if is_paper_recipe(args) and global_batch != PAPER_GLOBAL_BATCH:
            print(f"warning: the paper's recipe (23 layers, H 1024, 100k steps) uses a global batch of {PAPER_GLOBAL_BATCH}, "
                  f"this run {global_batch}: pass --global_batch_size {PAPER_GLOBAL_BATCH}", file=sys.stderr)

    # --- logging
    metrics_f = open(out / "metrics.jsonl", "a") if master else None
    tb = None
    if args.tensorboard and master:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tb"))
        except ImportError:
            print("warning: --tensorboard: tensorboard is not installed; writing metrics.jsonl only", file=sys.stderr)

    def log(record: dict) -> None:
        if not master:
            return
        metrics_f.write(json.dumps(record) + "\n")
        metrics_f.flush()
        if tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "kind"):
                    tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def run_eval() -> dict:
        from bigs.evaluate import evaluate_mlm, shard_batches

        batches = shard_batches(test_shards, args.per_device_eval_batch_size, rank=rank, world=world,
                                fixed_shape=fixed_shape, cache_dir=cache_dir / "test")
        if device_kind == "xla":  # [xla] one graph per batch (the loader marks the step)
            batches = pl.MpDeviceLoader(batches, device)
        res = evaluate_mlm(model, batches, device,
                           max_batches=args.eval_batches or None,
                           autocast_dtype=torch.bfloat16 if args.precision == "bf16" else None)
        if world > 1 and device_kind != "xla":  # [ddp] token-weighted sums over ranks
            t = torch.tensor([res["eval_loss"] * res["eval_tokens"], res["eval_accuracy"] * res["eval_tokens"], res["eval_tokens"]],
                             dtype=torch.float64, device=device)
            dist.all_reduce(t)
            res.update(eval_loss=(t[0] / t[2]).item(), eval_accuracy=(t[1] / t[2]).item(), eval_tokens=int(t[2].item()))
            res["eval_perplexity"] = math.exp(min(res["eval_loss"], 50.0))
        return res

    def checkpoint(at_step: int) -> Path:
        if device_kind == "xla":  # [xla] run the pending graph once, so each .cpu() below is a plain copy
            torch_xla.sync()
        state = {"step": at_step, "tokens_seen": tokens_seen, "data_position": list(stream.position()),
                 "world_size": world, "args": vars(args)}
        return save_checkpoint(out, at_step, model, optimizer, state, rank, world, args.save_total_limit)

    poison = int(os.environ.get("BIGS_FAULT_NAN_AT_STEP", -1))  # fault injection for tests
    bar = None
    if master:
        from tqdm import tqdm

        bar = tqdm(total=args.num_total_train_steps, initial=step, desc="pretrain", dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
    train_model.train()
    t_log, loss_sum, loss_n, grad_norm = time.time(), 0.0, 0, float("nan")
    t_start, eta_told = time.time(), False
    while step < args.num_total_train_steps:
        lr = lr_at(step, args)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        # Loss = sum of cross-entropy over every masked token of the global batch / their number,
        # whatever the split over ranks and accumulation steps (so DDP == one process at the same
        # global batch). The counts come from host-side labels: no device sync.
        try:
            micro = [next(batches) for _ in range(args.gradient_accumulation_steps)]
        except StopIteration:  # --max_train_shards visits done (the original's other stop)
            if master:
                print(f"\n--max_train_shards: {args.max_train_shards} shard visits done at step {step}; stopping")
            break
        if device_kind == "xla":  # [xla] counts would end the lazy graph: per-replica mean, as the original (pmean)
            weights = [1.0 / len(micro)] * len(micro)
        else:
            counts = [int((b["labels"] != -100).sum()) for b in micro]
            total = sum(counts)
            if world > 1:  # [ddp]
                t = torch.tensor([total], dtype=torch.float64, device=device)
                dist.all_reduce(t)
                total = int(t.item())
            weights = [c / max(total, 1) for c in counts]
        loss_acc = torch.zeros((), device=device)
        for i, batch in enumerate(micro):
            if device_kind != "xla":
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            last = i == len(micro) - 1
            with (contextlib.nullcontext() if last or world == 1 or device_kind == "xla" else train_model.no_sync()):  # [ddp]
                with autocast:
                    loss = train_model(**batch).loss * weights[i]
                if step == poison:
                    loss = loss * float("nan")
                # DDP averages gradients over ranks; × world turns that into the global sum.
                (loss * (world if device_kind != "xla" else 1)).backward()
            loss_acc += loss.detach()
        clip = args.max_grad_norm if args.max_grad_norm > 0 else float("inf")
        grad_norm_t = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if device_kind == "xla":  # [xla] all-reduce of gradients across cores + step
            xm.optimizer_step(optimizer)
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += tokens_per_step
        log_now = step % args.logging_steps == 0 or step == args.num_total_train_steps
        if device_kind != "xla" or log_now:  # [xla] reading a value ends the lazy graph: only at log steps
            loss_val = loss_acc.item()
            if world > 1 and device_kind != "xla":  # [ddp] each rank holds its share of the global mean
                t = torch.tensor([loss_val], device=device)
                dist.all_reduce(t)
                loss_val = t.item()
            if not math.isfinite(loss_val):
                last = complete_checkpoints(out)
                msg = f"non-finite loss ({loss_val}) at step {step}; last good checkpoint: {last[-1] if last else 'none'}"
                print(f"error: {msg}", file=sys.stderr)
                return EXIT_NONFINITE
            loss_sum, loss_n = loss_sum + loss_val, loss_n + 1
        if bar is not None:
            bar.update(1)
        if log_now:
            dt = time.time() - t_log
            n_steps = args.logging_steps if step % args.logging_steps == 0 else step % args.logging_steps
            tps = n_steps * tokens_per_step / max(dt, 1e-9)
            rec = {"kind": "train", "step": step, "tokens_seen": tokens_seen, "wall_time": round(time.time() - t_start, 3),
                   "loss": loss_sum / max(loss_n, 1), "lr": lr, "grad_norm": float(grad_norm_t),
                   "tokens_per_s": tps, "samples_per_s": tps / args.max_seq_length,
                   "mfu": (tps * fpt / (peak * world)) if peak else None}
            rec["eta_s"] = round((args.num_total_train_steps - step) * dt / n_steps, 1)
            if master and not eta_told:  # the start-up summary's last line, once the speed is known
                eta = rec["eta_s"]
                human = f"{eta / 3600:.1f} h" if eta >= 3600 else (f"{eta / 60:.1f} min" if eta >= 60 else f"{eta:.0f} s")
                print(f"\nestimated time to finish: {human} at {tps:,.0f} tokens/s")
                eta_told = True
            if device_kind == "xla":  # [xla] compile count must stop growing after warm-up
                import torch_xla.debug.metrics as met

                rec["xla_compiles"] = (met.metric_data("CompileTime") or [0])[0]
            log(rec)
            if bar is not None:
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
            t_log, loss_sum, loss_n = time.time(), 0.0, 0
        if test_shards and (step % args.eval_steps == 0 or step == args.num_total_train_steps):
            res = run_eval()
            log({"kind": "eval", "step": step, "tokens_seen": tokens_seen, "wall_time": round(time.time() - t_start, 3), **res})
            if master:
                print(f"\nstep {step}: eval loss {res['eval_loss']:.4f} acc {res['eval_accuracy']:.4f} ppl {res['eval_perplexity']:.2f}")
            t_log = time.time()
        stopping = stop["signal"] is not None
        if world > 1 and device_kind != "xla":  # [ddp] stop together
            t = torch.tensor([float(stopping)], device=device)
            dist.all_reduce(t)
            stopping = t.item() > 0
        if step % args.save_steps == 0 or stopping:
            path = checkpoint(step)
            if stopping:
                if master:
                    print(f"stopped by {stop['signal'] or 'a peer rank'} at step {step}; checkpoint {path}; exit {EXIT_PREEMPTED} (requeue to resume)")
                return EXIT_PREEMPTED
    if bar is not None:
        bar.close()

    # --- the end: final checkpoint (resumable) and final/ (model only, for evaluation and sharing)
    if step % args.save_steps != 0:  # the loop saved at multiples of save_steps; same decision on every rank
        checkpoint(step)
    if device_kind == "xla":  # [xla]
        torch_xla.sync()
    if master:
        with atomic_dir(out / "final") as tmp:
            save_model(model, tmp)
            save_tokenizer(tmp)
            (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "tokens_seen": tokens_seen}))
        print(f"done: {step} steps, {tokens_seen:,} token positions; model in {out / 'final'}")
        metrics_f.close()
        if tb is not None:
            tb.close()
    shutil.rmtree(cache_dir, ignore_errors=True)  # staged gs:// shards
    if world > 1 and device_kind != "xla":  # [ddp]
        dist.destroy_process_group()
    return 0


def save_tokenizer(directory: Path) -> None:
    """Ship the bundled bert-large-uncased WordPiece vocab with the model, so fill-mask works offline."""
    from importlib.resources import files

    vocab = files("bigs.data") / "vocab" / "bert-large-uncased-vocab.txt"
    shutil.copyfile(str(vocab), directory / "vocab.txt")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}, indent=1))


def _xla_entry(index, argv):  # [xla] one process per TPU core
    code = main(argv, index)
    if code:
        sys.exit(code)


def run(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--device" in argv and argv[argv.index("--device") + 1] == "xla" or "--device=xla" in argv:  # [xla]
        import torch_xla

        # On the CPU back-end only one device is usable (two hang in rendezvous, REFERENCE.md §4).
        single = os.environ.get("PJRT_DEVICE", "").upper() == "CPU"
        torch_xla.launch(_xla_entry, args=(argv,), debug_single_process=single)
        return 0
    return run_reporting_lost_peers(argv)


if __name__ == "__main__":
    cli_main(run)
