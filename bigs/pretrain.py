"""BiGS masked-LM pretraining, one flat loop: `python -m bigs.pretrain --output_dir D --dataset_path P ...`.

Takes the seed's command line as is (the original BiGS pre-training README, jxiw/BiGS) with
`python -m bigs.pretrain` in place of `python pretrain.py`, plus device, precision, resume and
logging flags. Runs on
  - CPU:   python -m bigs.pretrain ...            (several processes: torchrun, gloo)
  - CUDA:  torchrun --nproc_per_node=8 -m bigs.pretrain ... --precision bf16   (NCCL DDP)
  - TPU:   PJRT_DEVICE=TPU python -m bigs.pretrain ... --device xla  (torch_xla.launch, all cores)
`--dataset_path` is a local directory or gs://bucket/prefix (shards are streamed: fetched,
used, deleted; the next one is prefetched in the background).

Reading order: flags -> the recipe (global batch, schedule) -> the model -> the set-up steps main()
names -> main() -> train(), the loop. What both loops share (device, step, checkpoints, run dir,
signals, metrics) lives in bigs/train/; device back-ends differ only in lines marked `# [xla]`,
`# [cuda]` or `# [ddp]`.

Exit codes (bigs/errors.py): 0 done, 2 bad input or a busy output_dir, 3 stopped by SIGTERM/SIGUSR1
or a first Ctrl-C after writing a checkpoint (requeue the job: it resumes), 4 non-finite loss (names
the step and the last good checkpoint), 5 a peer rank or node died or hung past --dist_timeout
(rerun on every node: it resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bigs.data.format import check_fits, list_shards, sequence_length
from bigs.data.stream import TrainStream
from bigs.errors import EXIT_PEER_LOST, EXIT_PREEMPTED, BigsError, atomic_dir, cli_main
from bigs.tokenizer import quiet_transformers, save_tokenizer
from bigs.train import checkpoint as ckpt
from bigs.train import distributed, xla_cpu
from bigs.train.flags import positive, str2bool
from bigs.train.metrics import MetricsLog, Window, flops_per_token, human_time, peak_flops, progress_bar
from bigs.train.optim import build_optimizer
from bigs.train.rundir import prepare_output_dir, truncate_metrics
from bigs.train.runtime import Runtime, all_reduce_sum, seed_everything, setup
from bigs.train.schedule import Schedule, set_lr
from bigs.train.signals import StopFlag
from bigs.train.step import check_finite, loss_weights, train_step
from bigs.train.warmstart import POSITION_INITS, check_source, load_into


# ----------------------------------------------------------------------------- flags
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
        "shape), positions = gather at masked_positions (B, P) (fixed shape); auto = positions on XLA, on "
        "CUDA and with --compile (no graph break, no host sync), boolean on CPU",
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
    # --- a new run from a model's weights (the original's flag name; bigs/train/warmstart.py)
    p.add_argument(
        "--model_name_or_path",
        default=None,
        help="start a NEW run from this model's weights (final/, checkpoint-<step>/, a saved model dir, or a "
        "hub name online): fresh optimizer, schedule and step 0. A run with its own checkpoint resumes that",
    )
    p.add_argument(
        "--position_init",
        default="tile",
        choices=list(POSITION_INITS),
        help="the position rows a longer run adds to the model's: tile (repeat the learned rows, as Longformer) "
        "or random (N(0, 0.02))",
    )
    # --- academic-budget-bert's time budget (its flag names and units)
    p.add_argument(
        "--total_training_time",
        type=positive(float),
        default=None,
        help="hours: the training budget (wall time of the training loop, evaluations and checkpoint writes "
        "included, over every resumed part). The schedule runs over it; whichever of it or "
        "--num_total_train_steps ends first ends the run (checkpoint, final/, exit 0)",
    )
    p.add_argument(
        "--early_exit_time_marker",
        type=positive(float),
        default=None,
        help="hours: stop here though the schedule runs over --total_training_time (academic-budget-bert's)",
    )
    p.add_argument(
        "--finetune_time_markers",
        type=time_markers,
        default=None,
        help="fractions of --total_training_time, e.g. 0.25,0.5,0.75: keep a model at each in "
        "output_dir/marker-<fraction>/ for fine-tuning along the budget",
    )
    p.add_argument(
        "--warmup_proportion",
        type=float,
        default=None,
        help="warmup as a fraction of the schedule (academic-budget-bert's); default "
        "--warmup_steps / --num_total_train_steps",
    )
    return p


def time_markers(s: str) -> list[float]:
    """--finetune_time_markers 0.25,0.5,0.75 -> sorted fractions in (0, 1)."""
    try:
        marks = sorted({float(x) for x in s.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.25,0.5,0.75, got {s!r}") from None
    if not marks or not all(0 < m < 1 for m in marks):
        raise argparse.ArgumentTypeError(f"fractions of --total_training_time must be in (0, 1), got {s!r}")
    return marks


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.precision is None:
        args.precision = "bf16" if args.dtype == "bfloat16" else "fp32"
    if args.warmup_steps < 0 or args.warmup_steps > args.num_total_train_steps:
        raise BigsError(f"--warmup_steps: {args.warmup_steps} must be in [0, --num_total_train_steps]")
    if not args.do_train:
        raise BigsError("--do_train: false is not supported; use `python -m bigs.evaluate` to evaluate a checkpoint")
    for flag in ("early_exit_time_marker", "finetune_time_markers"):
        if getattr(args, flag) is not None and args.total_training_time is None:
            raise BigsError(f"--{flag}: needs --total_training_time (the budget it is measured against)")
    if args.warmup_proportion is not None and not 0 <= args.warmup_proportion < 1:
        raise BigsError(f"--warmup_proportion: {args.warmup_proportion} must be in [0, 1)")
    return args


# ----------------------------------------------------------------------------- the recipe
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


def schedule(args) -> Schedule:
    """The original's optax schedule: warmup, then cosine to α·lr / linear to 0 / constant (REFERENCE.md §1),
    over --num_total_train_steps; with a time budget its position is schedule_position's."""
    T = args.num_total_train_steps
    warmup = args.warmup_steps if args.warmup_proportion is None else args.warmup_proportion * T
    return Schedule(args.learning_rate, warmup, T, args.schedule_type, args.cosine_schedule_alpha)


