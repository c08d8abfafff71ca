"""Long context: a new run from a model's weights at a longer length (bigs/train/warmstart.py),
data at long lengths, the workflow's chains of runs, long-document fine-tuning."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import make_shard, metrics, run_cli, tiny_args

from bigs.errors import BigsError


@pytest.fixture(scope="module")
def long_shards(tmp_path_factory):
    """The conftest shards' data at L 64 (P 10): what a run continued from the L 32 model trains on."""
    d = tmp_path_factory.mktemp("shards64")
    for k in range(2):
        make_shard(d / f"train_shard_{k}.hdf5", 40, L=64, P=10, seed=k)
    make_shard(d / "test_shard_0.hdf5", 24, L=64, P=10, seed=99)
    return d


@pytest.fixture(scope="module")
def short_run(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("short") / "run32"
    run_cli(tiny_args(shards, out, steps=10, eval_steps=10))
    return out


def long_args(data, out, source, **over):
    return tiny_args(data, out, **{"max_seq_length": 64, "max_predictions_per_seq": 10, **over}) + [
        f"--model_name_or_path={source}"
    ]


# ----------------------------------------------------------------------------- weights
@pytest.mark.parametrize("how", ["tile", "random"])
def test_every_tensor_is_the_models_and_new_position_rows_follow_the_rule(short_run, how):
    from safetensors.torch import load_file

    from bigs.pretrain import build_model, parse_args
    from bigs.train.warmstart import check_source, load_into

    args = parse_args(["--output_dir=o", "--dataset_path=d", "--max_seq_length=64", "--n_layers=2", "--hidden_size=32",
                       "--intermediate_size=48"])  # fmt: skip
    model = build_model(args, "cpu")
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 48, "num_ssm": 64}
    source = check_source(str(short_run / "final"), model_type="s4-bert", sizes=sizes, max_seq_length=64)
    assert source.positions == 32 and source.tokens_seen == 10 * 8 * 32
    load_into(model, source, position_init=how, seed=3)
    theirs, ours = load_file(str(short_run / "final" / "model.safetensors")), model.state_dict()
    key = "bigs.embeddings.position_embeddings.weight"
    for k, t in theirs.items():
        if k != key:
            assert torch.equal(ours[k], t), k
    pos = ours[key]
    assert pos.shape == (64, 32) and torch.equal(pos[:32], theirs[key])
    if how == "tile":
        assert torch.equal(pos[32:], theirs[key])
    else:
        assert 0.01 < pos[32:].std().item() < 0.03 and not torch.equal(pos[32:], theirs[key])
    assert (
        ours["cls.predictions.decoder.weight"].data_ptr() == ours["bigs.embeddings.word_embeddings.weight"].data_ptr()
    )


