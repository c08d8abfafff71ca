"""One-shot GPU check: parity, step speed, long sequences, real training, projection.

    bash benchmarks/gpu_check.sh OUT_DIR            # one GPU, paper size; < 8 min on an H200
    bash benchmarks/gpu_check.sh --smoke OUT_DIR    # the same code at tiny sizes, CPU or GPU (~1 min)

Writes OUT_DIR/gpu_check.json with the top-level keys preflight, parity, step, long_sequence,
training, projection, and OUT_DIR/gpu_check.md (the same as tables, also printed at the end).

Time: the whole check ends within 8 minutes of the shell script's start, whatever happens. The
budget counts from there (imports and CUDA start-up included); each section has its share and
every part of it is planned from measured times (CLI start-ups, steps, checkpoint writes, the
in-process sync counts): what would not fit is "skipped: reason", never overrun. A child process
that runs past its time is killed with its log kept. At the hard stop (TOTAL_S) a watchdog kills
any child, writes the JSON and markdown of what was measured, and exits 1.

Pre-flight: without a usable GPU the full check stops within seconds (exit 3), printing the
driver (nvidia-smi) and torch's own reason (a CPU build, no device, a driver older than the
wheel's CUDA). Exit 1 when a check failed or anything errored, 2 on bad usage.

Sizes are the trainer's flags: its defaults are the paper recipe (23 layers, H 1024, I 3072,
N 64, L 128, micro-batch 131; bigs.pretrain.build_parser), --smoke overrides them, and the
training section passes the same flags to `python -m bigs.pretrain`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import gc
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import child
import numpy as np
import torch
import transformers
from bench_pretrain import RECIPE_TOKENS, measure, synthetic_shard, trainer_args, trainer_step

from bigs.data.format import read_shard, write_shard
from bigs.data.stream import TrainStream
from bigs.pretrain import build_model
from bigs.train import runtime
from bigs.train.metrics import flops_per_token, peak_flops
from bigs.train.runtime import Runtime

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("parity", "step", "long_sequence", "training", "projection")  # after "preflight"
LOGITS_ATOL = 1e-4  # fp32 logits, CUDA vs CPU and Toeplitz vs FFT: the same model
BF16_LOSS_RTOL = 0.02  # bf16-autocast loss vs fp32 loss: autocast must not change what is learnt
TOTAL_S = 470  # from gpu_check.sh's start to the hard stop: the whole check ends within 8 minutes of a lent GPU
BUDGET_S = {"parity": 40, "step": 120, "long_sequence": 70, "training": 170}  # torch.compile gets what is left
CLI_START_S = 25  # one `python -m bigs.pretrain` start-up: imports, CUDA, model build (paper size)
WRITE_GBPS = 0.5  # checkpoint and final/ writes, GB/s (a slow local disk; model + 2 Adam moments, fp32)
SYNC_S = 40  # sync_counts: four in-process runs of bigs.pretrain.main (CUDA only)
MLM_FRACTION = 0.15  # masked tokens per sequence at long L, as BERT's 15 % (P 20 at L 128)
TRAIN_VOCAB = 128  # the training section's shards use this many distinct word ids (training_shard)


@dataclass
class Plan:
    bigs: list  # trainer flags of the BiGS size ([] = the trainer's defaults = the paper)
    bert: list  # added to `bigs` for the BERT baseline (same L, batch, width)
    parity: list  # added to `bigs` for the small BiGS of the CUDA-vs-CPU check
    sync: list  # added to `bigs` for counting syncs: same depth, narrow (the count is per op, not per FLOP)
    long_lengths: tuple
    switch_lengths: tuple  # BiGS timed with both convolutions here (AUTO_TOEPLITZ_MAX_LEN's neighbourhood)
    timed_steps: int
    train_steps: int
    resume_at: int  # the boolean run stops here (checkpoint), then a second run resumes it
    positions_steps: int
    logging_steps: int
    compile_backend: str
    compile_min_s: float  # start torch.compile only with this much of the run left


# BERT-large: 24 layers, H 1024, I 4096; build_model gives H/64 = 16 heads and max(512, L) positions.
FULL = Plan(
    bigs=[],
    bert=["--model_type", "bert", "--n_layers", "24", "--intermediate_size", "4096"],
    parity=[
        "--n_layers",
        "3",
        "--hidden_size",
        "96",
        "--intermediate_size",
        "200",
        "--num_ssm",
        "16",
        "--per_device_train_batch_size",
        "5",
    ],
    sync=["--hidden_size", "128", "--intermediate_size", "384", "--per_device_train_batch_size", "8"],
    long_lengths=(512, 1024, 2048, 4096),
    switch_lengths=(1024, 2048),
    timed_steps=10,
    train_steps=300,
    resume_at=250,
    positions_steps=100,
    logging_steps=25,
    compile_backend="inductor",
    compile_min_s=150,
)
# lr 5e-3: six steps at the paper's 6e-4 move the tiny model's loss less than the batch-to-batch noise
SMOKE_BIGS = [
    "--n_layers",
    "2",
    "--hidden_size",
    "64",
    "--intermediate_size",
    "128",
    "--num_ssm",
    "16",
    "--max_seq_length",
    "32",
    "--max_predictions_per_seq",
    "5",
    "--per_device_train_batch_size",
    "4",
    "--learning_rate",
    "5e-3",
]
# Inductor needs ~90 s to compile even the tiny model on 2 CPU cores: smoke traces with aot_eager
# (dynamo + AOT autograd, no code generation), so the compile path runs without the wait.
SMOKE = Plan(
    bigs=SMOKE_BIGS,
    bert=["--model_type", "bert", "--intermediate_size", "256"],
    parity=FULL.parity,
    sync=[],
    long_lengths=(64, 128),
    switch_lengths=(128,),
    timed_steps=3,
    train_steps=6,
    resume_at=4,
    positions_steps=6,
    logging_steps=1,
    compile_backend="aot_eager",
    compile_min_s=20,
)

# The budget counts from the shell script's start (gpu_check.sh exports it): imports and CUDA start-up included.
T0 = float(os.environ.get("BIGS_GPU_CHECK_T0") or time.time())


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.time() - T0:4.0f}s] {msg}", flush=True)


class Budget:
    """Seconds left for one section, never past the end of the whole run (clock: injectable for tests)."""

    def __init__(self, seconds: float, run_end: float, clock=time.time):
        self.clock = clock
        self.end = min(clock() + seconds, run_end)

    def left(self) -> float:
        return self.end - self.clock()

    def skip(self, need: float) -> str | None:
        """'skipped: …' when `need` seconds do not fit, else None."""
        return (
            None if self.left() >= need else f"skipped: budget (needs ~{need:.0f} s, {max(self.left(), 0):.0f} s left)"
        )


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def tf32(rt: Runtime, on: bool) -> None:
    """TF32 for CUDA matmuls and cuDNN convolutions (training's setting is bigs.train.runtime.TF32)."""
    if rt.kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def check(measured: float, limit: float) -> dict:
    return {"measured": measured, "limit": limit, "pass": bool(measured <= limit)}


def shard_for(args, rows: int, directory: Path) -> Path:
    """A synthetic shard (bench_pretrain.synthetic_shard) at the args' L and P, made once."""
    L, P = args.max_seq_length, args.max_predictions_per_seq
    path = directory / f"train_shard_L{L}_P{P}_n{rows}.hdf5"
    if not path.exists():
        synthetic_shard(path, rows, L, P)
    return path


def training_shard(path: Path, rows: int, L: int, P: int, seed: int) -> None:
    """synthetic_shard with its word ids folded onto TRAIN_VOCAB ids, so that a short run has something to learn.

    Uniform ids over 29,000 words leave ≈0.05 nats below the initial loss (ln 30522 vs ln 29000),
    less than the noise of a short run; over 128 ids the loss can fall towards ln 128 ≈ 4.9.
    """
    synthetic_shard(path, rows, L, P, seed)
    a = read_shard(path)
    for k in ("input_ids", "masked_lm_ids"):  # [CLS] [SEP] [MASK] (ids < 1000) stay where they are
        a[k] = np.where(a[k] >= 1000, 1000 + a[k] % TRAIN_VOCAB, a[k])
    write_shard(path, **a)


def device_batches(args, gather: str, device: torch.device, directory: Path, n: int = 4) -> list[dict]:
    """n micro-batches in the trainer's layout (its TrainStream), already on the device."""
    B = args.per_device_train_batch_size
    path = shard_for(args, n * B, directory)
    stream = iter(TrainStream([str(path)], per_device=B, fixed_shape=gather == "positions"))
    return [{k: v.to(device) for k, v in next(stream).items()} for _ in range(n)]


def with_conv(model, impl: str):
    """The same weights with another convolution (BiGSConfig.conv_impl is read when layers are built)."""
    cfg = copy.deepcopy(model.config)
    cfg.conv_impl = impl
    other = type(model)(cfg)
    other.load_state_dict(model.state_dict())
    return other.to(next(model.parameters()).device)


# ----------------------------------------------------------------------------- timing
def time_step(model, args, batches, rt: Runtime, steps, compile_backend=None) -> dict:
    """The trainer's own step, bigs.train.step.train_step (fwd + bwd, token-weighted loss, clipping,
    AdamW with the trainer's groups), bf16 autocast, timed as bench_pretrain.measure does; batches
    already on the device (the loader is in the training section's numbers, from the real CLI)."""
    forward = torch.compile(model, backend=compile_backend) if compile_backend else model
    if rt.kind == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    cycle = (batches[i % len(batches)] for i in itertools.count())
    r = measure(trainer_step(args, rt, cycle, forward=forward, model=model), steps, rt.device)
    tps = batches[0]["input_ids"].numel() / r["s_per_step"]
    peak = peak_flops(rt.device, True)
    return {
        "tokens_per_s": tps,
        "ms_per_step": r["s_per_step"] * 1e3,
        "mfu": tps * flops_per_token(model, args.max_seq_length) / peak if peak else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated(rt.device) / 2**30 if rt.kind == "cuda" else None,
        "first_step_s": r["first_step_s"],
        "loss": r["loss"],
        "steps": steps,
        "batch": batches[0]["input_ids"].shape[0],
        "seq_len": batches[0]["input_ids"].shape[1],
    }


def timed(name: str, budget: Budget, need: float, fn) -> dict:
    """fn() unless `need` seconds do not fit; its exception recorded, not raised (one OOM loses one row)."""
    if (why := budget.skip(need)) is not None:
        say(f"  {name}: {why}")
        return {"skipped": why}
    try:
        r = fn()
    except Exception as exc:  # noqa: BLE001 — recorded in the JSON, counted in the exit code
        say(f"  {name}: error {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    say(
        f"  {name}: {r['tokens_per_s']:,.0f} tokens/s, {r['ms_per_step']:.1f} ms/step, first step {r['first_step_s']:.1f} s"
    )
    return r


def guard(fn) -> dict:
    """fn() or its exception as {"error": …}: one failed part never loses the rest of its section."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 — recorded in the JSON, counted in the exit code
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


# ----------------------------------------------------------------------------- sections
def stressed(model):
    """Linear weights ~ N(0, 1/fan_in) in place of the 0.02 init.

    At the 0.02 init the gated SSM branch adds ~1e-4 of the residual stream, so the logits of two
    different convolutions agree to 1e-10 and a parity check would see nothing; at this scale
    every branch moves the logits by O(1).
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, m.in_features**-0.5)
    return model