def schedule_position(args, step: int, elapsed_s: float) -> float:
    """Where the schedule is: the step; with --total_training_time, the further of the step and the
    budget's fraction spent (× the steps), as academic-budget-bert's time-based schedule and cramming's
    budget schedules do, so the run ends decayed whichever of steps or time ends it first."""
    if args.total_training_time is None:
        return step
    return max(step, args.num_total_train_steps * elapsed_s / (3600 * args.total_training_time))


def time_up(args, elapsed_s: float) -> str | None:
    """Which time limit ends the run now, if one does."""
    hours = elapsed_s / 3600
    if args.total_training_time is not None and hours >= args.total_training_time:
        return f"--total_training_time {args.total_training_time:g} h"
    if args.early_exit_time_marker is not None and hours >= args.early_exit_time_marker:
        return f"--early_exit_time_marker {args.early_exit_time_marker:g} h"
    return None


def mlm_gather(args, kind: str) -> str:
    """How the MLM head finds the masked tokens. auto: the fixed-shape gather at masked_positions
    where shapes must not depend on the data (XLA; torch.compile, which would split the graph in
    three with dynamic shapes; CUDA, where the boolean mask costs two host syncs per micro-batch);
    the boolean mask on CPU eager (no sync to avoid, fewer head rows)."""
    if args.mlm_gather != "auto":
        return args.mlm_gather
    return "positions" if kind in ("xla", "cuda") or args.compile else "boolean"


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


