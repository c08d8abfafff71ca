"""bigs.export: the model card of a finished run (Hugging Face ModelCard fields, the figures of the
run), the exported final/ loading with the Auto classes, and --push_to_hub refusing offline or
without a token before anything is written."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import run_cli, tiny_args


@pytest.fixture(scope="module")
def run_dir(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "bigs-tiny"
    run_cli(tiny_args(shards, out, steps=10, eval_steps=10))
    return out


def export(*argv, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bigs.export", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def glue_csv(path):
    rows = [
        {"run": "bigs-tiny", "task": "SST-2", "metric": "score", "n": 3, "median": 81.2, "min": 80.0, "max": 82.5, "values": ""},
        {"run": "bigs-tiny", "task": "avg", "metric": "score (1 tasks)", "n": 3, "median": 81.2, "min": 80.0, "max": 82.5, "values": ""},
    ]  # fmt: skip
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_the_card_has_the_hub_fields_and_the_runs_figures(run_dir, tmp_path):
    from huggingface_hub import ModelCard

    r = export(run_dir, "--glue", glue_csv(tmp_path / "glue.csv"), "--datasets", "wikipedia", "bookcorpus")
    assert r.returncode == 0, r.stderr
    card = ModelCard.load(run_dir / "final" / "README.md")
    d = card.data
    assert d.library_name == "transformers" and d.pipeline_tag == "fill-mask" and "bigs" in d.tags
    assert d.license == "apache-2.0" and d.datasets == ["wikipedia", "bookcorpus"] and d.language == "en"
    state = json.loads((run_dir / "final" / "trainer_state.json").read_text())
    last_eval = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]
    text = card.text
    assert f"| token positions seen | {state['tokens_seen']:,} |" in text and "| optimizer steps | 10 |" in text
    assert f"accuracy {100 * last_eval['eval_accuracy']:.2f} %" in text and "1 × cpu" in text
    assert "| SST-2 | 81.2 (80.0–82.5) | 3 |" in text and "| `--hidden_size` | `32` |" in text
    assert "AutoModelForMaskedLM" in text and "arXiv:2212.10544" in text


def test_the_exported_model_loads_with_the_auto_classes(run_dir):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    import bigs.model  # noqa: F401  (registers "BiGS")

    assert export(run_dir).returncode == 0
    model = AutoModelForMaskedLM.from_pretrained(run_dir / "final")
    tok = AutoTokenizer.from_pretrained(run_dir / "final")
    ids = tok("the goal of life is [MASK] .", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert type(model).__name__ == "BiGSForMaskedLM" and logits.shape[-1] == 30522 and len(tok) == 30522


@pytest.mark.parametrize(
    "env, message",
    [
        ({"HF_HUB_OFFLINE": "1"}, "offline (HF_HUB_OFFLINE=1): nothing written"),
        ({"HF_HUB_OFFLINE": "0", "HF_TOKEN": ""}, "no Hugging Face token"),
    ],
)
def test_push_refuses_offline_or_without_a_token_and_writes_nothing(run_dir, tmp_path, env, message):
    (run_dir / "final" / "README.md").unlink(missing_ok=True)
    r = export(run_dir, "--push_to_hub", "someone/bigs-tiny", env={**env, "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (run_dir / "final" / "README.md").exists()


def test_an_unfinished_run_is_one_clear_error(tmp_path):
    r = export(tmp_path / "nothing")
    assert r.returncode == 2 and "config.json: missing — is the run finished?" in r.stderr


def test_base_model_is_set_for_a_hub_model_only(run_dir, tmp_path, monkeypatch):
    from bigs.export import hub_model

    assert hub_model("JunxiongWang/BiGS_128") == "JunxiongWang/BiGS_128"
    assert hub_model(None) is None and hub_model(str(run_dir / "final")) is None
    assert hub_model("results/pretrain/bigs-128/final") is None  # the workflow's: no hub id
    monkeypatch.chdir(run_dir.parent)
    assert hub_model(f"{run_dir.name}/final") is None  # looks like owner/name, but is a dir here


def test_the_recipe_table_shows_the_warmup_that_ran():
    from bigs.export import training_table

    by_time = training_table({"step": 703}, {"warmup_steps": 2000, "warmup_proportion": 0.05}, {})
    assert "| `--warmup_proportion` | `0.05` |" in by_time and "warmup_steps" not in by_time  # overridden
    assert "| `--warmup_steps` | `2000` |" in training_table({"step": 1}, {"warmup_steps": 2000}, {})
