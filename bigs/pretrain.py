"""BiGS masked-LM pretraining, one flat loop: `python -m bigs.pretrain --output_dir D --dataset_path P ...`.

Takes the seed's command line as is (the original BiGS pre-training README, jxiw/BiGS) with
`python -m bigs.pretrain` in place of `python pretrain.py`, plus device, precision, resume and
logging flags. Runs on
  - CPU:   python -m bigs.pretrain ...            (several processes: torchrun, gloo)
  - CUDA:  torchrun --nproc_per_node=8 -m bigs.pretrain ... --precision bf16   (NCCL DDP)
  - TPU:   PJRT_DEVICE=TPU python -m bigs.pretrain ... --device xla  (torch_xla.launch, all cores)
`--dataset_path` is a local directory or gs://bucket/prefix (shards are streamed: fetched,
used, deleted; the next one is prefetched in the background).

Reading order: flags -> pure helpers (global batch, lr schedule, data stream, checkpoints) ->
the set-up steps main() names (device, output dir, optimizer, summary, logging, evaluation) ->
main(): set-up, then the loop. Device back-ends differ only in lines marked `# [xla]`, `# [cuda]`
or `# [ddp]`.

Exit codes: 0 done, 2 bad input or a busy output_dir, 3 stopped by SIGTERM/SIGUSR1 or a first
Ctrl-C after writing a checkpoint (requeue the job: it resumes), 4 non-finite loss (names the
step and the last good checkpoint),
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from bigs.data.format import batch_tensors, list_shards, read_shard, sequence_length
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
    p.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="allow a fresh start in a non-empty output_dir; with --resume auto a checkpoint there is still resumed",
    )
    p.add_argument(
        "--max_seq_length",
        type=positive(int),
        default=None,
        help="the model's length; default: the shards' (every shard is checked against it)",
    )
    p.add_argument("--per_device_train_batch_size", type=positive(int), default=131)
    p.add_argument("--per_device_eval_batch_size", type=positive(int), default=131)
    p.add_argument("--learning_rate", type=positive(float), default=6e-4)
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.98)
    p.add_argument("--adam_epsilon", type=float, default=1e-6)
    p.add_argument("--adafactor", type=str2bool, nargs="?", const=True, default=False)
    p.add_argument(
        "--max_train_shards",
        type=positive(int),
        default=3000,
        help="stop after this many shard visits (over epochs), as the original; the last shard finishes",
    )
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
    p.add_argument(
        "--dropout_mask",
        default="shared",
        choices=["shared", "per_example"],
        help="shared: one embedding-dropout mask per micro-batch, as the original (REFERENCE.md §5a)",
    )
    p.add_argument("--num_ssm", type=positive(int), default=64)
    p.add_argument(
        "--max_predictions_per_seq",
        type=positive(int),
        default=20,
        help="accepted for the seed's command; the shards hold the masked positions",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--num_workers", type=int, default=4, help="accepted for compatibility; shards load in a background thread"
    )
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="original flag; bfloat16 = --precision bf16"
    )
    p.add_argument("--do_train", type=str2bool, nargs="?", const=True, default=True)
    p.add_argument("--do_eval", type=str2bool, nargs="?", const=True, default=True)
    # --- ours
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "xla"])
    p.add_argument(
        "--precision", default=None, choices=["fp32", "bf16"], help="bf16 = autocast (default: from --dtype)"
    )
    p.add_argument(
        "--global_batch_size",
        type=positive(int),
        default=None,
        help="sequences per optimizer step over all devices (the paper: 1048); accumulation = this / "
        "(per-device batch × world size), derived at start-up",
    )
    p.add_argument(
        "--gradient_accumulation_steps",
        type=positive(int),
        default=None,
        help="micro-batches per optimizer step (default 1, or derived from --global_batch_size)",
    )
    p.add_argument(
        "--max_grad_norm", type=float, default=0.0, help="clip gradients to this norm; 0 = off (the original)"
    )
    p.add_argument("--ssm_init", default="hippo", choices=["hippo", "lin", "inv"])
    p.add_argument(
        "--conv_impl",
        default="auto",
        choices=["auto", "fft", "toeplitz"],
        help="SSM convolution (bigs/model.py): auto = Toeplitz GEMM up to L 1024, FFT beyond; XLA: toeplitz",
    )
    p.add_argument(
        "--resume", default="auto", help="auto (latest checkpoint in output_dir), never, or a checkpoint dir"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA/CPU)")
    p.add_argument(
        "--mlm_gather",
        default="auto",
        choices=["auto", "boolean", "positions"],
        help="how the MLM head finds the masked tokens: boolean = labels (B, L) != -100 (data-dependent "
        "shape), positions = gather at masked_positions (B, P) (fixed shape); auto = positions on XLA, "
        "boolean elsewhere",
    )
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events to output_dir/tb")
    p.add_argument("--eval_batches", type=int, default=0, help="max test batches per evaluation (0 = all)")
    p.add_argument("--save_total_limit", type=int, default=2, help="keep the newest K checkpoint-* dirs (0 = all)")
    p.add_argument(
        "--shard_cache_dir", default=None, help="where gs:// shards are staged (default output_dir/.shard-cache)"
    )
    p.add_argument(
        "--dist_timeout",
        type=positive(float),
        default=1800,
        help="seconds a collective waits for the other ranks (several processes/nodes) before the run "
        f"stops with exit {EXIT_PEER_LOST} naming the lost peer; rerun to resume",
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.precision is None:
        args.precision = "bf16" if args.dtype == "bfloat16" else "fp32"
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
        raise BigsError(
            f"--global_batch_size: {args.global_batch_size} is not a multiple of --per_device_train_batch_size "
            f"{args.per_device_train_batch_size} × {world} devices = {micro}; choose a per-device batch "
            "that divides it"
        )
    if args.gradient_accumulation_steps not in (None, acc):
        raise BigsError(
            f"--gradient_accumulation_steps: {args.gradient_accumulation_steps} conflicts with "
            f"--global_batch_size {args.global_batch_size} = {args.per_device_train_batch_size} per device × "
            f"{world} devices × {acc}; pass only one of the two"
        )
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
            print(
                f"optimizer group: weight_decay={g['weight_decay']} lr_mult={g['lr_mult']}: "
                f"{len(g['params'])} tensors, {n:,} parameters"
            )
    return list(groups.values())


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

    def __init__(
        self,
        shards,
        per_device,
        rank,
        world,
        seed,
        cache_dir=None,
        position=None,
        fixed_shape=False,
        max_seq_length=None,
        max_visits=None,
        accumulation=1,
    ):
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
        from bigs.data.storage import local_copy

        path = self.shards[self._order(epoch)[shard_i]]
        with local_copy(path, self.cache_dir) as local:  # gs://: download, read, delete (small TPU-VM disks)
            arrays = read_shard(local)
        L = arrays["input_ids"].shape[1]
        if self.max_seq_length is not None and L != self.max_seq_length:
            raise BigsError(
                f"{path}: input_ids: sequences of length {L}, but --max_seq_length is "
                f"{self.max_seq_length} (the model's max_position_embeddings); train with "
                f"--max_seq_length {L} or rebuild the samples"
            )
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
                yield batch_tensors(arrays, np.sort(perm[lo : lo + self.per_device]), self.fixed_shape)
            self.epoch, self.shard_i = self._advance(self.epoch, self.shard_i)
            self.offset = 0
            if self.shard_i == 0:  # an epoch ended
                if batches_this_epoch == 0:
                    raise BigsError(
                        f"{path}: input_ids: every train shard has fewer instances than one global "
                        f"batch ({G * A} = per-device batch × devices × accumulation); lower "
                        "--per_device_train_batch_size or --global_batch_size, or make bigger shards"
                    )
                batches_this_epoch = 0


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """Every RNG this process draws from: JSON-able part and tensor part."""
    np_state = np.random.get_state()
    js = {
        "python": json.loads(json.dumps(random.getstate())),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
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
        torch.cuda.set_rng_state_all(
            [ts[k] for k in sorted((k for k in ts if k.startswith("cuda")), key=lambda k: int(k[4:]))]
        )


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
            raise BigsError(
                f"{final}: checkpoint: write failed ({getattr(exc, 'strerror', None) or exc}; "
                f"{free / 2**20:.1f} MiB free); nothing was written there and "
                f"{prev[-1] if prev else 'no earlier checkpoint'} is intact — free space "
                "(or lower --save_total_limit) and rerun to resume"
            ) from exc
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
    sd["state"] = {
        k: {n: (v.detach().cpu() if torch.is_tensor(v) else v) for n, v in s.items()} for k, s in sd["state"].items()
    }
    return sd


def load_checkpoint(ckpt: Path, model, optimizer) -> dict:
    """Restore model and optimizer from `ckpt` (safetensors; weights_only); return the trainer state."""
    state = json.loads((ckpt / "trainer_state.json").read_text())
    saved_cfg = json.loads((ckpt / "config.json").read_text())
    for key in ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_ssm"):
        if key in saved_cfg and saved_cfg[key] != getattr(model.config, key, saved_cfg[key]):
            raise BigsError(
                f"{ckpt}: config.json: {key} is {saved_cfg[key]!r} but this run builds "
                f"{getattr(model.config, key)!r}; use the same model flags, or another --output_dir"
            )
    saved = type(model).from_pretrained(ckpt)  # safetensors only, and re-ties the decoder
    model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu"))
    return state


def restore_rng(ckpt: Path, state: dict, rank: int) -> None:
    from safetensors.torch import load_file

    if rank >= len(state["rng"]):
        raise BigsError(
            f"{ckpt}: trainer_state.json: written by {len(state['rng'])} ranks, resumed with more; "
            "resume with the same world size or start over with --resume never"
        )
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
    """Training FLOPs per token (fwd + bwd = 3 × fwd), the head at ≈15 % of the positions; each model
    counts its own (bigs/model.py, bigs/bert.py)."""
    return float(model.flops_per_token(args.max_seq_length, mlm_fraction=0.15))


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
        raise BigsError(
            f"{out}: --output_dir: in use by a running bigs.pretrain ({holder}); wait for it, "
            "stop it, or choose another --output_dir"
        ) from None
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
            print(
                "\ninterrupted: finishing this step and writing a checkpoint (Ctrl-C again to quit at once)",
                file=sys.stderr,
            )

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, on_signal)


# ----------------------------------------------------------------------------- model
def build_model(args, device_kind: str):
    if args.model_type == "bert":  # the paper's baseline, same data and sizes
        from bigs.bert import BertForMaskedLMMaskedHead, bert_config

        cfg = bert_config(
            args.hidden_size, args.n_layers, args.intermediate_size, args.hidden_dropout_prob, args.max_seq_length
        )
        return BertForMaskedLMMaskedHead(cfg)  # same head trick as BiGS: a fair speed comparison
    from bigs.model import BiGSConfig, BiGSForMaskedLM

    conv = "toeplitz" if device_kind == "xla" else args.conv_impl  # [xla] FFT has no lowering
    cfg = BiGSConfig(
        hidden_size=args.hidden_size,
        num_hidden_layers=args.n_layers,
        intermediate_size=args.intermediate_size,
        hidden_dropout_prob=args.hidden_dropout_prob,
        dropout_mask=args.dropout_mask,
        max_position_embeddings=args.max_seq_length,
        num_ssm=args.num_ssm,
        ssm_init=args.ssm_init,
        conv_impl=conv,
    )
    model = BiGSForMaskedLM(cfg)
    for name, prm in model.named_parameters():  # the pooler (kept for the published layout) gets no MLM gradient
        if ".pooler." in name:
            prm.requires_grad_(False)  # [ddp] would wait forever for its gradient
    return model


def build_optimizer(model, args, verbose: bool):
    """AdamW with the original's groups, or optax.adafactor's defaults with --adafactor (no weight
    decay, parameter scaling; bigs/optim.py)."""
    groups = param_groups(model, args.weight_decay, verbose=verbose)
    if args.adafactor:
        from bigs.optim import OptaxAdafactor

        return OptaxAdafactor(groups, lr=args.learning_rate)
    return torch.optim.AdamW(
        groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
    )


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
        raise BigsError(
            f"{out}: --output_dir: {', '.join(blind)} cannot see the file rank 0 ({views[0][1]}) wrote there; "
            "a multi-node run needs output_dir on a shared file system (NFS, Lustre, GPFS…) mounted at the "
            "same path on every node: rank 0 writes the checkpoints and every rank reads them at resume"
        )


def check_same_resume(resume_from: Path | None, rank: int, world: int) -> None:
    """Every rank must resume from the checkpoint rank 0 chose (a stale NFS listing would not)."""
    chosen = [None] * world
    dist.all_gather_object(chosen, str(resume_from))  # [ddp]
    if len(set(chosen)) > 1:
        raise BigsError(
            f"{resume_from}: --resume: ranks disagree on the checkpoint to resume "
            f"({', '.join(f'rank {r}: {c}' for r, c in enumerate(chosen))}); is output_dir shared by every node?"
        )


def lost_peer_message(exc: BaseException, args: argparse.Namespace | None) -> str | None:
    """One line for a collective that failed because another rank died (connection closed) or hung
    past --dist_timeout; None for any other error (those keep their traceback)."""
    text = str(exc)
    markers = (
        "Connection closed by peer",
        "Connection reset by peer",
        "Timed out",
        "timed out",
        "Broken pipe",
        "Socket Timeout",
        "connection refused",
        "Connection refused",
        "NCCL communicator was aborted",
    )
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
    return (
        f"rank {dist.get_rank()} of {dist.get_world_size()} on {socket.gethostname()}: a peer rank{where} {why}: "
        f"a node or process of this run is gone; rerun the same command on every node to resume from "
        f"{last[-1] if last else 'the start (no checkpoint yet)'} ({type(exc).__name__}: {detail})"
    )


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


# ----------------------------------------------------------------------------- set-up steps of main()
@dataclass
class Env:
    """Where this process runs."""

    kind: str  # "cpu" | "cuda" | "xla"
    device: torch.device
    rank: int
    world: int

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:  # [ddp] several processes joined by torch.distributed (XLA has its own)
        return self.world > 1 and self.kind != "xla"


def setup_device(args) -> Env:
    """Pick the device; join the process group ([ddp], launched by torchrun) or the XLA world ([xla])."""
    kind = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "xla":  # [xla]
        import torch_xla
        import torch_xla.runtime as xr

        return Env(kind, torch_xla.device(), xr.global_ordinal(), xr.world_size())
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device("cpu")
    if kind == "cuda":  # [cuda]
        if not torch.cuda.is_available():
            raise BigsError("--device: cuda requested but torch.cuda.is_available() is False")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1:  # [ddp]
        dist.init_process_group(
            "nccl" if kind == "cuda" else "gloo", timeout=datetime.timedelta(seconds=args.dist_timeout)
        )
    return Env(kind, device, rank, world)


def all_reduce_sum(values: list[float], env: Env) -> list[float]:
    """Σ over ranks of a few host numbers ([ddp]); unchanged on one process and on XLA."""
    if not env.ddp:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.tolist()


def prepare_output_dir(args, env: Env):
    """Make output_dir, check it is writable, not in use (rank 0 locks it) and shared by every node,
    and decide what to resume: the newest complete checkpoint (--resume auto), a named one, or
    none — old checkpoints are then moved aside with --overwrite_output_dir and never deleted.
    Returns (checkpoint or None, the lock file to keep open for the run)."""
    master = env.master
    out = Path(args.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # one per process: ranks share the dir
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise BigsError(f"{out}: --output_dir: not writable ({exc.strerror or exc})") from exc
    lock = lock_output_dir(out) if master else None
    if env.ddp:  # [ddp] several nodes: output_dir must be shared
        check_shared_output_dir(out, env.rank, env.world)
    ckpts = complete_checkpoints(out)
    resume_from = None
    if args.resume == "auto":
        resume_from = ckpts[-1] if ckpts else None
    elif args.resume != "never":
        resume_from = Path(args.resume)
        if not (resume_from / "trainer_state.json").is_file():
            raise BigsError(f"{resume_from}: trainer_state.json: not a complete checkpoint (--resume)")
    if env.ddp:  # [ddp] every rank resumes what rank 0 chose
        check_same_resume(resume_from, env.rank, env.world)
    if resume_from is None and ckpts and not args.overwrite_output_dir:
        raise BigsError(
            f"{out}: --output_dir holds {ckpts[-1].name}; use --resume auto to continue it, "
            "or --resume never --overwrite_output_dir to start over (old checkpoints are moved aside)"
        )
    if not master:
        return resume_from, lock
    if resume_from is None and ckpts:
        aside = out / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir()
        for d in ckpts + [out / "metrics.jsonl", out / "final"]:
            if d.exists():
                d.rename(aside / d.name)
        print(f"--overwrite_output_dir: moved {len(ckpts)} old checkpoint(s) and metrics to {aside}")
    if resume_from is None:  # nothing resumable: clear a previous attempt's leftovers
        (out / "metrics.jsonl").unlink(missing_ok=True)
    for tmp in out.glob(".tmp-checkpoint-*"):  # checkpoint writes cut short by a kill: never loaded
        shutil.rmtree(tmp, ignore_errors=True)
    if resume_from is not None and args.overwrite_output_dir:
        print(
            f"resuming from {resume_from} (--overwrite_output_dir never deletes a resumable run; "
            "use --resume never to start over)"
        )
    return resume_from, lock


def print_summary(
    args, model, env: Env, global_batch: int, n_train: int, n_test: int, step: int, flops_per_step: float
):
    """The start-up summary; the estimated time to finish follows once the speed is known."""
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model {args.model_type}: {n_params:,} parameters, {args.n_layers} layers, H {args.hidden_size}, I {args.intermediate_size}"
    )
    print(
        f"device {env.kind} × {env.world}; precision {args.precision}; global batch {global_batch} "
        f"({args.per_device_train_batch_size} × {env.world} devices × {args.gradient_accumulation_steps} accumulation); "
        f"{global_batch * args.max_seq_length:,} token positions per step; {n_train} train / {n_test} test shards"
    )
    print(f"steps {step} -> {args.num_total_train_steps}; ≈{flops_per_step:.3g} FLOPs per step")
    frac = eval_cost_fraction(args, global_batch, env.world)
    if not n_test:
        print("evaluation: off (no test shards or --do_eval false)")
    elif frac is None:
        print(f"evaluation every {args.eval_steps} steps and at the end, the whole test split each")
    else:
        print(
            f"evaluation every {args.eval_steps} steps and at the end, {args.eval_batches} batches × "
            f"{args.per_device_eval_batch_size} × {env.world} devices each: ≈{frac:.2%} of the training compute"
        )
    if is_paper_recipe(args) and global_batch != PAPER_GLOBAL_BATCH:
        print(
            f"warning: the paper's recipe (23 layers, H 1024, 100k steps) uses a global batch of {PAPER_GLOBAL_BATCH}, "
            f"this run {global_batch}: pass --global_batch_size {PAPER_GLOBAL_BATCH}",
            file=sys.stderr,
        )


class MetricsLog:
    """metrics.jsonl (and TensorBoard events with --tensorboard), written by rank 0 only."""

    def __init__(self, out: Path, tensorboard: bool, master: bool):
        self.f = open(out / "metrics.jsonl", "a") if master else None
        self.tb = None
        if tensorboard and master:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                print(
                    "warning: --tensorboard: tensorboard is not installed; writing metrics.jsonl only", file=sys.stderr
                )

    def __call__(self, record: dict) -> None:
        if self.f is None:
            return
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "kind"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def close(self) -> None:
        for h in (self.f, self.tb):
            if h is not None:
                h.close()


def evaluate_test(model, test_shards, args, env: Env, fixed_shape: bool, cache_dir: Path) -> dict:
    """Masked-LM metrics on the test shards (bigs.evaluate's function), token-weighted over ranks."""
    from bigs.evaluate import evaluate_mlm, mlm_metrics, shard_batches

    batches = shard_batches(
        test_shards,
        args.per_device_eval_batch_size,
        rank=env.rank,
        world=env.world,
        fixed_shape=fixed_shape,
        cache_dir=cache_dir / "test",
    )
    if env.kind == "xla":  # [xla] one graph per batch (the loader marks the step)
        import torch_xla.distributed.parallel_loader as pl

        batches = pl.MpDeviceLoader(batches, env.device)
    res = evaluate_mlm(
        model,
        batches,
        env.device,
        max_batches=args.eval_batches or None,
        autocast_dtype=torch.bfloat16 if args.precision == "bf16" else None,
    )
    if env.ddp:  # [ddp] token-weighted sums over ranks
        n = res["eval_tokens"]
        res.update(mlm_metrics(*all_reduce_sum([res["eval_loss"] * n, res["eval_accuracy"] * n, n], env)))
    return res


def loss_weights(micro: list[dict], env: Env) -> list[float]:
    """Each micro-batch's share of the global batch's loss: its labelled tokens / all labelled tokens
    of the global batch, whatever the split over ranks and accumulation steps (so DDP == one process
    at the same global batch). Counted on the host labels: no device sync."""
    if env.kind == "xla":  # [xla] counts would end the lazy graph: per-replica mean, as the original (pmean)
        return [1.0 / len(micro)] * len(micro)
    counts = [int((b["labels"] != -100).sum()) for b in micro]
    (total,) = all_reduce_sum([float(sum(counts))], env)
    return [c / max(total, 1.0) for c in counts]


def train_record(
    step, tokens_seen, n_steps, dt, wall, loss, lr, grad_norm, args, tokens_per_step, fpt, peak, env
) -> dict:
    """One metrics.jsonl training line: the mean loss and the speed over the last `n_steps` steps."""
    tps = n_steps * tokens_per_step / max(dt, 1e-9)
    rec = {
        "kind": "train",
        "step": step,
        "tokens_seen": tokens_seen,
        "wall_time": round(wall, 3),
        "loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens_per_s": tps,
        "samples_per_s": tps / args.max_seq_length,
        "mfu": (tps * fpt / (peak * env.world)) if peak else None,
        "eta_s": round((args.num_total_train_steps - step) * dt / n_steps, 1),
    }
    if env.kind == "xla":  # [xla] the compile count must stop growing after warm-up
        import torch_xla.debug.metrics as met

        rec["xla_compiles"] = (met.metric_data("CompileTime") or [0])[0]
    return rec


def show_progress(bar, rec: dict, first: bool) -> None:
    """The bar's loss/lr/speed; the first time also the start-up summary's last line, the time to finish."""
    if bar is None:
        return
    if first:
        print(f"\nestimated time to finish: {human_time(rec['eta_s'])} at {rec['tokens_per_s']:,.0f} tokens/s")
    bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}", tok_s=f"{rec['tokens_per_s']:,.0f}")