# ----------------------------------------------------------------------------- set-up steps of main()
@dataclass
class Run:
    """Everything the loop reads and updates, named once."""

    args: argparse.Namespace
    rt: Runtime
    out: Path
    model: torch.nn.Module  # the weights (checkpoints, evaluation)
    forward: torch.nn.Module  # the model as trained: compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    batches: object  # iterator over this rank's micro-batches ([xla]: through the device loader)
    state: ckpt.TrainState
    test_shards: list
    gather: str  # "boolean" | "positions"
    position: tuple  # the data position after the last batch trained on (for checkpoints)
    stop: StopFlag
    log: MetricsLog
    cache_dir: Path

    @property
    def global_batch(self) -> int:
        return self.args.per_device_train_batch_size * self.rt.world * self.args.gradient_accumulation_steps

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.args.max_seq_length


def warm_start_source(args):
    """--model_name_or_path checked against the flags before anything is written (None without it)."""
    if args.model_name_or_path is None:
        return None
    sizes = {
        "hidden_size": args.hidden_size,
        "num_hidden_layers": args.n_layers,
        "intermediate_size": args.intermediate_size,
    }
    if args.model_type == "s4-bert":
        sizes["num_ssm"] = args.num_ssm
    return check_source(
        args.model_name_or_path, model_type=args.model_type, sizes=sizes, max_seq_length=args.max_seq_length
    )


_BUILD = threading.Lock()


def build_training(args, rt: Runtime, resume_from, source=None):
    """Model (same initial weights on every rank), optimizer, and the state: resumed from the run's own
    checkpoint, or a new run from a model's weights (`source`), or from scratch."""
    with _BUILD:  # [xla] device threads share one CPU generator: each seeds and builds, one at a time
        seed_everything(args.seed)  # the same initial weights on every rank
        model = build_model(args, rt.kind)
        torch.manual_seed(args.seed + 1000 * (rt.rank + 1))  # then dropout masks differ per rank
    state = ckpt.TrainState(world_size=rt.world, args=vars(args))
    if resume_from is None and source is not None:  # a run's own checkpoint wins: never re-initialised
        load_into(model, source, position_init=args.position_init, seed=args.seed)
        state.init_from, state.tokens_seen = source.name, source.tokens_seen
        if rt.master:
            print(
                f"weights from {source.name} ({source.positions} positions, {source.tokens_seen:,} token positions "
                f"seen){f'; positions {source.positions}..{args.max_seq_length - 1}: {args.position_init}' if args.max_seq_length > source.positions else ''}"
            )
    model = model.to(rt.device)
    if rt.kind == "xla":  # [xla] moving to the device re-creates parameters: tie the decoder again
        model.tie_weights()
    optimizer = build_optimizer(
        model,
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        adafactor=args.adafactor,
        verbose=rt.master,
    )
    if rt.kind == "xla":  # [xla] dropout draws from the device's own generator
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(args.seed + 1000 * (rt.rank + 1), rt.device)
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, model, optimizer, rt=rt)
        if state.data_position:  # saved by another split over devices: the same point of the data
            saved = state.args["per_device_train_batch_size"] * state.world_size
            where = f"{resume_from}/trainer_state.json"
            state.data_position = TrainStream.regroup(
                state.data_position, saved, args.per_device_train_batch_size * rt.world, where
            )
        state.args, state.world_size = vars(args), rt.world
        if rt.master:
            truncate_metrics(Path(args.output_dir) / "metrics.jsonl", state.step)
            print(f"resumed from {resume_from} at step {state.step}")
    forward = torch.compile(model) if args.compile else model
    if rt.ddp:  # [ddp]
        forward = torch.nn.parallel.DistributedDataParallel(
            forward, device_ids=[rt.device.index] if rt.kind == "cuda" else None
        )
    return model, forward, optimizer, state


def open_stream(args, rt: Runtime, shards: list, state: ckpt.TrainState, *, gather: str, cache_dir: Path):
    """This rank's micro-batches from the state's data position; [xla] through the device loader."""
    stream = TrainStream(
        shards,
        per_device=args.per_device_train_batch_size,
        rank=rt.rank,
        world=rt.world,
        seed=args.seed,
        accumulation=args.gradient_accumulation_steps,
        position=tuple(state.data_position) if state.data_position else None,
        fixed_shape=gather == "positions",
        max_seq_length=args.max_seq_length,
        max_visits=args.max_train_shards,
        cache_dir=cache_dir,
        with_position=True,  # the position after each batch travels with it: exact resume behind a device loader
    )
    if rt.kind == "xla":  # [xla] host->device copies in the background, fixed shapes
        import torch_xla.distributed.parallel_loader as pl

        return stream, iter(pl.MpDeviceLoader(stream, rt.device))
    return stream, iter(stream)


