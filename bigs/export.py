"""A Hugging Face model card for a finished run, and its upload to the hub.

    python -m bigs.export RUN_DIR [--evaluation EVAL.json] [--glue GLUE.csv] [--datasets wikipedia bookcorpus]
        [--language en] [--license apache-2.0] [--push_to_hub USER/NAME] [--private]

Writes RUN_DIR/final/README.md: YAML metadata (library_name transformers, pipeline_tag fill-mask, tags
with `bigs`, licence, datasets, language) and a body — what the model is, how it was trained (the
recipe's flags, tokens seen, wall time, hardware, from final/trainer_state.json), its masked-LM
evaluation (bigs.evaluate's JSON, else the trainer's last evaluation in metrics.jsonl), its GLUE
table when the run was fine-tuned (bigs.glue_table's CSV), how to load it, the citation.

--push_to_hub USER/NAME uploads final/ (card, config, weights, tokenizer) with huggingface_hub.
Offline (HF_HUB_OFFLINE=1) or without a token it stops with one line (exit 2) before writing
anything; the token and the network are checked (whoami) before the card is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bigs.errors import BigsError, atomic_path, cli_main, fail, first_line
from bigs.train.metrics import human_time

CITATION = """@article{wang2022pretraining,
  title   = {Pretraining Without Attention},
  author  = {Wang, Junxiong and Yan, Jing Nathan and Gu, Albert and Rush, Alexander M.},
  journal = {arXiv preprint arXiv:2212.10544},
  year    = {2022}
}"""
# Flags of bigs.pretrain worth a line in the card (the rest are in final/trainer_state.json).
RECIPE_FLAGS = (
    "model_type", "n_layers", "hidden_size", "intermediate_size", "num_ssm", "max_seq_length",
    "per_device_train_batch_size", "global_batch_size", "gradient_accumulation_steps", "learning_rate",
    "schedule_type", "warmup_steps", "warmup_proportion", "num_total_train_steps", "total_training_time",
    "early_exit_time_marker", "finetune_time_markers", "weight_decay",
    "adam_beta1", "adam_beta2", "hidden_dropout_prob", "precision", "adafactor", "seed",
)  # fmt: skip


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise fail(path, what, "missing — is the run finished? (python -m bigs.pretrain writes final/ at its end)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise fail(path, what, f"not valid JSON ({exc.msg})") from None


def mlm_evaluation(run_dir: Path, evaluation: str | None) -> dict | None:
    """bigs.evaluate's metrics (its JSON), else the trainer's last in-run evaluation, else None."""
    if evaluation:
        res = read_json(Path(evaluation), "--evaluation")
        return {**res["metrics"], "source": f"bigs.evaluate on {res.get('test_shards', '?')} test shards"}
    from bigs.plots import read_metrics

    for metrics in (run_dir / "metrics.jsonl", run_dir / "final" / "metrics.jsonl"):
        if metrics.is_file():
            _, evals = read_metrics(metrics)
            if evals:
                return {**evals[-1], "source": f"the trainer's evaluation at step {evals[-1]['step']}"}
    return None


def glue_rows(path: str | None) -> list[dict]:
    from bigs.glue_table import read_csv

    if not path:
        return []
    return [r for r in read_csv(path, flag="--glue") if r["metric"].startswith("score") or r["task"] == "avg"]


def hub_model(init_from: str | None) -> str | None:
    """The card's base_model: what the run continued from when that is a hub model; a local dir
    (the workflow's results/pretrain/<run>/final) is no hub id and only named in the body."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not init_from or Path(init_from).exists():
        return None
    try:
        validate_repo_id(init_from)
    except HFValidationError:
        return None
    return init_from


def card_text(run_dir: Path, args) -> str:
    """The model card: YAML front matter + markdown body."""
    from huggingface_hub import ModelCard, ModelCardData

    final = run_dir / "final"
    config = read_json(final / "config.json", "config.json")
    state = read_json(final / "trainer_state.json", "trainer_state.json")
    flags = state.get("args", {})
    bigs = config.get("model_type") == "BiGS"
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=["bigs", "state-space-model", "ssm", "masked-lm", "pretraining-without-attention"]
        if bigs
        else ["bert", "masked-lm", "bigs-baseline"],
        license=args.license,
        datasets=args.datasets,
        language=args.language,
        base_model=hub_model(state.get("init_from")),
    )
    body = [
        f"# {args.name or run_dir.name}",
        "",
        what_it_is(config, bigs),
        "",
        "## Training",
        "",
        training_table(state, flags, config),
        "",
        "## Masked-LM evaluation",
        "",
        evaluation_text(mlm_evaluation(run_dir, args.evaluation)),
        "",
    ]
    rows = glue_rows(args.glue)
    if rows:
        body += ["## GLUE (dev)", "", "task score, median over seeds (min–max), in %", "", "| task | score | seeds |"]
        body += ["|---|---|---|"] + [
            f"| {r['task']} | {r['median']:.1f} ({r['min']:.1f}–{r['max']:.1f}) | {r['n']} |" for r in rows
        ]
        body.append("")
    body += ["## How to use", "", usage(bigs), "", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)))


