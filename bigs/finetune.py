"""GLUE fine-tuning, one flat loop: `python -m bigs.finetune --model_name_or_path M --task_name T ...`.

Takes the original's `run_glue_pytorch.py` command line (Hugging Face run_glue flags, HF defaults
where the original leaves a flag out) with `python -m bigs.finetune` in place of `python
run_glue_pytorch.py`, e.g. (REFERENCE.md §5):

    python -m bigs.finetune --model_name_or_path results/pretrain/bigs/final --task_name cola \
        --do_train --do_eval --max_seq_length 128 --per_device_train_batch_size 16 \
        --learning_rate 2e-5 --num_train_epochs 3 --overwrite_output_dir --output_dir D \
        --ignore_mismatched_sizes --save_total_limit 2 --data_dir glue_data

plus `--data_dir DIR` (a local GLUE copy, DIR/<TASK>/{train,dev,test}.tsv; without it the hub
dataset nyu-mll/glue), `--random_init` (same config, fresh weights: the no-pretraining control),
`--device`, `--bf16` (default: on for CUDA). The model is any of: our checkpoints (final/ or
checkpoint-*, BiGS or the BERT baseline), a local Hugging Face checkpoint that
AutoModelForSequenceClassification loads, or a hub name (online). BiGS gets the original's
pooler (mean over non-pad positions -> dense -> tanh, bigs/model.py).

Why a flat loop and not transformers' Trainer: Trainer needs `accelerate` (not a dependency
here), and the loop reads top to bottom like bigs/pretrain.py over the same parts (bigs/train/:
device, train step, checkpoints, run dir and lock, stop signals, metrics): seeded data order (one
permutation per epoch from [seed, epoch]), AdamW with HF's defaults (betas 0.9/0.999, eps 1e-8,
no decay on biases and LayerNorm weights, grad-norm clip 1.0), linear warmup then linear decay to
0 (HF's default schedule), autocast bf16 on CUDA. Checkpoints every --save_steps hold model,
optimizer, step and RNG, so a rerun resumes exactly where it stopped (HF semantics:
--overwrite_output_dir starts over; a checkpoint written with other training settings is never
resumed, and moves to previous-<time>/). As pretraining: a second run into the same output_dir
is refused (exit 2); SIGTERM / SIGUSR1 / a first Ctrl-C finish the step, write a checkpoint and
exit 3 (rerun: it resumes); a non-finite loss exits 4.

Outputs in --output_dir, as run_glue writes them: train_results.json, eval_results.json,
all_results.json (HF key names: eval_accuracy, eval_f1, eval_matthews_correlation, eval_pearson,
eval_spearmanr, eval_combined_score, eval_loss, eval_samples, epoch; MNLI mismatched with the
suffix _mm), the fine-tuned model (config.json + model.safetensors + tokenizer files),
metrics.jsonl (one line per log/eval: loss, learning_rate, eval metrics) and, with
--do_predict, GLUE submission files predictions/{dev,test}/<TASK>.tsv (MNLI: MNLI-m, MNLI-mm).
Every input is read and checked before anything is written (exit 2, one line naming the file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bigs.errors import EXIT_PREEMPTED, BigsError, atomic_files, atomic_path, cli_main, fail, first_line
from bigs.glue import Split, Task, compute_metrics, read_split, task
from bigs.tokenizer import load_tokenizer, quiet_transformers
from bigs.train import checkpoint as ckpt
from bigs.train.flags import positive, str2bool
from bigs.train.metrics import MetricsLog, Window, progress_bar
from bigs.train.optim import build_optimizer
from bigs.train.rundir import lock_output_dir, make_writable_dir, prepare_output_dir, truncate_metrics
from bigs.train.runtime import Runtime, seed_everything, setup
from bigs.train.schedule import Schedule, set_lr
from bigs.train.signals import StopFlag
from bigs.train.step import check_finite, train_step


# ----------------------------------------------------------------------------- flags
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bigs.finetune", description=__doc__.split("\n")[0])
    flag = dict(type=str2bool, nargs="?", const=True, default=False)  # `--do_train` or `--do_train true`
    # --- run_glue's flags (ModelArguments, DataTrainingArguments, TrainingArguments): names and HF defaults
    p.add_argument("--model_name_or_path", required=True, help="checkpoint dir (ours or any HF one) or a hub name")
    p.add_argument(
        "--task_name", required=True, help="cola, sst2 / SST-2, mrpc, stsb / STS-B, qqp, mnli, qnli, rte, wnli"
    )
    p.add_argument("--output_dir", required=True)
    p.add_argument("--do_train", **flag)
    p.add_argument("--do_eval", **flag)
    p.add_argument("--do_predict", **flag)
    p.add_argument("--max_seq_length", type=positive(int), default=128)
    p.add_argument(
        "--pad_to_max_length",
        type=str2bool,
        nargs="?",
        const=True,
        default=True,
        help="pad every sequence to max_seq_length (run_glue's default; BiGS's SSMs see the pads)",
    )
    p.add_argument("--per_device_train_batch_size", type=positive(int), default=8)
    p.add_argument("--per_device_eval_batch_size", type=positive(int), default=8)
    p.add_argument("--learning_rate", type=positive(float), default=5e-5)
    p.add_argument("--num_train_epochs", type=positive(float), default=3.0)
    p.add_argument("--max_steps", type=int, default=-1, help="> 0: train this many steps instead of epochs")
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.999)
    p.add_argument("--adam_epsilon", type=float, default=1e-8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--warmup_ratio", type=float, default=0.0)
    p.add_argument("--warmup_steps", type=int, default=0, help="overrides --warmup_ratio when > 0")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--overwrite_output_dir", **flag)
    p.add_argument(
        "--resume_from_checkpoint", default=None, help="a checkpoint-<step> dir (default: the newest in output_dir)"
    )
    p.add_argument("--ignore_mismatched_sizes", **flag)
    p.add_argument("--save_strategy", default="steps", choices=["no", "steps", "epoch"])
    p.add_argument("--save_steps", type=positive(int), default=500)
    p.add_argument("--save_total_limit", type=int, default=None, help="keep the newest K checkpoint-* dirs")
    p.add_argument("--max_train_samples", type=positive(int), default=None)
    p.add_argument("--max_eval_samples", type=positive(int), default=None)
    p.add_argument("--max_predict_samples", type=positive(int), default=None)
    p.add_argument("--logging_steps", type=positive(int), default=500)
    p.add_argument("--eval_strategy", "--evaluation_strategy", default="no", choices=["no", "steps", "epoch"])
    p.add_argument("--eval_steps", type=positive(int), default=None, help="default: --logging_steps")
    p.add_argument(
        "--bf16", type=str2bool, nargs="?", const=True, default=None, help="autocast bf16 (default: on CUDA only)"
    )
    # --- ours
    p.add_argument(
        "--data_dir", default=None, help="local GLUE: DIR/<TASK>/{train,dev,test}.tsv (default: hub nyu-mll/glue)"
    )
    p.add_argument("--random_init", **flag, help="the model's config with fresh weights (no-pretraining control)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if not (args.do_train or args.do_eval or args.do_predict):
        raise BigsError("--do_train / --do_eval / --do_predict: none given; nothing to do")
    if args.eval_steps is None:
        args.eval_steps = args.logging_steps  # HF: eval_steps defaults to logging_steps
    return args


# Flags that shape the training trajectory: a checkpoint resumes only if they are all the same.
TRAIN_KEYS = (
    "model_name_or_path",
    "task_name",
    "data_dir",
    "max_seq_length",
    "pad_to_max_length",
    "per_device_train_batch_size",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "warmup_ratio",
    "warmup_steps",
    "seed",
    "ignore_mismatched_sizes",
    "max_train_samples",
    "random_init",
    "bf16",
)


def train_settings(args) -> dict:
    return {k: getattr(args, k) for k in TRAIN_KEYS}


# ----------------------------------------------------------------------------- data and model
def read_data(args, t: Task) -> dict[str, list[Split]]:
    """Every split this run needs, read and checked up front (errors name file and line)."""
    caps = {"train": args.max_train_samples, "dev": args.max_eval_samples, "test": args.max_predict_samples}
    kinds = [
        k
        for k, on in (("train", args.do_train), ("dev", args.do_eval or args.do_predict), ("test", args.do_predict))
        if on
    ]
    return {k: [s.head(caps[k]) for s in read_split(t, k, args.data_dir)] for k in kinds}


def load_model(args, t: Task):
    """(model, tokenizer, label_map) for task `t`; label_map maps our class ids to the model's
    (a checkpoint fine-tuned elsewhere may order MNLI's classes differently, as run_glue checks)."""
    quiet_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification

    import bigs.model  # noqa: F401  (registers model_type "BiGS" with the Auto classes)

    src = args.model_name_or_path
    local = Path(src).exists()
    where = Path(src) / "config.json" if local else src
    if local and not (Path(src) / "config.json").is_file():
        raise fail(
            where, "--model_name_or_path", "missing — pass a checkpoint dir (final/, checkpoint-<step>/) or a hub name"
        )
    try:
        old = AutoConfig.from_pretrained(src)
        names = t.file_labels or ("score",)
        config = AutoConfig.from_pretrained(
            src,
            num_labels=t.num_labels,
            finetuning_task=t.hub,
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        )
    except (OSError, ValueError) as exc:
        first = first_line(exc, 300)
        raise fail(
            where,
            "--model_name_or_path",
            f"cannot load ({first}) — a local dir needs config.json; hub names need a network (or the HF cache)",
        ) from None
    if config.model_type == "BiGS":  # fine-tune as the original (HF run_glue + the PyTorch port): a dropout
        config.dropout_mask = "per_example"  # mask per sequence, not pretraining's one per batch (REFERENCE.md §5a)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and args.max_seq_length > positions:
        raise fail(
            where,
            "max_position_embeddings",
            f"the model has {positions} positions but --max_seq_length is "
            f"{args.max_seq_length}; use --max_seq_length {positions} or less",
        )
    label_map = np.arange(t.num_labels)
    old_ids = {str(k).lower(): int(v) for k, v in (getattr(old, "label2id", None) or {}).items()}
    if t.file_labels and sorted(old_ids) == sorted(t.file_labels) and old.num_labels == t.num_labels:
        label_map = np.array([old_ids[n] for n in t.file_labels])  # keep the checkpoint's class order
        config.label2id = {n: int(i) for n, i in zip(t.file_labels, label_map)}
        config.id2label = {int(i): n for n, i in zip(t.file_labels, label_map)}
    weights = Path(src) / "model.safetensors" if local else src
    if args.random_init:
        model = AutoModelForSequenceClassification.from_config(config)  # seeded by the caller
    else:
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                src, config=config, ignore_mismatched_sizes=True, output_loading_info=True
            )
        except (OSError, ValueError, RuntimeError) as exc:
            first = first_line(exc, 300)
            raise fail(weights, "weights", f"cannot load ({first})") from None
        if info["mismatched_keys"] and not args.ignore_mismatched_sizes:
            key, ckpt_shape, model_shape = sorted(info["mismatched_keys"])[0]
            raise fail(
                weights,
                key,
                f"checkpoint has shape {tuple(ckpt_shape)} but {t.name} needs {tuple(model_shape)} "
                f"(a head fine-tuned for another task?) — pass --ignore_mismatched_sizes to start that head afresh",
            )
        fresh = [k for k in info["missing_keys"] if not any(h in k for h in ("classifier.", "pooler."))]
        if fresh:
            raise fail(
                weights,
                "weights",
                f"{len(fresh)} encoder weights missing (e.g. {sorted(fresh)[0]}) — "
                "checkpoint and config.json disagree; they would be trained from random values",
            )
        new = sorted(set(info["missing_keys"]) | {k for k, *_ in info["mismatched_keys"]})
        print(f"new (randomly initialised) weights: {', '.join(new) or 'none'}")
    tok = load_tokenizer(None if local else src, Path(src), config.vocab_size, local_only=False, masked_lm=False)
    return model, tok, label_map


