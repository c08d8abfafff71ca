"""Masked-LM evaluation on the test shards, plus fill-mask probes, for any checkpoint we write,
a published BiGS directory or a BERT baseline (REFERENCE.md §1: loss, accuracy, perplexity).

    python -m bigs.evaluate --model results/pretrain/bigs/final --dataset_path results/samples/wiki-128 \
        -o results/evaluate/bigs.json [--batch_size 64 --max_batches N --device auto|cpu|cuda \
        --probes FILE --top_k 5 --tokenizer NAME_OR_PATH]

Writes OUT.json (metrics, step, model, probes with top-k predictions) and OUT.md (tables).
The trainer's evaluation (bigs/pretrain.py) is the same code, `shard_batches` + `mlm_sums` +
`mlm_metrics` (summed over ranks there), so both report the same numbers on the same batches.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bigs.errors import BigsError, atomic_path, cli_main, fail, first_line
from bigs.tokenizer import load_tokenizer, quiet_transformers
from bigs.train.runtime import setup

DEFAULT_PROBES = Path(__file__).parent / "probes.txt"
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "masked_positions")
PERPLEXITY_LOSS_CAP = 700.0  # exp() overflows float64 past ~709: perplexity is reported as exp(min(loss, cap))


# ---------------------------------------------------------------------------------------------
# the metric (library; used by bigs.pretrain)
# ---------------------------------------------------------------------------------------------
def evaluate_mlm(model, batches, device, max_batches=None) -> dict:
    """Masked-token cross-entropy, accuracy and perplexity over `batches` (mlm_sums, mlm_metrics).

    Token-weighted: eval_loss = Σ CE over all labelled tokens / number of labelled tokens (not a
    mean of per-batch means, which would over-weight batches with few masks).
    """
    loss_sum, correct, n, n_batches = mlm_sums(model, batches, device, max_batches)
    if not n_batches:
        raise BigsError("evaluate_mlm: batches: no batches to evaluate — are the test shards empty?")
    return {**mlm_metrics(loss_sum, correct, n), "eval_batches": n_batches}


def mlm_sums(model, batches, device, max_batches=None, autocast=None) -> tuple[float, float, float, int]:
    """(Σ cross-entropy, n correct, n labelled tokens, n batches) over `batches` — zeros for none, so
    ranks with an empty share of the test split still join the sum over ranks (bigs.pretrain).

    `labels` use -100 for "not predicted". Logits may be (B, L, V) (BERT, BiGS full head) or
    (n_labelled, V) in row-major order of labels != -100 (BiGS masked head, docs/DESIGN.md); told
    apart by shape. `autocast`: a context manager around the forward (bf16), or none.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    sums = []  # per batch (Σ CE, n correct, n tokens), kept on device: no host sync per batch
    try:
        with torch.no_grad():
            for batch in itertools.islice(batches, max_batches):  # None = all
                batch = {k: batch[k].to(device) for k in BATCH_KEYS if k in batch}
                labels = batch["labels"]
                with autocast or contextlib.nullcontext():
                    logits = model(**batch).logits
                if logits.dim() == 3:  # (B, L, V) or fixed-shape (B, P, V): every slot, -100 ignored
                    logits, target = logits.flatten(0, 1), labels.flatten()  # (B*L, V), (B*L,)
                else:  # masked head: (n, V) in row-major order of labels != -100
                    target = labels[labels != -100]  # (n,)
                if logits.shape[0] != target.shape[0]:
                    raise BigsError(
                        f"evaluate_mlm: logits: {tuple(logits.shape)} rows for {target.shape[0]} "
                        "labelled tokens — the model's masked-head contract is broken"
                    )
                # No boolean indexing on the full layouts: shapes stay static (one XLA graph).
                valid = target != -100
                logits = logits.float()  # CE in fp32 even under autocast
                ce = F.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
                correct = ((logits.argmax(-1) == target) & valid).sum()
                sums.append(torch.stack([ce, correct.float(), valid.sum().float()]))
    finally:
        model.train(was_training)
    if not sums:
        return 0.0, 0.0, 0.0, 0
    loss_sum, correct, n = torch.stack(sums).double().sum(0).cpu().tolist()  # (3,), one sync
    return loss_sum, correct, n, len(sums)