def test_a_new_run_from_a_model_says_the_new_length_and_resumes_its_own_checkpoint(short_run, long_shards, tmp_path):
    out = tmp_path / "run64"
    args = long_args(long_shards, out, short_run / "final", steps=2000, save_steps=1000, logging_steps=1)
    proc = subprocess.Popen([sys.executable, "-m", "bigs.pretrain", *args], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and len(metrics(out)) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3 and f"weights from {short_run / 'final'} (32 positions" in stdout
    assert "positions 32..63: tile" in stdout
    first = metrics(out)[0]
    assert first["step"] == 1 and first["tokens_seen"] == 10 * 8 * 32 + 8 * 64  # tokens seen continue the model's
    (ckpt,) = out.glob("checkpoint-*")
    r = run_cli([a.replace("2000", str(int(ckpt.name.split("-")[1]) + 2)) for a in args])
    assert f"resumed from {ckpt}" in r.stdout and "weights from" not in r.stdout  # never re-initialised
    cfg = json.loads((out / "final" / "config.json").read_text())
    state = json.loads((out / "final" / "trainer_state.json").read_text())
    assert cfg["max_position_embeddings"] == 64 and state["init_from"] == str(short_run / "final")


@pytest.mark.parametrize(
    "over, message",
    [
        ({"hidden_size": 48}, "config.json: hidden_size: 32 but the flags ask for 48"),
        ({"model_type": "bert"}, "model_type: 'BiGS' but --model_type bert builds 'bert'"),
        ({"max_seq_length": 16, "max_predictions_per_seq": 5}, "the model has 32 positions but --max_seq_length is 16"),
    ],
)
def test_a_model_that_cannot_start_the_run_is_one_error_before_anything_is_written(
    short_run, long_shards, tmp_path, over, message
):
    out = tmp_path / "never"
    r = run_cli(long_args(long_shards, out, short_run / "final", **over), check=False)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_a_bert_model_into_bigs_and_a_dir_without_weights_are_refused(short_run, long_shards, tmp_path):
    bert = tmp_path / "bert"
    run_cli(tiny_args(long_shards, bert, steps=2, warmup_steps=1,
                      eval_steps=2, model_type="bert", max_seq_length=64, max_predictions_per_seq=10))  # fmt: skip
    r = run_cli(long_args(long_shards, tmp_path / "a", bert / "final"), check=False)
    assert r.returncode == 2 and "model_type: 'bert' but --model_type s4-bert builds 'BiGS'" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((short_run / "final" / "config.json").read_text())
    r = run_cli(long_args(long_shards, tmp_path / "b", empty), check=False)
    assert r.returncode == 2 and "no weights" in r.stderr and not (tmp_path / "b").exists()


def test_an_unknown_model_name_offline_is_one_error(long_shards, tmp_path):
    r = run_cli(long_args(long_shards, tmp_path / "c", "JunxiongWang/BiGS_128"), check=False)
    assert r.returncode == 2 and "JunxiongWang/BiGS_128: --model_name_or_path:" in r.stderr
    assert not (tmp_path / "c").exists()


def test_position_rule_is_checked():
    from bigs.train.warmstart import extend_positions

    t = torch.arange(6.0).reshape(3, 2)
    assert extend_positions(t, 7, "tile", 0.02, 0)[:, 0].tolist() == [0, 2, 4, 0, 2, 4, 0]
    with pytest.raises(BigsError, match="--position_init: 'zeros'"):
        extend_positions(t, 7, "zeros", 0.02, 0)


# ----------------------------------------------------------------------------- long-document tasks
def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def longdoc_dir(tmp_path_factory):
    """Local copies in the documented layout (DIR/<task>/<split>.jsonl, the hub's columns)."""
    import random

    d = tmp_path_factory.mktemp("longdoc")
    rng = random.Random(5)
    outs = ["Entailment", "Contradiction", "Not mentioned"]
    words = {"Entailment": "shall", "Contradiction": "never", "Not mentioned": "maybe"}

    def nli(n):
        rows = []
        for i in range(n):
            o = rng.choice(outs)
            contract = f"The party {words[o]} disclose.\n\nSecond clause {rng.randint(0, 9)}."
            rows.append({"id": f"c{i}", "pid": "p", "input": f"Party may disclose?\n\n{contract}", "output": o})
        return rows

    write_jsonl(d / "contract_nli" / "train.jsonl", nli(160))
    write_jsonl(d / "contract_nli" / "dev.jsonl", nli(24))
    write_jsonl(d / "contract_nli" / "test.jsonl", [{**r, "output": None} for r in nli(5)])
    write_jsonl(
        d / "imdb" / "train.jsonl",
        [{"text": f"a {'good' if i % 2 else 'bad'} film", "label": i % 2} for i in range(20)],
    )
    write_jsonl(d / "imdb" / "test.jsonl", [{"text": "good", "label": 1}, {"text": "bad", "label": 0}])
    write_jsonl(
        d / "hyperpartisan" / "train.jsonl",
        [{"text": f"article {i}", "title": f"t{i}", "hyperpartisan": i % 3 == 0, "url": "u"} for i in range(645)],
    )
    return d


def test_contract_nli_is_a_pair_with_the_sorted_output_labels(longdoc_dir):
    from bigs.glue import read_split, task

    t = task("contract_nli")
    (train,) = read_split(t, "train", longdoc_dir)
    first = json.loads((longdoc_dir / "contract_nli" / "train.jsonl").read_text().splitlines()[0])
    assert train.texts[0][0] == "Party may disclose?" and train.texts[1][0] == first["input"].split("\n\n", 1)[1]
    assert "\n\nSecond clause" in train.texts[1][0]  # the whole contract, not only its first paragraph
    assert t.file_labels == ("Contradiction", "Entailment", "Not mentioned")
    assert train.labels[0] == t.file_labels.index(first["output"])
    (test,) = read_split(t, "test", longdoc_dir)
    assert test.labels is None and test.ids[0] == "c0"


def test_imdb_dev_is_its_test_split_and_hyperpartisan_is_cut_80_10_10(longdoc_dir):
    from bigs.glue import compute_metrics, read_split, task

    (dev,) = read_split(task("imdb"), "dev", longdoc_dir)
    assert dev.labels.tolist() == [1, 0] and dev.texts[0] == ["good", "bad"]
    t = task("hyperpartisan_news_detection")
    parts = {k: read_split(t, k, longdoc_dir)[0] for k in ("train", "dev", "test")}
    assert [len(p) for p in parts.values()] == [516, 64, 65]
    assert set(parts["train"].texts[0]).isdisjoint(parts["dev"].texts[0] + parts["test"].texts[0])
    assert parts["dev"].texts[0] == read_split(t, "dev", longdoc_dir)[0].texts[0]  # a fixed cut
    assert parts["train"].labels.tolist() == [int(x.split()[1]) % 3 == 0 for x in parts["train"].texts[0]]
    m = compute_metrics(t, parts["dev"].labels, parts["dev"].labels)
    assert m == {"accuracy": 1.0, "f1": 1.0, "combined_score": 1.0}


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "contract_nli/train.jsonl: file: missing — contract_nli offline reads"),
        ('{"input": "a\\n\\nb", "output": "Entailment"}\nnot json\n', "train.jsonl:2: json: not a JSON object"),
        ('{"text": "x", "output": "Entailment"}\n', "train.jsonl:1: input: missing"),
        ('{"input": "a\\n\\nb", "output": "Yes"}\n', "'Yes' is not a contract_nli label"),
    ],
)
def test_a_wrong_local_layout_is_one_error_naming_the_file(tmp_path, content, message):
    from bigs.glue import read_split, task

    if content is not None:
        (tmp_path / "contract_nli").mkdir()
        (tmp_path / "contract_nli" / "train.jsonl").write_text(content)
    with pytest.raises(BigsError, match=message.replace("(", r"\(").replace("?", r"\?")):
        read_split(task("contract_nli"), "train", tmp_path)