def encode(tok, split: Split, max_len: int, chunk: int = 50_000) -> dict[str, np.ndarray]:
    """Token ids padded to max_len, truncated longest-first (as run_glue); small dtypes on the host
    (MNLI's 393k pairs at L 128: 0.3 GB), tokenized in chunks so int64 copies stay small."""
    parts = []
    for lo in range(0, len(split), chunk):
        enc = tok(
            *(t[lo : lo + chunk] for t in split.texts),
            padding="max_length",
            truncation=True,
            max_length=max_len,
            return_tensors="np",
            return_token_type_ids=True,
        )
        parts.append(
            {
                "input_ids": enc["input_ids"].astype(np.int32),
                "attention_mask": enc["attention_mask"].astype(np.int8),
                "token_type_ids": enc["token_type_ids"].astype(np.int8),
            }
        )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def rows(enc: dict, idx: np.ndarray, labels: np.ndarray | None = None, trim: bool = False) -> dict:
    """Rows `idx` as host tensors; trim = cut the pads beyond the longest row (dynamic padding)."""
    L = int(enc["attention_mask"][idx].sum(1).max()) if trim else enc["input_ids"].shape[1]
    out = {k: torch.from_numpy(v[idx, :L].astype(np.int64)) for k, v in enc.items()}
    if labels is not None:
        out["labels"] = torch.from_numpy(labels[idx])
    return out