def mlm_metrics(loss_sum: float, correct: float, n: float) -> dict:
    """eval_loss, eval_accuracy, eval_perplexity, eval_tokens from sums over n labelled tokens
    (also what the trainer reports after summing them over ranks)."""
    if n == 0:
        raise BigsError("evaluate_mlm: labels: no labelled (masked) tokens in the evaluation batches")
    loss = loss_sum / n
    return {
        "eval_loss": loss,
        "eval_accuracy": correct / n,
        "eval_perplexity": math.exp(min(loss, PERPLEXITY_LOSS_CAP)),
        "eval_tokens": int(n),
    }


# ---------------------------------------------------------------------------------------------
# loading: model, tokenizer, probes, shards — each failure a BigsError naming the file
# ---------------------------------------------------------------------------------------------
def load_model(model_dir: str | Path):
    """Any masked-LM checkpoint dir (config.json + weights). `import bigs.model` registers
    model_type "BiGS" with the Auto classes. Missing, unexpected (except pooler) or mis-shaped
    weights are errors: transformers would otherwise re-initialise them randomly and evaluate noise."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise fail(model_dir, "--model", "no such checkpoint directory")
    if not (model_dir / "config.json").is_file():
        raise fail(model_dir, "config.json", "missing — pass a checkpoint dir (checkpoint-<step>/ or final/)")
    quiet_transformers()
    from transformers import AutoModelForMaskedLM

    import bigs.model  # noqa: F401  (registers BiGS with AutoConfig / AutoModelForMaskedLM)

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            model_dir, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise fail(model_dir, "config.json / weights", f"cannot load ({first_line(exc)})") from None
    if info["mismatched_keys"]:
        key, ckpt_shape, model_shape = sorted(info["mismatched_keys"])[0]
        raise fail(
            model_dir,
            key,
            f"checkpoint has shape {tuple(ckpt_shape)} but config.json implies "
            f"{tuple(model_shape)} ({len(info['mismatched_keys'])} tensors differ) — the weights come "
            "from a model of another size; use the config.json saved with them",
        )
    missing = sorted(info["missing_keys"])
    unexpected = sorted(k for k in info["unexpected_keys"] if ".pooler." not in k)
    if missing or unexpected:
        what = (
            f"{len(missing)} weights missing (e.g. {missing[0]})"
            if missing
            else f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})"
        )
        raise fail(
            model_dir, "model weights", f"{what} — checkpoint and config.json disagree (another size or layer count?)"
        )
    return model


def read_probes(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise fail(path, "--probes", "no such file")
    probes = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "[MASK]" not in line:
            raise fail(f"{path}:{lineno}", "--probes", f"no [MASK] in {line!r}")
        probes.append(line)
    return probes


def fill_mask(model, tokenizer, sentences: list[str], device, top_k: int = 5) -> list[dict]:
    """Top-k predictions with probabilities (softmax over the vocab) at every [MASK] of each sentence."""
    was_training = model.training
    model.eval()
    max_len = model.config.max_position_embeddings
    results = []
    try:
        with torch.no_grad():
            for text in sentences:
                enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_len)
                enc = {k: v.to(device) for k, v in enc.items() if k in BATCH_KEYS}
                logits = model(**enc).logits[0]  # no labels -> full head, (L, V)
                positions = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
                masks = []
                for pos in positions:
                    probs = logits[pos].float().softmax(-1)  # (V,)
                    p, ids = probs.topk(top_k)
                    masks.append(
                        {
                            "position": pos,
                            "predictions": [
                                {
                                    "token": tokenizer.convert_ids_to_tokens(int(i)),
                                    "token_id": int(i),
                                    "probability": float(q),
                                }
                                for q, i in zip(p.tolist(), ids.tolist())
                            ],
                        }
                    )
                filled = text
                for m in masks:  # top-1 into each [MASK], left to right
                    filled = filled.replace("[MASK]", m["predictions"][0]["token"], 1)
                results.append({"text": text, "filled": filled, "masks": masks})
    finally:
        model.train(was_training)
    return results


def checkpoint_step(model_dir: Path) -> int | None:
    """The optimizer step of a checkpoint: trainer_state.json, a `checkpoint-<step>` name, or for
    `final/` the last step in the run's metrics.jsonl; None for other dirs (published, baselines)."""
    state = model_dir / "trainer_state.json"
    if state.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(state.read_text())["step"])
    m = re.fullmatch(r"checkpoint-(\d+)", model_dir.name)
    if m:
        return int(m.group(1))
    # final/ is written after the last step: the last step logged in the run's metrics.jsonl
    # (the workflow copies it into final/; the trainer writes it beside final/)
    metrics = next((p for p in (model_dir / "metrics.jsonl", model_dir.parent / "metrics.jsonl") if p.is_file()), None)
    if model_dir.name == "final" and metrics is not None:
        steps = []
        for line in metrics.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                steps.append(int(json.loads(line)["step"]))
        return max(steps, default=None)
    return None