def parity(plan: Plan, rt: Runtime, work: Path, budget: Budget) -> dict:
    """fp32 logits of a small BiGS: CUDA vs CPU, Toeplitz vs FFT on the device, and what TF32 (on in
    training, bigs/train/runtime.py) changes in the logits and in the convolution alone (bf16: bf16_vs_fp32)."""
    from bigs.model import ssm_conv

    device = rt.device
    tf32(rt, False)  # the checks are about fp32 math
    res = {"device": str(device)}
    small = trainer_args(*plan.bigs, *plan.parity)
    torch.manual_seed(0)
    model = stressed(build_model(small, "cpu")).eval()
    ids = device_batches(small, "boolean", torch.device("cpu"), work, n=1)[0]["input_ids"]  # (B L)
    with torch.no_grad():
        if rt.kind == "cuda":
            ref = model(input_ids=ids).logits  # (B L V) CPU
            got = model.to(device)(input_ids=ids.to(device)).logits.cpu()
            res["cuda_vs_cpu_logits"] = {
                **check((got - ref).abs().max().item(), LOGITS_ATOL),
                "max_abs_logit": ref.abs().max().item(),
            }
        else:
            res["cuda_vs_cpu_logits"] = {"skipped": "skipped: no CUDA"}
        model.to(device)
        ids = ids.to(device)
        toe, fft = with_conv(model, "toeplitz").eval(), with_conv(model, "fft").eval()
        ref = toe(input_ids=ids).logits
        res["toeplitz_vs_fft_logits"] = {
            **check((ref - fft(input_ids=ids).logits).abs().max().item(), LOGITS_ATOL),
            "max_abs_logit": ref.abs().max().item(),
        }
        # the convolution alone at the longest L of long_sequence (auto switches to FFT beyond 1024)
        L = max(plan.long_lengths)
        g = torch.Generator().manual_seed(0)
        u = torch.randn(L, 2, 8, generator=g).to(device)  # (L B H)
        K = (torch.randn(L, generator=g) * torch.exp(-torch.arange(L) / (L / 8))).to(device)  # (L,) decaying kernel
        D = torch.randn(1, generator=g).to(device)  # (1,) as S4D.D
        y_t, y_f = ssm_conv(u, K, D, "toeplitz"), ssm_conv(u, K, D, "fft")
        res[f"toeplitz_vs_fft_conv_L{L}"] = check(((y_t - y_f).abs().max() / y_t.abs().max()).item(), LOGITS_ATOL)
        if rt.kind == "cuda":  # what training's TF32 does to the same logits and convolution (a figure, no limit)
            tf32(rt, True)
            res["tf32_vs_fp32"] = {
                "logits_max_abs_diff": (toe(input_ids=ids).logits - ref).abs().max().item(),
                f"toeplitz_conv_L{L}_rel_diff": (
                    (ssm_conv(u, K, D, "toeplitz") - y_t).abs().max() / y_t.abs().max()
                ).item(),
            }
            tf32(rt, False)
    model = toe = fft = None  # drop the reference so the memory can be freed
    free(device)
    return res