@dataclass
class Job:
    """One fine-tuning: what the loop, evaluation and predictions read."""

    args: argparse.Namespace
    t: Task
    rt: Runtime
    model: torch.nn.Module
    label_map: np.ndarray  # our class ids -> the model's
    data: dict  # kind -> [Split]
    enc: dict  # kind -> [encoded arrays]
    out: Path


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(job: Job, enc: dict, labels: np.ndarray | None) -> tuple[np.ndarray, float | None]:
    """(logits (N, num_labels) float32, example-weighted mean loss or None) over one split."""
    model, args = job.model, job.args
    model.eval()
    n, bs = len(enc["input_ids"]), args.per_device_eval_batch_size
    logits, loss_sum = [], 0.0
    for lo in range(0, n, bs):
        idx = np.arange(lo, min(lo + bs, n))
        with job.rt.autocast():
            o = model(**job.rt.to_device(rows(enc, idx, labels, trim=not args.pad_to_max_length)))
        logits.append(o.logits.float().cpu().numpy())
        if labels is not None:
            loss_sum += o.loss.item() * len(idx)
    model.train()
    return np.concatenate(logits), (loss_sum / n if labels is not None else None)


def evaluate(job: Job, epoch: float) -> dict:
    """run_glue's eval_results: eval_<metric>, eval_loss, eval_runtime, ..., epoch; MNLI mismatched with _mm."""
    results = {}
    for i, (e, s) in enumerate(zip(job.enc["dev"], job.data["dev"])):
        t0 = time.time()
        logits, loss = predict(job, e, s.labels)
        m = {f"eval_{k}": v for k, v in compute_metrics(job.t, to_predictions(job.t, logits), s.labels).items()}
        dt = time.time() - t0
        m.update(
            eval_loss=loss,
            eval_runtime=round(dt, 4),
            eval_samples_per_second=round(len(s) / dt, 3),
            eval_steps_per_second=round(math.ceil(len(s) / job.args.per_device_eval_batch_size) / dt, 3),
            epoch=epoch,
            eval_samples=len(s),
        )
        results.update({(k + "_mm" if i == 1 else k): v for k, v in m.items()})  # i == 1: MNLI dev_mismatched
    return results