def shard_batches(
    shards, batch_size, vocab_size=30522, *, max_positions=None, rank=0, world=1, fixed_shape=False, cache_dir=None
):
    """Sequential test batches (bigs.data.format.batch_tensors): the CLI and the trainer's eval share them.

    Each of `world` ranks takes every world-th batch. gs:// shards are downloaded one at a time
    and deleted after use, or kept in `cache_dir` when given (the trainer evaluates many times).
    A shard longer than `max_positions` (the model's position table) is refused, naming it.
    fixed_shape ([xla]): drop_last, and labels (B, P) at `masked_positions` (B, P), so every batch
    has one shape and no boolean indexing is needed.
    """
    import tempfile

    import numpy as np

    from bigs.data.format import batch_tensors, check_fits, validate_shard
    from bigs.data.storage import fetch_to_cache, local_copy

    with contextlib.ExitStack() as stack:
        tmp = cache_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="bigs-eval-"))
        i = 0
        for uri in shards:
            if cache_dir is not None and "://" in str(uri):
                cached = Path(tmp) / str(uri).rsplit("/", 1)[-1]
                path = cached if cached.exists() else fetch_to_cache(uri, tmp)
                arrays = validate_shard(path, vocab_size=vocab_size)
            else:
                with local_copy(uri, tmp) as path:
                    arrays = validate_shard(path, vocab_size=vocab_size)  # ids >= the model's vocab: BigsError
            n, seq_len = arrays["input_ids"].shape
            check_fits(uri, seq_len, max_positions)
            end = n - n % batch_size if fixed_shape else n
            for lo in range(0, end, batch_size):
                if i % world == rank:
                    yield batch_tensors(arrays, np.arange(lo, min(lo + batch_size, n)), fixed_shape)
                i += 1


def count_batches(shards, batch_size) -> int | None:
    """Batches in local shards (reads only the hdf5 headers), for the progress bar; None if remote."""
    import h5py

    if any("://" in str(p) for p in shards):
        return None
    total = 0
    try:
        for p in shards:
            with h5py.File(p, "r") as f:
                total += math.ceil(f["input_ids"].shape[0] / batch_size)
    except (OSError, KeyError):  # a broken shard: validate_shard reports it properly when reached
        return None
    return total