def bf16_vs_fp32(plan: Plan, rt: Runtime, work: Path, trained: Path) -> dict:
    """Loss of the model the training section trained, fp32 vs bf16 autocast, on a batch of its shards.

    A trained model, because at init every logit is ≈0 and the loss ≈ ln V whatever the precision.
    """
    from bigs.model import BiGSForMaskedLM

    if not (trained / "config.json").is_file():
        return {"skipped": "skipped: no trained model (the training section did not finish)"}
    tf32(rt, False)  # a true fp32 reference
    args = trainer_args(*plan.bigs)
    model = BiGSForMaskedLM.from_pretrained(trained).to(rt.device).eval()
    shard = work / "train-shards" / "train_shard_0.hdf5"
    b = rt.to_device(next(iter(TrainStream([str(shard)], per_device=args.per_device_train_batch_size, seed=1))))
    with torch.no_grad():
        fp32 = model(**b).loss.item()
        with rt.autocast():
            bf16 = model(**b).loss.item()
    model = None  # drop the reference so the memory can be freed
    free(rt.device)
    return {
        **check(abs(bf16 - fp32) / fp32, BF16_LOSS_RTOL),
        "loss_fp32": fp32,
        "loss_bf16": bf16,
        "model": f"{trained} (the training section's boolean run)",
    }


def step(plan: Plan, rt: Runtime, work: Path, budget: Budget) -> dict:
    """The paper-size training step: conv Toeplitz vs FFT, boolean vs positions head, TF32 on vs off,
    BiGS vs BERT-large."""
    from bigs.model import resolve_conv_impl

    device = rt.device
    tf32(rt, runtime.TF32)  # as training
    args = trainer_args(*plan.bigs)
    bert_args = trainer_args(*plan.bigs, *plan.bert)
    res = {
        "device": torch.cuda.get_device_name(device) if rt.kind == "cuda" else "cpu",
        "peak_flops_bf16": peak_flops(device, True),
        "size": {
            "layers": args.n_layers,
            "hidden": args.hidden_size,
            "intermediate": args.intermediate_size,
            "num_ssm": args.num_ssm,
            "seq_len": args.max_seq_length,
            "batch": args.per_device_train_batch_size,
            "bert_layers": bert_args.n_layers,
            "bert_intermediate": bert_args.intermediate_size,
        },
        "runs": [],
    }
    auto = resolve_conv_impl("auto", args.max_seq_length, rt.kind)

    def add(model_name, conv, gather, fn, need=15, **extra):
        label = f"{model_name} conv {conv} gather {gather}" + "".join(f" {k} {v}" for k, v in extra.items())
        r = timed(label, budget, need, fn)
        res["runs"].append({"model": model_name, "conv": conv, "gather": gather, "compile": False, **extra, **r})

    torch.manual_seed(0)
    model = build_model(args, rt.kind).to(device)
    for gather in ("boolean", "positions"):
        batches = device_batches(args, gather, device, work)
        add("BiGS", auto, gather, lambda: time_step(model, args, batches, rt, plan.timed_steps))
    if rt.kind == "cuda":  # the convolution's GEMM in true fp32: what TF32 buys in the step
        tf32(rt, False)
        add("BiGS", auto, "positions", lambda: time_step(model, args, batches, rt, plan.timed_steps), tf32=False)
        tf32(rt, True)
    other = "fft" if auto == "toeplitz" else "toeplitz"
    batches = device_batches(args, "boolean", device, work)
    model = with_conv(model, other)
    free(device)
    add("BiGS", other, "boolean", lambda: time_step(model, args, batches, rt, plan.timed_steps))
    model = None  # drop the reference so the memory can be freed
    free(device)
    torch.manual_seed(0)
    bert = build_model(bert_args, rt.kind).to(device)
    res["bert_attn_implementation"] = bert.config._attn_implementation
    for gather in ("boolean", "positions"):
        batches = device_batches(bert_args, gather, device, work)
        add(
            "BERT-large" if plan is FULL else "BERT",
            "attention",
            gather,
            lambda: time_step(bert, bert_args, batches, rt, plan.timed_steps),
        )
    bert = batches = None  # drop the reference so the memory can be freed
    free(device)
    res["checks"] = {
        "bert_sdpa": {
            "measured": res["bert_attn_implementation"],
            "limit": "sdpa",
            "pass": res["bert_attn_implementation"] == "sdpa",
        }
    }
    return res


def step_compile(plan: Plan, smoke: bool, out: Path, budget: Budget) -> dict:
    """torch.compile'd BiGS step, in a child process (its own group: a kill reaches inductor's compile
    workers too) so a slow compile is killed at the budget's end; its log is kept in OUT_DIR."""
    if (why := budget.skip(plan.compile_min_s)) is not None:
        return {"skipped": why}
    with tempfile.TemporaryDirectory() as d:
        result = Path(d) / "compile.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *(["--smoke"] if smoke else []), "--compile-worker"]
        code, text = run_child([*cmd, str(result)], out / "compile.log", budget)
        if code is None:
            return {
                "skipped": f"skipped: compile did not finish within the run's budget (killed; log {out / 'compile.log'})"
            }
        if code != 0:
            return {"error": f"compile worker exit {code}: {text.strip()[-1500:]}"}
        return json.loads(result.read_text())