def to_predictions(t: Task, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if t.is_regression else logits.argmax(-1)


def write_submission(path: Path, t: Task, ids: list[str], preds: np.ndarray, label_map: np.ndarray) -> None:
    """GLUE submission format: `index<TAB>prediction`, labels as the task's files write them."""
    inverse = np.argsort(label_map)  # model class id -> our class id
    rows = [f"{i}\t{p:.3f}" if t.is_regression else f"{i}\t{t.file_labels[inverse[p]]}" for i, p in zip(ids, preds)]
    with atomic_path(path) as tmp:
        tmp.write_text("index\tprediction\n" + "".join(r + "\n" for r in rows))


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")


def incompatible_with(settings: dict):
    """For the run dir's resume policy: why a checkpoint written with other training settings is not resumed."""

    def why(c: Path) -> str | None:
        saved = ckpt.read_state(c).args
        changed = [k for k in settings if saved.get(k) != settings[k]]
        return f"written with other settings ({', '.join(changed)})" if changed else None

    return why


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    t = task(args.task_name)
    out = Path(args.output_dir)
    with StopFlag() as stop:  # before anything is written
        # --- inputs, all checked before anything is written: data, model, tokenizer
        data = read_data(args, t)
        rt = setup(args.device, bf16=args.bf16)
        seed_everything(args.seed)  # HF set_seed before the model: the new head's init is seeded
        model, tok, label_map = load_model(args, t)
        model.to(rt.device)
        for splits in data.values():  # our class ids -> the model's
            for s in splits:
                if s.labels is not None and not t.is_regression:
                    s.labels = label_map[s.labels]
        enc = {k: [encode(tok, s, args.max_seq_length) for s in splits] for k, splits in data.items()}
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{t.name}: {type(model).__name__} from {args.model_name_or_path}{' (random init)' if args.random_init else ''}, "
            f"{n_params:,} parameters; device {rt.kind}, bf16 {rt.bf16}; "
            + ", ".join(f"{k} {'+'.join(str(len(s)) for s in v)}" for k, v in data.items())
        )
        job = Job(args, t, rt, model, label_map, data, enc, out)
        settings = train_settings(args)
        if args.do_train:
            resume = args.resume_from_checkpoint or ("never" if args.overwrite_output_dir else "auto")
            resume_from, lock = prepare_output_dir(
                out,
                rt,
                resume=resume,
                overwrite=True,
                incompatible=incompatible_with(settings),
                program="bigs.finetune",
            )
            code, train_results, step = train(job, resume_from, stop)
            if code:
                return code
            with atomic_files(out) as tmp:  # whole files, the weights last
                ckpt.write_model_dir(tmp, model, tokenizer=tok.save_pretrained)
            write_json(out / "train_results.json", train_results)
        else:
            make_writable_dir(out)
            lock, train_results, step = lock_output_dir(out, "bigs.finetune"), {}, 0
        finish(job, train_results, step)
        lock.close()
    return 0