def test_fine_tunes_a_long_model_on_contract_nli_at_its_length(short_run, long_shards, longdoc_dir, tmp_path):
    """A model continued to L 64 fine-tuned at --max_seq_length 64 (the long-document protocol, tiny)."""
    from bigs.finetune import main

    model = tmp_path / "run64"
    run_cli(long_args(long_shards, model, short_run / "final", steps=2, warmup_steps=1, eval_steps=2))
    out = tmp_path / "ft"
    argv = ["--model_name_or_path", str(model / "final"), "--task_name", "contract_nli", "--data_dir", str(longdoc_dir),
            "--output_dir", str(out), "--do_train", "--do_eval", "--do_predict", "--max_seq_length", "64",
            "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--num_train_epochs", "8",
            "--save_strategy", "no"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((out / "eval_results.json").read_text())
    assert res["eval_samples"] == 24 and res["eval_accuracy"] > 0.6, res  # 3 classes, one word decides
    assert len((out / "predictions" / "test" / "contract_nli.tsv").read_text().splitlines()) == 6


# ----------------------------------------------------------------------------- the workflow's chain, for real
@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The trimmed embedded default with a 512 sample set of the same text shards and a chain:
    tiny128 (20 steps at L 128), then tiny512 continued from it (10 steps at L 512)."""
    from conftest import TINY, copy_workflow, smk, write_yaml

    wf = copy_workflow(tmp_path_factory.mktemp("chain"))
    cfg = {
        **TINY,
        "samples": {**TINY["samples"], "sets": [{"name": "L512", "max_seq_length": 512, "dup_factor": 1}]},
        "runs": [
            {"name": "tiny128"},
            {"name": "tiny512", "samples": "L512", "init_from": "tiny128", "num_total_train_steps": 10,
             "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "warmup_steps": 2},
        ],
    }  # fmt: skip
    write_yaml(wf / "chain.yaml", cfg)
    return wf, smk(wf, "--cores", "2", "pretrain", "--configfile", "chain.yaml").stdout


@pytest.mark.slow
def test_a_128_run_then_a_512_run_from_it_through_the_workflow(chain):
    wf, _ = chain
    r = wf / "results"
    final = r / "pretrain" / "tiny512" / "final"
    assert json.loads((final / "config.json").read_text())["max_position_embeddings"] == 512
    state = json.loads((final / "trainer_state.json").read_text())
    parent = json.loads((r / "pretrain" / "tiny128" / "final" / "trainer_state.json").read_text())
    assert state["init_from"] == "results/pretrain/tiny128/final" and state["step"] == 10
    assert state["tokens_seen"] == parent["tokens_seen"] + 10 * 4 * 512  # overlaid by tokens seen in the plots
    ev = json.loads((r / "evaluate" / "tiny512.json").read_text())
    assert ev["dataset_path"].endswith("enwiki-sample-L512") and ev["metrics"]["eval_tokens"] > 0
    assert json.loads((r / "evaluate" / "tiny128.json").read_text())["dataset_path"].endswith("enwiki-sample-L128")
    summary = (r / "plots" / "summary.md").read_text()
    assert "| tiny512 | 512 |" in summary and "| tiny128 | 128 |" in summary
    assert (
        "weights from results/pretrain/tiny128/final (128 positions" in (wf / "logs/train_run/tiny512.log").read_text()
    )


@pytest.mark.slow
def test_a_changed_parent_reruns_its_chain(chain):
    from conftest import job_counts, smk, write_yaml

    wf, _ = chain
    cfg = json.loads(json.dumps(yaml_load(wf / "chain.yaml")))
    cfg["runs"][0]["learning_rate"] = 1.0e-3  # the 128 run only
    write_yaml(wf / "changed.yaml", cfg)
    counts = job_counts(smk(wf, "-n", "pretrain", "--configfile", "changed.yaml").stdout)
    assert counts["train_run"] == 2 and counts["evaluate_run"] == 2 and "mask_shard" not in counts
    cfg = json.loads(json.dumps(yaml_load(wf / "chain.yaml")))
    cfg["runs"][1]["learning_rate"] = 1.0e-3  # the 512 run only: its parent stays
    write_yaml(wf / "changed.yaml", cfg)
    assert job_counts(smk(wf, "-n", "pretrain", "--configfile", "changed.yaml").stdout)["train_run"] == 1


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())