def markdown(result: dict) -> str:
    m = result["metrics"]
    step = f" (step {result['step']})" if result["step"] is not None else ""
    lines = [
        f"# Evaluation of `{result['model']}`{step}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| masked-LM loss (nats / token) | {m['eval_loss']:.4f} |",
        f"| accuracy | {100 * m['eval_accuracy']:.2f} % |",
        f"| perplexity | {m['eval_perplexity']:.3f} |",
        f"| masked tokens | {m['eval_tokens']:,} |",
        f"| batches | {m['eval_batches']:,} |",
        "",
    ]
    if result["probes"]:
        lines += ["## Fill-mask probes", "", "| probe | top predictions (probability) |", "|---|---|"]
        for pr in result["probes"]:
            for m_ in pr["masks"]:
                preds = ", ".join(f"{p['token']} ({p['probability']:.3g})" for p in m_["predictions"])
                text = pr["text"].replace("|", "\\|") + (f" @{m_['position']}" if len(pr["masks"]) > 1 else "")
                lines.append(f"| {text} | {preds.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigs.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="checkpoint dir with config.json + model.safetensors")
    p.add_argument("--dataset_path", required=True, help="dir (or gs:// prefix) with test_shard_*.hdf5")
    p.add_argument("-o", "--output", required=True, help="OUT.json; OUT.md is written beside it")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_batches", type=int, default=None, help="stop after N batches (default: all)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--probes", default=str(DEFAULT_PROBES), help="sentences with [MASK], one per line")
    p.add_argument("--top_k", type=int, default=5)
    p.add_argument(
        "--tokenizer",
        default=None,
        help="vocab.txt, tokenizer dir or cached name "
        "(default: the model dir's, else the bundled bert-large-uncased vocab)",
    )
    args = p.parse_args(argv)

    for flag in ("batch_size", "top_k", "max_batches"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise fail("command line", f"--{flag}", f"must be >= 1, got {v}")
    out = Path(args.output)
    if out.suffix != ".json":
        raise fail(out, "-o", "the output must end in .json (the markdown goes beside it as .md)")
    device = setup(args.device, bf16=False).device  # TF32 as in training (bigs/train/runtime.py)

    # Check cheap inputs before the slow model load.
    from bigs.data.format import list_shards

    shards = list_shards(args.dataset_path, "test")  # BigsError when there are none
    probes = read_probes(args.probes)
    model_dir = Path(args.model)
    model = load_model(model_dir).to(device)
    tokenizer = load_tokenizer(args.tokenizer, model_dir, model.config.vocab_size)

    from tqdm import tqdm

    t0 = time.time()
    total = count_batches(shards, args.batch_size)
    if args.max_batches is not None:
        total = min(total, args.max_batches) if total is not None else args.max_batches
    bar = tqdm(
        shard_batches(
            shards, args.batch_size, model.config.vocab_size, max_positions=model.config.max_position_embeddings
        ),
        desc=f"evaluate {model_dir.name}",
        unit="batch",
        total=total,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )  # sparse in logs
    metrics = evaluate_mlm(model, bar, device, max_batches=args.max_batches)
    bar.close()
    result = {
        "model": str(model_dir.resolve()),
        "model_type": model.config.model_type,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "step": checkpoint_step(model_dir),
        "dataset_path": str(args.dataset_path),
        "test_shards": len(shards),
        "batch_size": args.batch_size,
        "max_batches": args.max_batches,
        "device": str(device),
        "metrics": metrics,
        "eval_seconds": round(time.time() - t0, 3),
        "probes": fill_mask(model, tokenizer, probes, device, args.top_k),
    }
    with atomic_path(out.with_suffix(".md"), suffix=".md") as tmp:
        tmp.write_text(markdown(result))
    with atomic_path(out, suffix=".json") as tmp:  # the .json last: its presence means both are done
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    m = metrics
    print(
        f"{model_dir}: loss {m['eval_loss']:.4f}, accuracy {m['eval_accuracy']:.4f}, perplexity "
        f"{m['eval_perplexity']:.3f} over {m['eval_tokens']:,} masked tokens -> {out}"
    )
    for pr in result["probes"][:3]:
        print(f"  {pr['text']} -> {pr['filled']}")
    return 0


if __name__ == "__main__":
    cli_main(main)