def finish(job: Job, train_results: dict, step: int) -> None:
    """Evaluation and predictions, written as run_glue writes them."""
    args, t, out = job.args, job.t, job.out
    eval_results = {}
    if args.do_eval:
        eval_results = evaluate(job, train_results.get("epoch", 0.0))
        for k, v in sorted(eval_results.items()):
            print(f"  {k} = {v}")
        log = MetricsLog(out)
        log({"kind": "eval", "step": step, **eval_results})
        log.close()
    if args.do_predict:
        names = t.submission or (t.name,)
        for kind in ("dev", "test"):
            for name, e, s in zip(names, job.enc[kind], job.data[kind]):
                logits, _ = predict(job, e, None)
                write_submission(
                    out / "predictions" / kind / f"{name}.tsv", t, s.ids, to_predictions(t, logits), job.label_map
                )
    if args.do_eval:
        write_json(out / "eval_results.json", eval_results)
    write_json(out / "all_results.json", {**train_results, **eval_results})


def start(job: Job, resume_from: Path | None) -> tuple[torch.optim.Optimizer, ckpt.TrainState]:
    """HF's AdamW over our groups, and the state: fresh, or model, optimizer and RNG from a checkpoint."""
    args = job.args
    optimizer = build_optimizer(
        job.model,
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    if resume_from is None:
        return optimizer, ckpt.TrainState(args=train_settings(args))
    state = ckpt.load_checkpoint(resume_from, job.model, optimizer, rt=job.rt)
    truncate_metrics(job.out / "metrics.jsonl", state.step)
    print(f"resumed from {resume_from} at step {state.step}")
    return optimizer, state


def train(job: Job, resume_from: Path | None, stop: StopFlag) -> tuple[int, dict, int]:
    """The loop: (0, train_results, steps) at the end, (3, {}, steps) when a stop signal came (after a checkpoint)."""
    args, rt, model, out = job.args, job.rt, job.model, job.out
    y, e = job.data["train"][0].labels, job.enc["train"][0]
    n, bs = len(y), args.per_device_train_batch_size
    steps_per_epoch = math.ceil(n / bs)
    total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    warmup = args.warmup_steps if args.warmup_steps > 0 else math.ceil(args.warmup_ratio * total)
    lr_schedule = Schedule(args.learning_rate, warmup, total, "linear")
    optimizer, state = start(job, resume_from)
    log = MetricsLog(out)
    print(f"training: {n} examples, {steps_per_epoch} steps/epoch, {total} steps, warmup {warmup}, batch {bs}")
    bar = progress_bar(total, initial=state.step, desc=f"finetune {job.t.name}")
    model.train()
    t0, start_step, window = time.time(), state.step, Window()
    poison = int(os.environ.get("BIGS_FAULT_NAN_AT_STEP", -1))  # fault injection for tests
    while state.step < total:
        ep, b = divmod(state.step, steps_per_epoch)
        idx = np.random.default_rng([args.seed, ep]).permutation(n)[b * bs : (b + 1) * bs]  # (bs,) this epoch's order
        lr = lr_schedule.at(state.step)
        set_lr(optimizer, lr)
        micro = [rows(e, idx, y, trim=not args.pad_to_max_length)]
        loss, grad_norm = train_step(
            model, micro, optimizer, rt=rt, weights=[1.0], max_grad_norm=args.max_grad_norm, poison=state.step == poison
        )
        state.step += 1
        loss_val = loss.item()
        check_finite(loss_val, state.step, out)
        state.loss_sum += loss_val
        window.add(loss_val)
        bar.update(1)
        epoch, epoch_end = state.step / steps_per_epoch, state.step % steps_per_epoch == 0
        if state.step % args.logging_steps == 0 or state.step == total:
            mean, _, _ = window.close()
            log(
                {
                    "kind": "train",
                    "step": state.step,
                    "epoch": round(epoch, 4),
                    "loss": mean,
                    "learning_rate": lr,
                    "grad_norm": float(grad_norm),
                }
            )
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}")
        if "dev" in job.data and (
            (args.eval_strategy == "steps" and state.step % args.eval_steps == 0)
            or (args.eval_strategy == "epoch" and epoch_end)
        ):
            log({"kind": "eval", "step": state.step, **evaluate(job, epoch)})
        save_due = (args.save_strategy == "steps" and state.step % args.save_steps == 0) or (
            args.save_strategy == "epoch" and epoch_end
        )
        if save_due or stop.signal:
            path = ckpt.save_checkpoint(out, state, model, optimizer, rt=rt, keep=args.save_total_limit)
            if stop.signal:
                print(
                    f"\nstopped by {stop.signal} at step {state.step}; checkpoint {path}; exit {EXIT_PREEMPTED} (rerun to resume)"
                )
                return EXIT_PREEMPTED, {}, state.step
    bar.close()
    log.close()
    runtime, done = time.time() - t0, max(state.step - start_step, 1)
    return (
        0,
        {
            "epoch": state.step / steps_per_epoch,
            "train_loss": state.loss_sum / max(state.step, 1),
            "train_runtime": round(runtime, 4),
            "train_samples": n,
            "train_samples_per_second": round(done * bs / runtime, 3),
            "train_steps_per_second": round(done / runtime, 3),
        },
        state.step,
    )


if __name__ == "__main__":
    cli_main(main)