def print_summary(r: Run, n_train: int) -> None:
    """The start-up summary; the estimated time to finish follows once the speed is known."""
    args, rt = r.args, r.rt
    n_params = sum(p.numel() for p in r.model.parameters())
    print(
        f"model {args.model_type}: {n_params:,} parameters, {args.n_layers} layers, H {args.hidden_size}, "
        f"I {args.intermediate_size}, L {args.max_seq_length}"
    )
    print(
        f"device {rt.kind} × {rt.world}; precision {args.precision}; global batch {r.global_batch} "
        f"({args.per_device_train_batch_size} × {rt.world} devices × {args.gradient_accumulation_steps} accumulation); "
        f"{r.tokens_per_step:,} token positions per step; {n_train} train / {len(r.test_shards)} test shards"
    )
    fps = flops_per_token(r.model, args.max_seq_length) * r.tokens_per_step
    print(
        f"steps {r.state.step} -> {args.num_total_train_steps}; ≈{fps:.3g} FLOPs per step; MLM head gather "
        f"{r.gather}{' (auto)' if args.mlm_gather == 'auto' else ''}"
    )
    frac = eval_cost_fraction(args, r.global_batch, rt.world)
    if not r.test_shards:
        print("evaluation: off (no test shards or --do_eval false)")
    elif frac is None:
        print(f"evaluation every {args.eval_steps} steps and at the end, the whole test split each")
    else:
        print(
            f"evaluation every {args.eval_steps} steps and at the end, {args.eval_batches} batches × "
            f"{args.per_device_eval_batch_size} × {rt.world} devices each: ≈{frac:.2%} of the training compute"
        )
    if args.total_training_time is not None:
        print(
            f"time budget {args.total_training_time:g} h (the schedule runs over it; {r.state.elapsed_s / 3600:.3g} h "
            f"spent){f', early exit at {args.early_exit_time_marker:g} h' if args.early_exit_time_marker else ''}"
            + (
                f"; models kept at {', '.join(f'{m:g}' for m in args.finetune_time_markers)} of it"
                if args.finetune_time_markers
                else ""
            )
        )
    if is_paper_recipe(args) and r.global_batch != PAPER_GLOBAL_BATCH:
        print(
            f"warning: the paper's recipe (23 layers, H 1024, 100k steps) uses a global batch of {PAPER_GLOBAL_BATCH}, "
            f"this run {r.global_batch}: pass --global_batch_size {PAPER_GLOBAL_BATCH}",
            file=sys.stderr,
        )


def evaluate_test(r: Run) -> dict:
    """Masked-LM metrics on the test shards (bigs.evaluate's), token-weighted over ranks. A rank whose
    share of the test split is empty adds zeros: it joins the sum instead of leaving the others waiting."""
    from bigs.evaluate import mlm_metrics, mlm_sums, shard_batches

    args, rt = r.args, r.rt
    batches = shard_batches(
        r.test_shards,
        args.per_device_eval_batch_size,
        r.model.config.vocab_size,
        max_positions=args.max_seq_length,
        rank=rt.rank,
        world=rt.world,
        fixed_shape=r.gather == "positions",
        cache_dir=r.cache_dir / "test",
    )
    if rt.kind == "xla":  # [xla] one graph per batch (the loader marks the step)
        import torch_xla.distributed.parallel_loader as pl

        batches = pl.MpDeviceLoader(batches, rt.device)
    sums = mlm_sums(r.model, batches, rt.device, args.eval_batches or None, rt.autocast())
    loss_sum, correct, n, n_batches = all_reduce_sum(list(sums), rt)  # [ddp]
    return {**mlm_metrics(loss_sum, correct, n), "eval_batches": int(n_batches)}