def compile_worker(plan: Plan, rt: Runtime, out: Path) -> None:
    """The BiGS step under torch.compile with the fixed-shape head (bigs.pretrain's auto gather with --compile)."""
    from bigs.model import resolve_conv_impl

    tf32(rt, runtime.TF32)  # as training
    args = trainer_args(*plan.bigs)
    torch.manual_seed(0)
    model = build_model(args, rt.kind).to(rt.device)
    with tempfile.TemporaryDirectory() as d:
        batches = device_batches(args, "positions", rt.device, Path(d))
    r = time_step(model, args, batches, rt, plan.timed_steps, compile_backend=plan.compile_backend)
    r["compile_s"] = r["first_step_s"] - r["ms_per_step"] / 1e3  # first step minus a steady one
    r["backend"] = plan.compile_backend
    r["conv"] = resolve_conv_impl("auto", args.max_seq_length, rt.kind)
    out.write_text(json.dumps(r))


def long_sequence(plan: Plan, rt: Runtime, work: Path, budget: Budget) -> dict:
    """BiGS vs BERT-large at L 512/1024/2048/4096 with the step section's tokens per batch (131 × 128):
    the paper-size long-length step, and the convolution path each length takes."""
    from bigs.model import resolve_conv_impl

    tf32(rt, runtime.TF32)  # as training
    base = trainer_args(*plan.bigs)
    tokens = base.max_seq_length * base.per_device_train_batch_size
    res = {"tokens_per_batch": tokens, "runs": []}
    Lmax = max(plan.long_lengths)
    for name, extra in (("BiGS", []), ("BERT-large" if plan is FULL else "BERT", plan.bert)):
        if (why := budget.skip(20)) is not None:
            res["runs"] += [{"model": name, "seq_len": L, "skipped": why} for L in plan.long_lengths]
            continue
        torch.manual_seed(0)  # one model per kind, built for the longest L (positions table), run at each L
        model = build_model(trainer_args(*plan.bigs, *extra, "--max_seq_length", str(Lmax)), rt.kind).to(rt.device)
        for L in plan.long_lengths:
            args = trainer_args(
                *plan.bigs,
                *extra,
                "--max_seq_length",
                str(L),
                "--per_device_train_batch_size",
                str(max(1, tokens // L)),
                "--max_predictions_per_seq",
                str(round(MLM_FRACTION * L)),
            )
            convs = ["auto"] + (["toeplitz", "fft"] if name == "BiGS" and L in plan.switch_lengths else [])
            for conv in convs:  # at the lengths around the switch, both convolutions: where it belongs on this GPU

                def run(conv=conv):
                    m = model if conv == "auto" else with_conv(model, conv)
                    batches = device_batches(args, "boolean", rt.device, work)
                    return time_step(m, args, batches, rt, plan.timed_steps)

                picked = resolve_conv_impl(conv, L, rt.kind) if name == "BiGS" else "attention"
                r = timed(
                    f"{name} L {L} batch {args.per_device_train_batch_size} conv {conv} ({picked})", budget, 8, run
                )
                res["runs"].append(
                    {"model": name, "seq_len": L, "conv": picked, "forced": conv != "auto", "gather": "boolean", **r}
                )
                free(rt.device)
        model = None  # drop the reference so the memory can be freed
        free(rt.device)
    return res


def run_child(cmd: list, log: Path, budget: Budget) -> tuple[int | None, str]:
    """`cmd` in its own process group, its output in `log`, killed (group and all) when the budget
    ends (benchmarks/child.py); (exit code or None when killed, the log's text)."""
    if budget.left() < 5:
        raise RuntimeError(f"skipped: budget ({max(budget.left(), 0):.0f} s left)")
    return child.run(cmd, log, budget.left(), cwd=REPO)


def cli(flags: list, log: Path, budget: Budget) -> str:
    """`python -m bigs.pretrain FLAGS` (the real CLI) within the budget, its output kept in `log`."""
    say(f"  $ python -m bigs.pretrain {' '.join(flags)}")
    code, text = run_child([sys.executable, "-m", "bigs.pretrain", *flags], log, budget)
    if code is None:
        raise RuntimeError(f"bigs.pretrain killed at the end of its budget (log {log}): {text.strip()[-1500:]}")
    if code != 0:
        raise RuntimeError(f"bigs.pretrain exit {code} (log {log}): {text.strip()[-1500:]}")
    return text


def train_records(metrics: Path) -> list[dict]:
    return [rec for ln in metrics.read_text().splitlines() if ln.strip() and (rec := json.loads(ln))["kind"] == "train"]


def steady(records: list[dict]) -> dict:
    """The logged window of median tokens/s, the first left out (it holds start-up and warm-up)."""
    rest = sorted(records[1:] or records, key=lambda r: r["tokens_per_s"])
    return rest[len(rest) // 2]


def write_seconds(args) -> tuple[float, float]:
    """Seconds to write a checkpoint (weights + two Adam moments, fp32) and a final/ (weights) of this size."""
    with torch.device("meta"):
        n = sum(p.numel() for p in build_model(args, "cpu").parameters())
    return 3 * 4 * n / 1e9 / WRITE_GBPS, 4 * n / 1e9 / WRITE_GBPS


def fit_training(plan: Plan, step_s: float, left: float, writes: tuple[float, float], sync_s: float) -> dict:
    """The training section's steps, shortened to fit `left` seconds. Counted: three CLI start-ups,
    their steps (× 1.2 for logging and the loader), three checkpoints and two final/ writes (the
    boolean run checkpoints at resume_at and at the end, and writes final/; the positions run the
    same once), the sync counts and the bf16-vs-fp32 loss (a model load, ≈ one final/ write)."""
    ckpt_s, final_s = writes
    fixed = 3 * CLI_START_S + 3 * ckpt_s + 3 * final_s + sync_s
    per_step = step_s * 1.2
    total, resume_at, pos = plan.train_steps, plan.resume_at, plan.positions_steps
    fit = {"steps": total, "resume_at": resume_at, "positions_steps": pos, "need_s": fixed + (total + pos) * per_step}
    if fit["need_s"] <= left:
        return fit
    scale = max((left - fixed) / ((total + pos) * per_step), 0.0)
    resume_at, pos = max(int(resume_at * scale), 10), max(int(pos * scale), 10)
    fit.update(steps=max(int(total * scale), resume_at + 10), resume_at=resume_at, positions_steps=pos)
    fit["shortened"] = (
        f"to fit the budget ({left:.0f} s left, {step_s * 1e3:.0f} ms/step measured, {fixed:.0f} s fixed)"
    )
    return fit


def training(plan: Plan, rt: Runtime, work: Path, out: Path, budget: Budget, step_res: dict | None) -> dict:
    """300 steps of the real CLI (boolean head, stopped at 250 and resumed), a positions run, syncs/step,
    and the bf16-vs-fp32 loss of the trained model — each part only if it fits what is left."""
    args = trainer_args(*plan.bigs)
    logs = out / "training"
    logs.mkdir(exist_ok=True)
    shards = work / "train-shards"
    shards.mkdir(exist_ok=True)
    for k in range(2):  # each 16 micro-batches; TrainStream loops over them epoch after epoch
        training_shard(
            shards / f"train_shard_{k}.hdf5",
            16 * args.per_device_train_batch_size,
            args.max_seq_length,
            args.max_predictions_per_seq,
            seed=k,
        )
    runs = [r for r in (step_res or {}).get("runs", []) if r.get("model") == "BiGS" and "ms_per_step" in r]
    step_s = min((r["ms_per_step"] for r in runs), default=150) / 1e3
    writes = write_seconds(args)
    sync_s = SYNC_S if rt.kind == "cuda" else 0.0
    fit = fit_training(plan, step_s, budget.left(), writes, sync_s)
    total, resume_at, pos_steps = fit["steps"], fit["resume_at"], fit["positions_steps"]
    res = {"planned": {"steps": plan.train_steps, "resume_at": plan.resume_at, "positions_steps": plan.positions_steps}}
    res.update({k: v for k, v in fit.items() if k == "shortened"}, steps=total, resume_at=resume_at)
    res["positions_steps"] = pos_steps
    common = [
        *plan.bigs,
        "--dataset_path",
        str(shards),
        "--precision",
        "bf16",
        "--device",
        rt.kind,
        "--do_eval",
        "false",
        "--warmup_steps",
        str(max(total // 10, 1)),
        "--logging_steps",
        str(plan.logging_steps),
    ]
    per_run = lambda steps: CLI_START_S + steps * step_s * 1.2 + writes[0] + writes[1]  # noqa: E731

    # boolean head: stop at resume_at with a checkpoint, then the same run continues to `total`
    d = work / "run-boolean"
    flags = [*common, "--output_dir", str(d), "--mlm_gather", "boolean", "--save_steps", str(resume_at)]
    if (why := budget.skip(per_run(resume_at) - writes[1])) is not None:
        raise RuntimeError(why)
    cli([*flags, "--num_total_train_steps", str(resume_at)], logs / "boolean.log", budget)
    first_part = train_records(d / "metrics.jsonl")
    if (why := budget.skip(per_run(total - resume_at))) is not None:
        raise RuntimeError(f"{why} for the resumed run")
    text = cli([*flags, "--num_total_train_steps", str(total)], logs / "boolean-resumed.log", budget)
    resumed = [ln for ln in text.splitlines() if ln.startswith("resumed from")]
    recs = train_records(d / "metrics.jsonl")
    (logs / "boolean.metrics.jsonl").write_text((d / "metrics.jsonl").read_text())
    res["boolean"] = {
        "command": ("python -m bigs.pretrain " + " ".join(flags)).replace(str(work), "$TMP"),
        "first_loss": recs[0]["loss"],
        "last_loss": recs[-1]["loss"],
        "first_step": recs[0]["step"],
        "last_step": recs[-1]["step"],
        "tokens_per_s": steady(first_part)["tokens_per_s"],
        "mfu": steady(first_part)["mfu"],
        "resumed": resumed[0].replace(str(work), "$TMP") if resumed else None,
        "final": (d / "final").is_dir(),
    }
    for c in d.glob("checkpoint-*"):  # ~4 GB each at paper size; final/ stays for bf16_vs_fp32
        shutil.rmtree(c, ignore_errors=True)
    say(f"  boolean: loss {recs[0]['loss']:.3f} -> {recs[-1]['loss']:.3f}; {res['boolean']['resumed']}")

    # positions head: a shorter fresh run, for its speed
    def positions():
        d = work / "run-positions"
        flags = [*common, "--output_dir", str(d), "--mlm_gather", "positions", "--save_steps", str(pos_steps)]
        cli([*flags, "--num_total_train_steps", str(pos_steps)], logs / "positions.log", budget)
        precs = train_records(d / "metrics.jsonl")
        (logs / "positions.metrics.jsonl").write_text((d / "metrics.jsonl").read_text())
        shutil.rmtree(d, ignore_errors=True)
        return {
            "first_loss": precs[0]["loss"],
            "last_loss": precs[-1]["loss"],
            "tokens_per_s": steady(precs)["tokens_per_s"],
            "mfu": steady(precs)["mfu"],
        }

    why = budget.skip(per_run(pos_steps))
    res["positions"] = {"skipped": why} if why else guard(positions)
    speeds = {g: res[g]["tokens_per_s"] for g in ("boolean", "positions") if "tokens_per_s" in res[g]}
    res["faster_gather"] = max(speeds, key=speeds.get)
    res["syncs_per_step"] = guard(lambda: sync_counts(plan, rt, shards, work, budget))
    why = budget.skip(writes[1] + 5)
    res["bf16_vs_fp32_loss"] = {"skipped": why} if why else guard(lambda: bf16_vs_fp32(plan, rt, work, d / "final"))
    res["checks"] = {
        "loss_fell": {
            "measured": f"{recs[0]['loss']:.4f} -> {recs[-1]['loss']:.4f}",
            "limit": "last < first",
            "pass": recs[-1]["loss"] < recs[0]["loss"],
        },
        "resumed": {
            "measured": res["boolean"]["resumed"],
            "limit": f"resumed from checkpoint-{resume_at}",
            "pass": bool(resumed) and f"checkpoint-{resume_at}" in resumed[0] and res["boolean"]["final"],
        },
        "tied_decoder_stored_once": tied_once(d / "final" / "model.safetensors"),
    }
    return res


def tied_once(weights: Path) -> dict:
    """The decoder tied to the word embeddings is stored once in a model written from the device."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        keys = set(f.keys())
    both = {"bigs.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"} <= keys
    return {
        "measured": f"{len(keys)} tensors, {weights.stat().st_size / 2**20:,.0f} MiB",
        "limit": "decoder.weight absent",
        "pass": not both,
    }


@contextlib.contextmanager
def output_to(path: Path):
    """This process's fd 1 and 2 into `path`: Python's prints and C++'s (warnings outside Python's reach)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)


def sync_counts(plan: Plan, rt: Runtime, shards: Path, work: Path, budget: Budget) -> dict:
    """Host<->device syncs per training step of bigs.pretrain.main, per MLM gather.

    torch.cuda.set_sync_debug_mode("warn") warns at every synchronizing CUDA call; main() runs in
    this process for n1 and n2 steps (logging and saving only at the end) and the difference of
    the counts over n2 - n1 steps is the per-step number, set-up and the end of run cancelling.
    Counted: Python warnings (autograd replays backward's in the calling thread) plus any that C++
    printed to stderr instead.
    """
    from bigs.pretrain import main

    if rt.kind != "cuda":
        return {"skipped": "skipped: no CUDA (sync debug mode is CUDA's)"}
    n1, n2 = 3, 7
    res = {
        "method": f"set_sync_debug_mode('warn') warnings (torch's explicit syncs: .item(), nonzero, blocking copies), "
        f"a {n2}-step minus a {n1}-step in-process run of bigs.pretrain.main, / {n2 - n1}",
        "size": " ".join(plan.sync) or "as the step section",
    }
    for gather in ("boolean", "positions"):
        if (why := budget.skip(20)) is not None:
            res[gather] = {"skipped": why}
            continue
        counts, where = [], collections.Counter()
        for n in (n1, n2):
            d = work / f"sync-{gather}-{n}"
            flags = [
                *plan.bigs,
                *plan.sync,
                "--dataset_path",
                str(shards),
                "--output_dir",
                str(d),
                "--precision",
                "bf16",
                "--device",
                rt.kind,
                "--do_eval",
                "false",
                "--warmup_steps",
                "0",
                "--mlm_gather",
                gather,
                "--num_total_train_steps",
                str(n),
                "--logging_steps",
                str(n),
                "--save_steps",
                str(n),
            ]
            log = work / f"sync-{gather}-{n}.log"
            with output_to(log), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    code = main(flags)  # gives back the SIGTERM/SIGUSR1/SIGINT handlers it installs (StopFlag)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            if code != 0:
                raise RuntimeError(f"bigs.pretrain.main exit {code}: {log.read_text()[-1500:]}")
            syncs = [w for w in caught if "synchronizing CUDA operation" in str(w.message)]
            printed = sum("synchronizing CUDA operation" in ln for ln in log.read_text().splitlines())
            counts.append(len(syncs) + printed)
            if n == n2:
                where = collections.Counter(f"{os.path.relpath(w.filename, REPO)}:{w.lineno}" for w in syncs)
            shutil.rmtree(d, ignore_errors=True)
        res[gather] = {
            "per_step": (counts[1] - counts[0]) / (n2 - n1),
            "counts": {n1: counts[0], n2: counts[1]},
            "where": dict(where.most_common(8)),
            "where_steps": n2,
        }
        say(f"  syncs/step, {gather}: {res[gather]['per_step']:g}")
    return res


def projection(step_res: dict | None, train_res: dict | None, smoke: bool) -> dict:
    """Wall time of the paper recipe (100k steps × 1048 × 128 tokens) from the measured tokens/s."""
    sources = []
    if train_res and "faster_gather" in train_res:  # the real loop, data loader and logging included
        g = train_res["faster_gather"]
        sources.append((f"training CLI, --mlm_gather {g}", train_res[g]["tokens_per_s"]))
    steps = [
        (f"step, conv {r['conv']}, gather {r['gather']}{', compiled' if r['compile'] else ''}", r["tokens_per_s"])
        for r in (step_res or {}).get("runs", [])
        if r["model"] == "BiGS" and "tokens_per_s" in r
    ]
    if steps:  # the fastest timed step: what the loop could reach
        sources.append(max(steps, key=lambda s: s[1]))
    rows = [
        {
            "source": name,
            "tokens_per_s": tps,
            "hours_1_gpu": RECIPE_TOKENS / tps / 3600,
            "hours_8_gpus": RECIPE_TOKENS / tps / 3600 / 8,
        }
        for name, tps in sources
    ]
    return {
        "recipe_tokens": RECIPE_TOKENS,
        "rows": rows,
        "assumption": "8 GPUs: linear scaling assumed, not measured (global batch 1048 = 131 per GPU × 8; "
        "DDP's gradient all-reduce not included); 1 GPU: 8 accumulation steps of 131 at the "
        "measured speed" + ("; smoke sizes: not meaningful" if smoke else ""),
    }


# ----------------------------------------------------------------------------- report
def fmt(v, spec=",.0f") -> str:
    if v is None:
        return "n/a"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def outcome(r: dict) -> str:
    return r.get("skipped") or (f"error: {r['error']}" if "error" in r else "")


def md_parity(r: dict) -> list[str]:
    md = ["| check | measured | limit | result |", "|---|---|---|---|"]
    for k, c in r.items():
        if isinstance(c, dict) and ("measured" in c or outcome(c)):
            md.append(
                f"| {k} | {outcome(c) or fmt(c['measured'], '.2e')} | {fmt(c.get('limit'), '.0e')} | "
                f"{'' if outcome(c) else ('pass' if c['pass'] else '**FAIL**')} |"
            )
    md += [
        "",
        "Logits: max |difference| on a small BiGS with N(0, 1/fan_in) weights (at the 0.02 init the SSM branch "
        "barely reaches the logits); conv: max |difference| / max |output|; all fp32 with TF32 off.",
    ]
    tf = r.get("tf32_vs_fp32")
    if tf:
        md += [
            "",
            "TF32 on (as training, bigs/train/runtime.py) vs off: " + ", ".join(f"{k} {v:.2e}" for k, v in tf.items()),
        ]
    return md


def md_step(st: dict) -> list[str]:
    s = st["size"]
    peak = st["peak_flops_bf16"]
    md = [
        f"bigs.train.step.train_step (fwd + bwd, clipping, AdamW with the trainer's groups), bf16 autocast, TF32 on "
        f"unless marked, batches already on the device, micro-batch "
        f"{s['batch']} × L {s['seq_len']}. BiGS {s['layers']} layers H {s['hidden']} I {s['intermediate']} N {s['num_ssm']}; "
        f"BERT {s['bert_layers']} layers H {s['hidden']} I {s['bert_intermediate']}, attention "
        f"{st.get('bert_attn_implementation')}. MFU against {fmt(peak and peak / 1e12)} TFLOP/s (bf16 dense peak).",
        "",
        "| model | conv | MLM gather | compile | tokens/s | ms/step | MFU | peak mem GiB | first step s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    key = lambda r: (r["model"], r["conv"], r["gather"], r["compile"], r.get("tf32", True))  # noqa: E731
    speed = {key(r): r["tokens_per_s"] for r in st["runs"] if "tokens_per_s" in r}
    for r in st["runs"]:
        comp = "no"
        if r["compile"]:
            comp = f"{r['backend']}, compile {r['compile_s']:.0f} s" if "compile_s" in r else "yes"
        md.append(
            f"| {r['model']} | {r['conv']}{' (TF32 off)' if r.get('tf32') is False else ''} | {r['gather']} | {comp} | "
            + (
                outcome(r)
                or (
                    f"{fmt(r['tokens_per_s'])} | {fmt(r['ms_per_step'], '.1f')} | {fmt(r['mfu'], '.1%')} | "
                    f"{fmt(r['peak_mem_gib'], '.1f')} | {fmt(r['first_step_s'], '.1f')}"
                )
            )
            + " |"
        )
    # the comparisons that pick defaults (conv, head gather, compile), each between two rows above that differ in one thing
    pairs = [
        ("Toeplitz / FFT conv", ("BiGS", "toeplitz", "boolean", False, True), ("BiGS", "fft", "boolean", False, True)),
        (
            "BiGS positions / boolean gather",
            ("BiGS", "toeplitz", "positions", False, True),
            ("BiGS", "toeplitz", "boolean", False, True),
        ),
        (
            "TF32 on / off (positions)",
            ("BiGS", "toeplitz", "positions", False, True),
            ("BiGS", "toeplitz", "positions", False, False),
        ),
        (
            "BiGS compiled / eager (positions)",
            ("BiGS", "toeplitz", "positions", True, True),
            ("BiGS", "toeplitz", "positions", False, True),
        ),
    ]
    bert = [k for k in speed if k[0] != "BiGS" and k[2] == "boolean"]
    if bert:
        pairs.append(("BiGS / BERT (boolean, eager)", ("BiGS", "toeplitz", "boolean", False, True), bert[0]))
    ratios = [f"{name}: {speed[a] / speed[b]:.2f}×" for name, a, b in pairs if a in speed and b in speed]
    return md + (["", "Tokens/s ratios: " + "; ".join(ratios) + "."] if ratios else [])


def md_long_sequence(ls: dict) -> list[str]:
    md = [
        f"{ls['tokens_per_batch']:,} tokens per batch at every L, bf16, boolean head, 15 % masked; BiGS conv auto "
        "(and both convolutions forced around the switch, bigs.model.AUTO_TOEPLITZ_MAX_LEN).",
        "",
        "| L | batch | BiGS conv | BiGS tokens/s | BiGS Toeplitz / FFT forced | BERT tokens/s | BiGS / BERT |",
        "|---|---|---|---|---|---|---|",
    ]
    by = collections.defaultdict(dict)
    for r in ls["runs"]:
        key = "BERT" if r["model"] != "BiGS" else (r["conv"] if r.get("forced") else "BiGS")
        by[r["seq_len"]][key] = r
    for L, row in sorted(by.items()):
        b, t = row.get("BiGS", {}), row.get("BERT", {})
        ratio = b["tokens_per_s"] / t["tokens_per_s"] if "tokens_per_s" in b and "tokens_per_s" in t else None
        forced = " / ".join(outcome(row[c]) or fmt(row[c].get("tokens_per_s")) for c in ("toeplitz", "fft") if c in row)
        md.append(
            f"| {L} | {b.get('batch', t.get('batch', ''))} | {b.get('conv', '')} | {outcome(b) or fmt(b.get('tokens_per_s'))} "
            f"| {forced or '–'} | {outcome(t) or fmt(t.get('tokens_per_s'))} | {fmt(ratio, '.2f')}× |"
        )
    return md


def md_training(tr: dict) -> list[str]:
    b, p = tr["boolean"], tr["positions"]
    md = [
        f"`{b['command']} --num_total_train_steps {tr['resume_at']}`, then the same with "
        f"`--num_total_train_steps {tr['steps']}` (resumes){' — shortened ' + tr['shortened'] if 'shortened' in tr else ''}. "
        "Tokens/s: median of the logged windows after the first, from metrics.jsonl.",
        "",
        "| run | steps | first → last logged loss | tokens/s | MFU | resume |",
        "|---|---|---|---|---|---|",
        f"| --mlm_gather boolean | {tr['steps']} | {b['first_loss']:.4f} → {b['last_loss']:.4f} | {fmt(b['tokens_per_s'])} "
        f"| {fmt(b['mfu'], '.1%')} | {b['resumed'] or '**none**'} |",
        f"| --mlm_gather positions | {tr['positions_steps']} | "
        + (
            outcome(p)
            or (f"{p['first_loss']:.4f} → {p['last_loss']:.4f} | {fmt(p['tokens_per_s'])} | {fmt(p['mfu'], '.1%')} | —")
        )
        + " |",
        "",
        f"Faster MLM gather in the real loop: **{tr['faster_gather']}**.",
        "",
    ]
    bf = tr.get("bf16_vs_fp32_loss", {})
    md.append(
        "- bf16_vs_fp32_loss (relative difference of the trained model's loss, bf16 autocast vs fp32, limit "
        f"{BF16_LOSS_RTOL}): "
        + (
            outcome(bf)
            or f"{bf['measured']:.2e} ({bf['loss_bf16']:.5f} vs {bf['loss_fp32']:.5f}): {'pass' if bf['pass'] else '**FAIL**'}"
        )
    )
    md += [
        f"- {k}: {c['measured']} ({c['limit']}): {'pass' if c['pass'] else '**FAIL**'}" for k, c in tr["checks"].items()
    ]
    sy = tr["syncs_per_step"]
    md += [
        "",
        "Host↔device syncs per training step: "
        + (
            outcome(sy)
            or ", ".join(f"{g} {outcome(sy[g]) or fmt(sy[g]['per_step'], 'g')}" for g in ("boolean", "positions"))
            + f" ({sy['method']}; model flags {sy['size']})"
        ),
    ]
    for g in ("boolean", "positions"):
        if isinstance(sy.get(g), dict) and sy[g].get("where"):
            md.append(
                f"- where ({g}, {sy[g]['where_steps']} steps): "
                + ", ".join(f"{k} ×{v}" for k, v in sy[g]["where"].items())
            )
    return md


def md_projection(pr: dict) -> list[str]:
    md = [
        f"The paper recipe: 100,000 steps × global batch 1048 × 128 = {pr['recipe_tokens']:,} tokens.",
        "",
        "| from | tokens/s | 1 GPU | 8 GPUs |",
        "|---|---|---|---|",
    ]
    md += [
        f"| {r['source']} | {fmt(r['tokens_per_s'])} | {r['hours_1_gpu']:,.1f} h | {r['hours_8_gpus']:,.1f} h |"
        for r in pr["rows"]
    ]
    return md + ["", pr["assumption"] + "."]


def to_markdown(res: dict, env: dict) -> str:
    bad = problems(res)
    md = [
        f"# BiGS GPU check{' (--smoke: tiny sizes, numbers not meaningful)' if env['smoke'] else ''}",
        "",
        f"{env['device']} · torch {env['torch']} · {env['date']} · {env['wall_s']:.0f} s (plan {env['total_budget_s']} s) · "
        f"**{'FAIL: ' + ', '.join(bad) if bad else 'PASS'}**"
        + (f" · **hard stop** {res['hard_stop']}" if "hard_stop" in res else ""),
        "",
        "Preflight: " + "; ".join(f"{k} {v}" for k, v in res.get("preflight", {}).items()),
    ]
    render = {
        "parity": md_parity,
        "step": md_step,
        "long_sequence": md_long_sequence,
        "training": md_training,
        "projection": md_projection,
    }
    for key in SECTIONS:
        r = res.get(key)
        md += ["", f"## {key}", ""]
        if r is None:
            md.append("not run")
        elif "error" in r:
            md.append(f"**error**: {r['error']}")
        else:
            md += render[key](r)
        if r is not None and r.get("budget_s"):
            md += ["", f"<sub>{r['wall_s']:.0f} s of a {r['budget_s']} s budget</sub>"]
    return "\n".join(md)


def problems(res: dict) -> list[str]:
    """Failed checks and errors anywhere in the results, by path."""
    found = []

    def walk(v, path):
        if isinstance(v, dict):
            if "error" in v:
                found.append(f"{path}: error")
            if v.get("pass") is False:
                found.append(f"{path}: failed")
            for k, x in v.items():
                walk(x, f"{path}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")

    for name in SECTIONS:
        walk(res.get(name), name)
    return found


# ----------------------------------------------------------------------------- main
def preflight() -> dict:
    """The GPU as the driver reports it (nvidia-smi) and whether torch can use it — torch's own reason when not."""
    line = "nvidia-smi: not found"
    if smi := shutil.which("nvidia-smi"):
        query = [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        try:
            r = subprocess.run(query, capture_output=True, text=True, timeout=20)
            line = ((r.stdout or r.stderr).strip() or f"nvidia-smi exit {r.returncode}").splitlines()[0]
        except (OSError, subprocess.TimeoutExpired) as exc:
            line = f"nvidia-smi: {exc}"
    usable = torch.cuda.is_available()
    return {
        "nvidia_smi": line,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda": "available" if usable else runtime.cuda_unavailable_reason(),
    }


def hard_stop(at: float, res: dict, write) -> threading.Timer:
    """At `at`, whatever the main thread is doing: kill the running child, write what was measured
    (`res`, with a "hard_stop" entry), exit 1."""

    def fire():
        say(f"hard stop: {TOTAL_S} s since the start; writing what was measured")
        res["hard_stop"] = f"at {time.time() - T0:.0f} s: the run was stopped here; later sections are missing"
        proc = child.CHILD[0]  # read once: the main thread may clear it between a test and a use
        if proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):  # the main thread may be changing the results right now
            write()
        os._exit(1)

    timer = threading.Timer(max(at - time.time(), 0.0), fire)
    timer.daemon = True
    timer.start()
    return timer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir", nargs="?")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, CPU or GPU, about a minute")
    p.add_argument("--compile-worker", help=argparse.SUPPRESS)  # the child process of step_compile
    a = p.parse_args()
    plan = SMOKE if a.smoke else FULL
    rt = Runtime(
        *(("cuda", torch.device("cuda")) if torch.cuda.is_available() else ("cpu", torch.device("cpu"))), bf16=True
    )
    if a.compile_worker:
        compile_worker(plan, rt, Path(a.compile_worker))
        return 0
    if not a.out_dir:
        p.error("OUT_DIR is required")
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = {"preflight": preflight()}
    say("preflight: " + "; ".join(f"{k} {v}" for k, v in res["preflight"].items()))
    if rt.kind != "cuda" and not a.smoke:
        (out / "gpu_check.json").write_text(json.dumps(res, indent=1))
        print(
            f"error: the full check needs a GPU torch can use: {res['preflight']['cuda']} (driver: "
            f"{res['preflight']['nvidia_smi']}); --smoke runs the tiny sizes on the CPU",
            file=sys.stderr,
        )
        return 3
    transformers.utils.logging.disable_progress_bar()  # as bigs.pretrain: no loading bars in the log
    run_end = T0 + TOTAL_S
    name = torch.cuda.get_device_name(rt.device) if rt.kind == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    env = {"device": name, "torch": torch.__version__, "smoke": a.smoke, "date": time.strftime("%Y-%m-%d %H:%M"),
           "total_budget_s": TOTAL_S}  # fmt: skip
    say(f"gpu check on {name}, torch {torch.__version__}{', smoke' if a.smoke else ''}; results in {out}")

    def write():  # after every section: a crash or a kill later keeps what was measured
        env["wall_s"] = round(time.time() - T0, 1)
        if isinstance(res.get("step"), dict):
            res["step"]["environment"] = env
        (out / "gpu_check.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "gpu_check.md").write_text(to_markdown(res, env) + "\n")

    timer = hard_stop(run_end, res, write)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        sections = {
            "parity": lambda b: parity(plan, rt, work, b),
            "step": lambda b: step(plan, rt, work, b),
            "long_sequence": lambda b: long_sequence(plan, rt, work, b),
            "training": lambda b: training(plan, rt, work, out, b, res.get("step")),
            "projection": lambda b: projection(res.get("step"), res.get("training"), a.smoke),
        }
        for key, fn in sections.items():
            say(f"{key}: budget {BUDGET_S.get(key, 0)} s, {run_end - time.time():.0f} s left in all")
            t = time.time()
            try:
                r = fn(Budget(BUDGET_S.get(key, 0), run_end))
            except Exception as exc:  # noqa: BLE001 — one section's failure never loses the others
                traceback.print_exc()
                r = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            res[key] = {**r, "budget_s": BUDGET_S.get(key, 0), "wall_s": round(time.time() - t, 1)}
            free(rt.device)
            write()
        # torch.compile last, with whatever time is left: the checks above matter more
        if "runs" in res["step"]:
            say(f"step: torch.compile ({plan.compile_backend}), {run_end - time.time():.0f} s left")
            r = step_compile(plan, a.smoke, out, Budget(run_end - time.time(), run_end))
            say(f"  compiled: {outcome(r) or '%.0f tokens/s, compile %.0f s' % (r['tokens_per_s'], r['compile_s'])}")
            res["step"]["runs"].append({"model": "BiGS", "conv": "auto", "gather": "positions", "compile": True, **r})
            res["projection"].update(projection(res["step"], res.get("training"), a.smoke))
    timer.cancel()
    write()
    print(to_markdown(res, env), flush=True)
    bad = problems(res)
    if bad:
        print(f"gpu check: FAIL: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