def progress_bar(args, step: int, master: bool):
    """tqdm on rank 0 (sparse updates when stderr is a log file), None elsewhere."""
    if not master:
        return None
    from tqdm import tqdm

    return tqdm(
        total=args.num_total_train_steps,
        initial=step,
        desc="pretrain",
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )


def save_final(out: Path, model, step: int, tokens_seen: int) -> None:
    """final/: the model (published names) and the tokenizer, for evaluation and sharing."""
    with atomic_dir(out / "final") as tmp:
        save_model(model, tmp)
        save_tokenizer(tmp)
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "tokens_seen": tokens_seen}))
    print(f"done: {step} steps, {tokens_seen:,} token positions; model in {out / 'final'}")


def human_time(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else (f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s")


# ----------------------------------------------------------------------------- main
def main(argv=None, index: int = 0) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    stop = {"signal": None}  # set by a signal handler; the loop checks it after each step
    install_stop_handlers(stop)
    env = setup_device(args)
    master = env.master
    args.gradient_accumulation_steps = accumulation_steps(args, env.world)  # before anything is written
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars in the logs
    autocast = (
        torch.autocast(device_type=env.kind, dtype=torch.bfloat16)
        if args.precision == "bf16"
        else contextlib.nullcontext()
    )

    # --- data (fail fast: training never builds data), output dir, what to resume
    train_shards = list_shards(args.dataset_path, "train")
    test_shards = list_shards(args.dataset_path, "test") if args.do_eval else []
    cache_dir = Path(args.shard_cache_dir or out / ".shard-cache") / f"rank{env.rank}"
    if args.max_seq_length is None:  # the data's own length (the workflow passes none for a downloaded corpus)
        args.max_seq_length = sequence_length(train_shards[0])
    resume_from, lock = prepare_output_dir(args, env)  # noqa: F841 (the lock is held until the process ends)

    # --- model, optimizer, resume
    torch.manual_seed(args.seed)  # same initial weights on every rank
    random.seed(args.seed)
    np.random.seed(args.seed)
    model = build_model(args, env.kind).to(env.device)
    if env.kind == "xla":  # [xla] moving to the device re-creates parameters: tie the decoder again
        model.tie_weights()
    optimizer = build_optimizer(model, args, verbose=master)
    step, position, tokens_seen = 0, None, 0
    torch.manual_seed(args.seed + 1000 * (env.rank + 1))  # dropout masks differ per rank
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer)
        restore_rng(resume_from, state, env.rank)
        step, position, tokens_seen = state["step"], tuple(state["data_position"]), state["tokens_seen"]
        if master:
            truncate_metrics(out / "metrics.jsonl", step)
            print(f"resumed from {resume_from} at step {step}")
    train_model = torch.compile(model) if args.compile else model
    if env.ddp:  # [ddp]
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[env.device.index] if env.kind == "cuda" else None
        )

    # --- this rank's micro-batches
    fixed_shape = args.mlm_gather == "positions" or (
        args.mlm_gather == "auto" and env.kind == "xla"
    )  # [xla] static shapes
    stream = TrainStream(
        train_shards,
        args.per_device_train_batch_size,
        env.rank,
        env.world,
        args.seed,
        cache_dir,
        position,
        fixed_shape,
        args.max_seq_length,
        max_visits=args.max_train_shards,
        accumulation=args.gradient_accumulation_steps,
    )
    batches = iter(stream)
    if env.kind == "xla":  # [xla] host->device copies in the background, fixed shapes
        import torch_xla
        import torch_xla.core.xla_model as xm
        import torch_xla.distributed.parallel_loader as pl

        batches = iter(pl.MpDeviceLoader(stream, env.device))

    global_batch = args.per_device_train_batch_size * env.world * args.gradient_accumulation_steps
    tokens_per_step = global_batch * args.max_seq_length
    fpt, peak = flops_per_token(model, args), peak_flops(env.device, args.precision)
    if master:
        print_summary(args, model, env, global_batch, len(train_shards), len(test_shards), step, fpt * tokens_per_step)
    log = MetricsLog(out, args.tensorboard, master)

    def checkpoint(at_step: int) -> Path:
        if env.kind == "xla":  # [xla] run the pending graph once, so each .cpu() below is a plain copy
            torch_xla.sync()
        state = {
            "step": at_step,
            "tokens_seen": tokens_seen,
            "data_position": list(stream.position()),
            "world_size": env.world,
            "args": vars(args),
        }
        return save_checkpoint(out, at_step, model, optimizer, state, env.rank, env.world, args.save_total_limit)

    poison = int(os.environ.get("BIGS_FAULT_NAN_AT_STEP", -1))  # fault injection for tests
    bar = progress_bar(args, step, master)
    train_model.train()
    t_start = t_log = time.time()
    loss_sum, loss_n, eta_told = 0.0, 0, False
    while step < args.num_total_train_steps:
        lr = lr_at(step, args)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        try:
            micro = [next(batches) for _ in range(args.gradient_accumulation_steps)]
        except StopIteration:  # --max_train_shards visits done (the original's other stop)
            if master:
                print(f"\n--max_train_shards: {args.max_train_shards} shard visits done at step {step}; stopping")
            break
        # Loss = Σ cross-entropy over every masked token of the global batch / their number.
        weights = loss_weights(micro, env)
        loss_acc = torch.zeros((), device=env.device)
        for i, batch in enumerate(micro):
            if env.kind != "xla":
                batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
            last = i == len(micro) - 1
            with contextlib.nullcontext() if last or not env.ddp else train_model.no_sync():  # [ddp] sync once per step
                with autocast:
                    loss = train_model(**batch).loss * weights[i]
                if step == poison:
                    loss = loss * float("nan")
                (loss * (env.world if env.ddp else 1)).backward()  # DDP averages over ranks; × world = the sum
            loss_acc += loss.detach()
        clip = args.max_grad_norm if args.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if env.kind == "xla":  # [xla] all-reduce of gradients across cores + step
            xm.optimizer_step(optimizer)
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += tokens_per_step
        log_now = step % args.logging_steps == 0 or step == args.num_total_train_steps
        if env.kind != "xla" or log_now:  # [xla] reading a value ends the lazy graph: only at log steps
            (loss_val,) = all_reduce_sum([loss_acc.item()], env)  # [ddp] each rank holds its share
            if not math.isfinite(loss_val):
                last_good = complete_checkpoints(out)
                print(
                    f"error: non-finite loss ({loss_val}) at step {step}; last good checkpoint: "
                    f"{last_good[-1] if last_good else 'none'}",
                    file=sys.stderr,
                )
                return EXIT_NONFINITE
            loss_sum, loss_n = loss_sum + loss_val, loss_n + 1
        if bar is not None:
            bar.update(1)
        if log_now:
            n_steps = step % args.logging_steps or args.logging_steps
            rec = train_record(
                step,
                tokens_seen,
                n_steps,
                time.time() - t_log,
                time.time() - t_start,
                loss_sum / max(loss_n, 1),
                lr,
                float(grad_norm),
                args,
                tokens_per_step,
                fpt,
                peak,
                env,
            )
            log(rec)
            show_progress(bar, rec, first=not eta_told)
            t_log, loss_sum, loss_n, eta_told = time.time(), 0.0, 0, True
        if test_shards and (step % args.eval_steps == 0 or step == args.num_total_train_steps):
            res = evaluate_test(model, test_shards, args, env, fixed_shape, cache_dir)
            log(
                {
                    "kind": "eval",
                    "step": step,
                    "tokens_seen": tokens_seen,
                    "wall_time": round(time.time() - t_start, 3),
                    **res,
                }
            )
            if master:
                print(
                    f"\nstep {step}: eval loss {res['eval_loss']:.4f} acc {res['eval_accuracy']:.4f} ppl {res['eval_perplexity']:.2f}"
                )
            t_log = time.time()
        (stopping,) = all_reduce_sum([float(stop["signal"] is not None)], env)  # [ddp] stop together
        if step % args.save_steps == 0 or stopping:
            path = checkpoint(step)
            if stopping:
                if master:
                    print(
                        f"stopped by {stop['signal'] or 'a peer rank'} at step {step}; checkpoint {path}; "
                        f"exit {EXIT_PREEMPTED} (requeue to resume)"
                    )
                return EXIT_PREEMPTED
    if bar is not None:
        bar.close()

    # --- the end: final checkpoint (resumable) and final/ (model only, for evaluation and sharing)
    if step % args.save_steps != 0:  # the loop saved at multiples of save_steps; same decision on every rank
        checkpoint(step)
    if env.kind == "xla":  # [xla]
        torch_xla.sync()
    if master:
        save_final(out, model, step, tokens_seen)
    log.close()
    shutil.rmtree(cache_dir, ignore_errors=True)  # staged gs:// shards
    if env.ddp:  # [ddp]
        dist.destroy_process_group()
    return 0


def save_tokenizer(directory: Path) -> None:
    """Ship the bundled bert-large-uncased WordPiece vocab with the model, so fill-mask works offline."""
    from importlib.resources import files

    vocab = files("bigs.data") / "vocab" / "bert-large-uncased-vocab.txt"
    shutil.copyfile(str(vocab), directory / "vocab.txt")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}, indent=1)
    )


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