def train_record(r: Run, window: Window, lr: float, grad_norm) -> dict:
    """One metrics.jsonl training line: the mean loss and the speed since the last one."""
    args, rt, state = r.args, r.rt, r.state
    loss, dt, steps = window.close()
    tps = steps * r.tokens_per_step / max(dt, 1e-9)
    peak = peak_flops(rt.device, rt.bf16)
    rec = {
        "kind": "train",
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "wall_time": round(state.elapsed_s, 3),
        "loss": loss,
        "lr": lr,
        "grad_norm": float(grad_norm),
        "tokens_per_s": tps,
        "samples_per_s": tps / args.max_seq_length,
        "mfu": tps * flops_per_token(r.model, args.max_seq_length) / (peak * rt.world) if peak else None,
        "eta_s": round(eta_s(args, state, dt / steps), 1),
    }
    if rt.kind == "xla":  # [xla] the compile count must stop growing after warm-up
        import torch_xla.debug.metrics as met

        rec["xla_compiles"] = (met.metric_data("CompileTime") or [0])[0]
    return rec


def log_train(r: Run, rec: dict, bar, first: bool) -> None:
    """A training line into metrics.jsonl and the bar; the first one also says when the run will end."""
    r.log(rec)
    if bar is None:
        return
    if first:
        print(f"\nestimated time to finish: {human_time(rec['eta_s'])} at {rec['tokens_per_s']:,.0f} tokens/s")
    bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}", tok_s=f"{rec['tokens_per_s']:,.0f}")


def log_eval(r: Run, res: dict) -> None:
    state = r.state
    r.log(
        {
            "kind": "eval",
            "step": state.step,
            "tokens_seen": state.tokens_seen,
            "wall_time": round(state.elapsed_s, 3),
            **res,
        }
    )
    if r.rt.master:
        print(
            f"\nstep {state.step}: eval loss {res['eval_loss']:.4f} acc {res['eval_accuracy']:.4f} "
            f"ppl {res['eval_perplexity']:.2f}"
        )


def eta_s(args, state: ckpt.TrainState, step_s: float) -> float:
    """Seconds to the end: the steps left at this speed, or what is left of the time budget if less."""
    eta = (args.num_total_train_steps - state.step) * step_s
    if args.total_training_time is not None:
        limit = min(args.total_training_time, args.early_exit_time_marker or math.inf)
        eta = min(eta, max(limit * 3600 - state.elapsed_s, 0.0))
    return eta


def save_checkpoint(r: Run) -> Path:
    r.state.data_position = list(r.position)  # the last consumed batch's (the stream may be ahead: [xla])
    return ckpt.save_checkpoint(r.out, r.state, r.model, r.optimizer, rt=r.rt, keep=r.args.save_total_limit)


def published_state(r: Run, **extra) -> dict:
    """trainer_state.json of a published model (final/, marker-*/): where the run was, how it was trained."""
    rt = r.rt
    device = torch.cuda.get_device_name(rt.device) if rt.kind == "cuda" else rt.kind
    return {
        "step": r.state.step,
        "tokens_seen": r.state.tokens_seen,
        "elapsed_s": round(r.state.elapsed_s, 1),
        "init_from": r.state.init_from,
        **extra,
        "hardware": f"{rt.world} × {device}",
        "args": {k: v for k, v in vars(r.args).items() if k not in ("output_dir", "dataset_path", "shard_cache_dir")},
    }


def publish(r: Run, name: str, state: dict) -> None:
    """output_dir/<name>/: the model (published names), the tokenizer and trainer_state.json, whole or not at all."""
    with atomic_dir(r.out / name) as tmp:
        ckpt.write_model_dir(tmp, r.model, tokenizer=lambda d: save_tokenizer(d, r.args.max_seq_length), state=state)


def save_final(r: Run) -> None:
    """final/, for evaluation and sharing."""
    publish(r, "final", published_state(r))
    print(f"done: {r.state.step} steps, {r.state.tokens_seen:,} token positions; model in {r.out / 'final'}")