def what_it_is(config: dict, bigs: bool) -> str:
    size = (
        f"{config.get('num_hidden_layers')} layers, hidden size {config.get('hidden_size')}, intermediate size "
        f"{config.get('intermediate_size')}, {config.get('max_position_embeddings')} positions"
    )
    if bigs:
        return (
            "A **BiGS** masked language model — the attention-free, bidirectional gated state-space BERT of "
            "*Pretraining Without Attention* (Wang, Yan, Gu, Rush 2022): each layer mixes the sequence with two "
            f"S4D convolutions (forward and backward) gated multiplicatively, no attention ({size}, "
            f"{config.get('num_ssm')} SSM states). Pretrained with bigs-workflow (PyTorch), weights in the "
            "published BiGS key layout."
        )
    return f"The BERT baseline of a BiGS comparison ({size}), pretrained with bigs-workflow on the same data."


def training_table(state: dict, flags: dict, config: dict) -> str:
    rows = [
        ("optimizer steps", f"{state.get('step', '?'):,}"),
        ("token positions seen", f"{state.get('tokens_seen', 0):,}"),
        ("training wall time", f"{human_time(state.get('elapsed_s', 0))} (the training loop, evaluations included)"),
        ("hardware", state.get("hardware", "not recorded")),
    ]
    if state.get("init_from"):
        rows.insert(0, ("continued from", f"`{state['init_from']}`"))
    overridden = {"warmup_steps"} if flags.get("warmup_proportion") is not None else set()
    rows += [(f"`--{k}`", f"`{flags[k]}`") for k in RECIPE_FLAGS if flags.get(k) is not None and k not in overridden]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def evaluation_text(ev: dict | None) -> str:
    if ev is None:
        return "Not evaluated (no test shards)."
    return (
        f"On held-out test shards ({ev['source']}): masked-token loss {ev['eval_loss']:.4f} nats, accuracy "
        f"{100 * ev['eval_accuracy']:.2f} %, perplexity {ev['eval_perplexity']:.2f}, over "
        f"{ev.get('eval_tokens', 0):,} masked tokens."
    )


def usage(bigs: bool) -> str:
    imp = 'import bigs.model  # registers model_type "BiGS" with the Auto classes (pip install bigs-workflow)\n'
    return (
        "```python\n"
        + (imp if bigs else "")
        + "from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline\n\n"
        "model = AutoModelForMaskedLM.from_pretrained(PATH_OR_REPO)\n"
        "tok = AutoTokenizer.from_pretrained(PATH_OR_REPO)\n"
        'pipeline("fill-mask", model=model, tokenizer=tok)("Paris is the [MASK] of France.")\n'
        "```\n"
        + (
            "\nFor classification: `bigs.model.BiGSForSequenceClassification.from_pretrained(PATH_OR_REPO, num_labels=N)` "
            "(the original's pooler: the mean over non-pad positions), or `python -m bigs.finetune`."
            if bigs
            else ""
        )
    )


def check_hub(repo: str):
    """The hub is reachable and we have a token: (HfApi, user) — before anything is written."""
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise fail(repo, "--push_to_hub", "offline (HF_HUB_OFFLINE=1): nothing written; push from a machine online")
    token = get_token()
    if not token:
        raise fail(repo, "--push_to_hub", "no Hugging Face token: run `hf auth login` or set HF_TOKEN; nothing written")
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
    except Exception as exc:  # noqa: BLE001 — network, proxy or an invalid token: one line either way
        first = first_line(exc)
        raise fail(repo, "--push_to_hub", f"the hub did not accept the token ({first}); nothing written") from None
    return api, user


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigs.export", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", help="a finished run: results/pretrain/<run> (holds final/)")
    p.add_argument("--evaluation", default=None, help="bigs.evaluate's JSON (default: the trainer's last evaluation)")
    p.add_argument("--glue", default=None, help="the run's GLUE table (bigs.glue_table run's CSV)")
    p.add_argument("--datasets", nargs="+", default=["wikipedia"], help="hub dataset ids of the pretraining text")
    p.add_argument("--language", default="en")
    p.add_argument("--license", default="apache-2.0")
    p.add_argument("--name", default=None, help="the card's title (default: the run dir's name)")
    p.add_argument("--push_to_hub", default=None, metavar="USER/NAME", help="upload final/ to this hub repo")
    p.add_argument("--private", action="store_true", help="with --push_to_hub: a private repo")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    final = run_dir / "final"
    api = check_hub(args.push_to_hub)[0] if args.push_to_hub else None
    text = card_text(run_dir, args)
    with atomic_path(final / "README.md") as tmp:
        tmp.write_text(text)
    print(f"model card: {final / 'README.md'}")
    if api is not None:
        try:
            api.create_repo(args.push_to_hub, private=args.private, exist_ok=True)
            info = api.upload_folder(
                folder_path=str(final), repo_id=args.push_to_hub, commit_message="bigs-workflow export"
            )
        except Exception as exc:  # noqa: BLE001 — one line, the card stays (it is correct either way)
            raise BigsError(f"{args.push_to_hub}: --push_to_hub: upload failed ({first_line(exc)})") from None
        print(f"pushed {final} to {getattr(info, 'commit_url', args.push_to_hub)}")
    return 0


if __name__ == "__main__":
    cli_main(main)