def save_markers(r: Run, at_end: bool = False) -> None:
    """marker-<fraction>/ for each --finetune_time_markers fraction of the budget crossed by now; at the
    end of a run, also those it never reached (the final model, marked "reached": false)."""
    args, hours = r.args, r.state.elapsed_s / 3600
    for m in args.finetune_time_markers or ():
        reached = hours >= m * args.total_training_time
        if (reached or at_end) and not (r.out / f"marker-{m:g}").exists():
            if r.rt.kind == "xla":  # [xla] the pending graph once, before the host copies
                import torch_xla

                torch_xla.sync()
            if r.rt.master:
                publish(r, f"marker-{m:g}", published_state(r, marker=m, hours=round(hours, 4), reached=reached))
                if not reached:
                    print(
                        f"warning: time marker {m:g} not reached (the run ended at {hours:.3g} h): marker-{m:g}/ "
                        "holds the final model",
                        file=sys.stderr,
                    )


# ----------------------------------------------------------------------------- main
def main(argv=None, stop: StopFlag | None = None) -> int:
    """The run; `stop`: a flag installed by the caller ([xla] the launcher: device threads cannot install one)."""
    args = parse_args(argv)
    out = Path(args.output_dir)
    # before anything is written: a signal during set-up stops cleanly too
    with StopFlag() if stop is None else contextlib.nullcontext(stop) as stop:
        rt = setup(args.device, bf16=args.precision == "bf16", dist_timeout=args.dist_timeout)
        args.gradient_accumulation_steps = accumulation_steps(args, rt.world)  # before anything is written
        quiet_transformers()  # no "Writing model shards" bars or load notes in the logs

        # --- data (fail fast: training never builds data), output dir, what to resume
        train_shards = list_shards(args.dataset_path, "train")
        test_shards = list_shards(args.dataset_path, "test") if args.do_eval else []
        if args.max_seq_length is None:  # the data's own length (the workflow passes none for a downloaded corpus)
            args.max_seq_length = sequence_length(train_shards[0])
        source = warm_start_source(args)
        if test_shards:  # refused now, not at the first evaluation hours in
            check_fits(test_shards[0], sequence_length(test_shards[0]), args.max_seq_length)
        resume_from, lock = prepare_output_dir(out, rt, resume=args.resume, overwrite=args.overwrite_output_dir)

        # --- model, optimizer, resume; this rank's data
        model, forward, optimizer, state = build_training(args, rt, resume_from, source)
        gather = mlm_gather(args, rt.kind)
        cache_dir = Path(args.shard_cache_dir or out / ".shard-cache") / f"rank{rt.rank}"
        stream, batches = open_stream(args, rt, train_shards, state, gather=gather, cache_dir=cache_dir)
        log = MetricsLog(out, tensorboard=args.tensorboard, master=rt.master)
        r = Run(
            args=args, rt=rt, out=out, model=model, forward=forward, optimizer=optimizer,
            batches=batches, state=state, test_shards=test_shards, gather=gather,
            position=stream.position(), stop=stop, log=log, cache_dir=cache_dir,
        )  # fmt: skip
        if rt.master:
            print_summary(r, len(train_shards))
        code = train(r)
        if code == 0:  # the end: final checkpoint (resumable) and final/ (model only)
            if state.step % args.save_steps != 0:  # the loop saved at multiples; same decision on every rank
                save_checkpoint(r)
            save_markers(r, at_end=True)
            if rt.master:
                save_final(r)
            shutil.rmtree(cache_dir, ignore_errors=True)  # staged gs:// shards
        log.close()
        if lock is not None:
            lock.close()
    if rt.ddp:  # [ddp]
        import torch.distributed as dist

        dist.destroy_process_group()
    return code


def train(r: Run) -> int:
    """The loop: lr, global batch, step, log, evaluate, checkpoint; 0 at the end, 3 when stopped."""
    args, rt, state = r.args, r.rt, r.state
    lr_schedule, poison = schedule(args), int(os.environ.get("BIGS_FAULT_NAN_AT_STEP", -1))  # fault injection
    bar = progress_bar(args.num_total_train_steps, initial=state.step, desc="pretrain", enabled=rt.master)
    window, logged = Window(), False
    t0, elapsed0 = time.time(), state.elapsed_s  # the loop's wall time adds to earlier parts' (TrainState)
    r.forward.train()
    while state.step < args.num_total_train_steps:
        lr = lr_schedule.at(schedule_position(args, state.step, state.elapsed_s))
        set_lr(r.optimizer, lr)
        try:
            micro = [next(r.batches) for _ in range(args.gradient_accumulation_steps)]
            r.position = [b.pop("position") for b in micro][-1]
        except StopIteration:  # --max_train_shards visits done (the original's other stop)
            if rt.master:
                print(f"\n--max_train_shards: {args.max_train_shards} shard visits done at step {state.step}; stopping")
            break
        # loss = Σ cross-entropy over every masked token of the global batch / their number
        weights = loss_weights(micro, rt)
        loss, grad_norm = train_step(
            r.forward, micro, r.optimizer, rt=rt, weights=weights, max_grad_norm=args.max_grad_norm,
            poison=state.step == poison,
        )  # fmt: skip
        state.step, state.tokens_seen = state.step + 1, state.tokens_seen + r.tokens_per_step
        log_now = state.step % args.logging_steps == 0 or state.step == args.num_total_train_steps
        loss_val, stopping, ended = None, False, None
        if rt.kind != "xla" or log_now:  # [xla] reading a value ends the lazy graph: at log steps only
            # one all-reduce: every rank acts on the same numbers, the loss (each rank holds its share),
            # the sum of the stop flags and rank 0's clock
            now_s = elapsed0 + time.time() - t0
            loss_val, stops, state.elapsed_s = all_reduce_sum(
                [loss.item(), float(r.stop.signal is not None), now_s * rt.master], rt
            )
            check_finite(loss_val, state.step, r.out)
            stopping, ended = stops > 0, time_up(args, state.elapsed_s)
        last = ended or state.step == args.num_total_train_steps
        log_now = log_now or last
        window.add(loss_val)
        if bar is not None:
            bar.update(1)
        if log_now:
            log_train(r, train_record(r, window, lr, grad_norm), bar, first=not logged)
            logged = True
        if r.test_shards and (state.step % args.eval_steps == 0 or last):
            log_eval(r, evaluate_test(r))
            window.restart_clock()
        save_markers(r)
        if state.step % args.save_steps == 0 or stopping:
            path = save_checkpoint(r)
            if stopping:
                if rt.master:
                    print(
                        f"stopped by {r.stop.signal or 'a peer rank'} at step {state.step}; checkpoint {path}; exit {EXIT_PREEMPTED} (requeue to resume)"
                    )
                return EXIT_PREEMPTED
        if ended:
            if rt.master:
                print(f"\n{ended} spent at step {state.step}; stopping")
            break
    if bar is not None:
        bar.close()
    return 0


_XLA_STOP: StopFlag | None = None  # [xla] the launcher's, inherited by the process it forks (not pickled)


def _xla_entry(index, argv):  # [xla] one thread per device (TPU core, XLA:CPU device)
    xla_cpu.install()  # several XLA:CPU devices: collectives that meet (a no-op on a TPU)
    try:
        code = main(argv, _XLA_STOP)
    except BaseException as exc:
        xla_cpu.fail(exc)  # the other device threads stop waiting for this one, with its error
        raise
    if code:
        sys.exit(code)  # reaches the launching process (torch_xla.launch re-raises it there)


def run(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if build_parser().parse_known_args(argv)[0].device == "xla":  # [xla]
        import torch_xla

        n = xla_cpu.cpu_devices()
        if n > 1:
            xla_cpu.configure(n)
        # The process torch_xla.launch forks inherits this flag and its handlers (its device threads
        # cannot install one): a module global, not an argument, which would reach it pickled (a copy).
        # SIGTERM / SIGUSR1 sent to this launcher are passed on to it.
        global _XLA_STOP
        with StopFlag(forward=True) as _XLA_STOP:
            torch_xla.launch(_xla_entry, args=(argv,), start_method="fork", debug_single_process=n == 1)
        return 0
    return distributed.reporting_lost_peers(main, argv, output_dir=lambda: parse_args(argv).output_dir)


if __name__ == "__main__":
    cli_main(run)
