"""GLUE fine-tuning: readers, metrics, bigs.finetune, tables, the `finetune` workflow.

Offline and small: GLUE-format fixtures are written here (GLUE itself is never downloaded or
committed); the model is a tiny BiGS of odd sizes (H 20, I 37, N 5, 1 layer, 24 positions)
saved like bigs.pretrain's final/. Fixture tasks are separable by one word ("good" / "bad"),
so a working fine-tuning loop must reach dev accuracy 1.0.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for_step

from bigs.errors import BigsError
from bigs.glue import TASKS, compute_metrics, matthews, pearson, ranks, read_split, spearman, task, task_score

# ------------------------------------------------------------------------------------------------
# fixtures: GLUE files in the download script's exact layouts

HEADERS = {  # train/dev header, test header (CoLA train/dev: none)
    "cola": (None, "index\tsentence"),
    "sst2": ("sentence\tlabel", "index\tsentence"),
    "mrpc": ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", "index\t#1 ID\t#2 ID\t#1 String\t#2 String"),
    "stsb": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2",
    ),
    "qqp": ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "id\tquestion1\tquestion2"),
    "mnli": (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2",
    ),
    "qnli": ("index\tquestion\tsentence\tlabel", "index\tquestion\tsentence"),
    "rte": ("index\tsentence1\tsentence2\tlabel", "index\tsentence1\tsentence2"),
    "wnli": ("index\tsentence1\tsentence2\tlabel", "index\tsentence1\tsentence2"),
}
MNLI_DEV_HEADER = HEADERS["mnli"][0].replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")


def row(hub: str, i: int, a: str, b: str, label, test: bool = False) -> str:
    """One line of a task's file: the texts and label in that task's columns."""
    label = str(label)
    if hub == "cola":
        return f"{i}\t{a}" if test else f"gj04\t{label}\t{'' if label == '1' else '*'}\t{a}"
    if hub == "sst2":
        return f"{i}\t{a}" if test else f"{a}\t{label}"
    if hub == "mrpc":
        return f"{i}\t{100 + i}\t{200 + i}\t{a}\t{b}" if test else f"{label}\t{100 + i}\t{200 + i}\t{a}\t{b}"
    if hub == "stsb":
        cells = [str(i), "main-news", "2012", "x", str(i), "none", "none", a, b]
        return "\t".join(cells if test else cells + [label])
    if hub == "qqp":
        return f"{i}\t{a}\t{b}" if test else f"{i}\t{2 * i}\t{2 * i + 1}\t{a}\t{b}\t{label}"
    if hub == "mnli":
        cells = [str(i), "1", f"{i}e", "fiction", f"( {a} )", f"( {b} )", "(ROOT)", "(ROOT)", a, b]
        return "\t".join(cells if test else cells + [label, label])
    return f"{i}\t{a}\t{b}" if test else f"{i}\t{a}\t{b}\t{label}"  # qnli, rte, wnli


def write_file(path: Path, hub: str, examples, test=False, mnli_dev=False) -> Path:
    header = HEADERS[hub][1 if test else 0]
    if mnli_dev:
        header = MNLI_DEV_HEADER
    lines = [] if header is None else [header]
    for i, (a, b, y) in enumerate(examples):
        line = row(hub, i, a, b, y, test)
        if mnli_dev:
            line = line + f"\t{y}" * 4
        lines.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_task(root: Path, hub: str, train, dev, test=None) -> Path:
    """<root>/<TASK>/{train,dev(_matched/_mismatched),test(_...)}.tsv"""
    t = TASKS[hub]
    d = root / t.name
    write_file(d / "train.tsv", hub, train)
    for stem in t.dev:
        write_file(d / f"{stem}.tsv", hub, dev, mnli_dev=hub == "mnli")
    for stem in t.test:
        write_file(d / f"{stem}.tsv", hub, test if test is not None else dev, test=True)
    return d


FILL = "the a movie film plot actor story scene was is very quite".split()


def separable(n: int, seed: int, labels=("0", "1"), words=("bad", "good")):
    """Sentences of filler words with exactly one label word: label i <-> words[i]."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randrange(len(labels))
        w = [rng.choice(FILL) for _ in range(rng.randint(2, 6))]
        w.insert(rng.randrange(len(w) + 1), words[k])
        out.append((" ".join(w), " ".join(rng.choice(FILL) for _ in range(3)), labels[k]))
    return out


def counting(n: int, seed: int):
    """Five words, k of them "good", score k (STS-B-like regression in [0, 5])."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(0, 5)
        w = ["good"] * k + ["bad"] * (5 - k)
        rng.shuffle(w)
        out.append((" ".join(w), "a film", f"{k:.1f}"))
    return out


@pytest.fixture(scope="session")
def tiny_bigs(tmp_path_factory) -> Path:
    """A tiny BiGS saved as bigs.pretrain saves final/ (config + safetensors + vocab)."""
    import torch

    from bigs.model import BiGSConfig, BiGSForMaskedLM
    from bigs.tokenizer import save_tokenizer
    from bigs.train.checkpoint import save_model

    d = tmp_path_factory.mktemp("tiny-bigs") / "final"
    d.mkdir()
    torch.manual_seed(0)
    model = BiGSForMaskedLM(
        BiGSConfig(hidden_size=20, num_hidden_layers=1, intermediate_size=37, num_ssm=5, max_position_embeddings=24)
    )
    save_model(model, d)
    save_tokenizer(d)
    return d


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("glue")
    write_task(root, "sst2", separable(61, 1), separable(19, 2), separable(7, 3))
    write_task(root, "stsb", counting(67, 4), counting(23, 5))
    write_task(
        root,
        "mnli",
        separable(53, 6, ("entailment", "neutral", "contradiction"), ("yes", "maybe", "no")),
        separable(17, 7, ("entailment", "neutral", "contradiction"), ("yes", "maybe", "no")),
    )
    write_task(
        root,
        "rte",
        separable(41, 8, ("entailment", "not_entailment"), ("yes", "no")),
        separable(13, 9, ("entailment", "not_entailment"), ("yes", "no")),
    )
    return root


def ft_args(model, task_name, data_dir, out, *extra):
    """bigs.finetune flags for the tiny model: L 12, batch 8, lr 1e-2, 4 epochs, no checkpoints."""
    return [
        "--model_name_or_path",
        str(model),
        "--task_name",
        task_name,
        "--data_dir",
        str(data_dir),
        "--output_dir",
        str(out),
        "--do_train",
        "--do_eval",
        "--max_seq_length",
        "12",
        "--per_device_train_batch_size",
        "8",
        "--per_device_eval_batch_size",
        "13",
        "--learning_rate",
        "1e-2",
        "--num_train_epochs",
        "4",
        "--logging_steps",
        "5",
        "--save_strategy",
        "no",
        *extra,
    ]


def finetune(*argv) -> dict:
    from bigs.finetune import main

    assert main(list(argv)) == 0
    out = Path(argv[argv.index("--output_dir") + 1])
    return json.loads((out / "eval_results.json").read_text())


# ------------------------------------------------------------------------------------------------
# readers


@pytest.mark.parametrize("hub", list(TASKS))
def test_reader_every_task(tmp_path, hub):
    t = TASKS[hub]
    labels = ["2.5", "0.0", "5.0"] if t.is_regression else [t.file_labels[i % t.num_labels] for i in range(3)]
    texts = [('He said "hi', "it's"), ('"quoted" text', 'a "b" c'), ("plain", "words ''")]
    ex = [(a, b, y) for (a, b), y in zip(texts, labels)]
    write_task(tmp_path, hub, ex, ex[:2], ex)
    (train,) = read_split(t, "train", tmp_path)
    assert train.texts[0] == [a for a, _ in texts]  # quote characters kept as text
    if len(t.text) == 2:
        assert train.texts[1] == [b for _, b in texts]
    want = [float(y) for y in labels] if t.is_regression else [t.file_labels.index(y) for y in labels]
    assert train.labels.tolist() == want
    dev = read_split(t, "dev", tmp_path)
    assert len(dev) == (2 if hub == "mnli" else 1) and all(len(s) == 2 for s in dev)
    test = read_split(t, "test", tmp_path)
    assert test[0].labels is None and test[0].ids == ["0", "1", "2"] and test[0].texts[0] == train.texts[0]


def test_mrpc_bom_and_crlf(tmp_path):
    """MRPC files start with a BOM; a \\r\\n line end is not part of the last text."""
    d = write_task(tmp_path, "mrpc", [("a", "b", "1")], [("c", "d", "0")])
    raw = (d / "train.tsv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfQuality")
    (d / "train.tsv").write_bytes(raw.replace(b"\n", b"\r\n"))
    (s,) = read_split(task("MRPC"), "train", tmp_path)
    assert s.texts == (["a"], ["b"]) and s.labels.tolist() == [1]


def test_task_names_either_spelling():
    assert task("sst2") is task("SST-2") is task("Sst-2")
    assert task("stsb") is task("STS-B") and task("MNLI").hub == "mnli"
    with pytest.raises(BigsError, match="unknown task 'sst3'"):
        task("sst3")


# ------------------------------------------------------------------------------------------------
# metrics against hand computations


def test_metrics_by_hand():
    p = np.array([1, 1, 0, 0, 1, 0, 1])
    y = np.array([1, 0, 0, 1, 1, 0, 0])
    tp, tn, fp, fn = 2, 2, 2, 1
    m = compute_metrics(task("mrpc"), p, y)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # 4/7
    assert m["combined_score"] == pytest.approx((4 / 7 + 4 / 7) / 2)
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute_metrics(task("cola"), p, y) == {"matthews_correlation": pytest.approx(mcc)}
    assert matthews(np.zeros(5, int), np.array([0, 1, 0, 1, 1])) == 0.0  # constant prediction: undefined -> 0
    # 3 classes: sklearn's multi-class form, worked by hand: C = [[2,1,0],[0,1,1],[0,0,1]] (pred x true)
    p3, y3 = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2])
    n, c, pk, tk = 6, 4, np.array([3, 2, 1]), np.array([2, 2, 2])
    assert matthews(p3, y3) == pytest.approx((c * n - pk @ tk) / math.sqrt((n * n - pk @ pk) * (n * n - tk @ tk)))


def test_correlations_by_hand():
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 1.0, 4.0, 3.0])
    assert pearson(x, y) == pytest.approx(0.6)  # cov 1.0 / var 1.25 each (population)
    assert ranks(np.array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]  # ties: average rank
    s = spearman(np.array([10.0, 20.0, 20.0, 5.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    rx, ry = np.array([2, 3.5, 3.5, 1]), np.array([1.0, 2, 3, 4])
    assert s == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    m = compute_metrics(task("stsb"), np.array([0.5, 4.0, 2.0]), np.array([1.0, 3.0, 2.5]))
    assert set(m) == {"pearson", "spearmanr", "combined_score"} and m["spearmanr"] == pytest.approx(1.0)


def test_task_score_for_the_average():
    assert task_score(task("mnli"), {"eval_accuracy": 0.8, "eval_accuracy_mm": 0.7}) == pytest.approx(75.0)
    assert task_score(
        task("qqp"), {"eval_accuracy": 0.9, "eval_f1": 0.8, "eval_combined_score": 0.85}
    ) == pytest.approx(85.0)
    assert task_score(task("cola"), {"eval_matthews_correlation": 0.5}) == pytest.approx(50.0)
    assert task_score(task("mnli"), {"eval_accuracy": 0.8}) is None  # matched only: not the MNLI score


# ------------------------------------------------------------------------------------------------
# fine-tuning a tiny BiGS


def test_learns_separable_task_and_writes_run_glue_outputs(tiny_bigs, glue_dir, tmp_path):
    out = tmp_path / "sst2"
    res = finetune(*ft_args(tiny_bigs, "SST-2", glue_dir, out, "--do_predict", "--num_train_epochs", "8"))
    assert res["eval_accuracy"] == 1.0 and res["eval_samples"] == 19 and res["epoch"] == 8.0
    train = json.loads((out / "train_results.json").read_text())
    assert {"train_loss", "train_runtime", "train_samples", "epoch"} <= set(train) and train["train_samples"] == 61
    assert json.loads((out / "all_results.json").read_text()) == {**train, **res}
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "BiGS" and cfg["id2label"] == {"0": "0", "1": "1"}
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log if x["kind"] == "train"] == [*range(5, 64, 5), 64]  # 8 steps/epoch x 8
    assert all("loss" in x and "learning_rate" in x for x in log if x["kind"] == "train")
    test_pred = (out / "predictions" / "test" / "SST-2.tsv").read_text().splitlines()
    assert test_pred[0] == "index\tprediction" and len(test_pred) == 8
    dev_pred = (out / "predictions" / "dev" / "SST-2.tsv").read_text().splitlines()[1:]
    (dev,) = read_split(task("sst2"), "dev", glue_dir)
    assert [int(x.split("\t")[1]) for x in dev_pred] == dev.labels.tolist()  # accuracy 1.0, in the files' labels
    assert not list(out.glob(".tmp*")) and not list(out.glob("checkpoint-*"))


def test_learns_regression(tiny_bigs, glue_dir, tmp_path):
    res = finetune(*ft_args(tiny_bigs, "stsb", glue_dir, tmp_path / "stsb", "--num_train_epochs", "6"))
    assert res["eval_pearson"] > 0.9, res
    assert {"eval_spearmanr", "eval_combined_score", "eval_loss"} <= set(res)


def test_seeded_runs_repeat_exactly_and_reload_predicts_the_same(tiny_bigs, glue_dir, tmp_path):
    a = finetune(*ft_args(tiny_bigs, "sst2", glue_dir, tmp_path / "a", "--num_train_epochs", "1", "--seed", "7"))
    b = finetune(*ft_args(tiny_bigs, "sst2", glue_dir, tmp_path / "b", "--num_train_epochs", "1", "--seed", "7"))
    c = finetune(*ft_args(tiny_bigs, "sst2", glue_dir, tmp_path / "c", "--num_train_epochs", "1", "--seed", "8"))
    assert a["eval_loss"] == b["eval_loss"]  # bit for bit
    assert a["eval_loss"] != c["eval_loss"]  # the seed matters (head init, data order, dropout)
    # save -> reload: evaluating the saved model alone gives the same loss
    again = finetune(
        "--model_name_or_path",
        str(tmp_path / "a"),
        "--task_name",
        "sst2",
        "--data_dir",
        str(glue_dir),
        "--output_dir",
        str(tmp_path / "a-eval"),
        "--do_eval",
        "--max_seq_length",
        "12",
        "--per_device_eval_batch_size",
        "13",
    )
    assert again["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-6)
    assert again["eval_accuracy"] == a["eval_accuracy"]


def test_resumes_from_its_checkpoint(tiny_bigs, glue_dir, tmp_path):
    """A run cut after checkpoint-10 (of 16 steps) resumes there and ends exactly like an uninterrupted run."""
    common = ["--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "5"]
    full = finetune(*ft_args(tiny_bigs, "sst2", glue_dir, tmp_path / "full", *common))
    cut = tmp_path / "cut"
    finetune(*ft_args(tiny_bigs, "sst2", glue_dir, cut, *common))
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-15", "checkpoint-5"]
    shutil.rmtree(cut / "checkpoint-15")  # as if killed after checkpoint-10
    for f in ("eval_results.json", "model.safetensors", "train_results.json"):
        (cut / f).unlink()
    resumed = finetune(*ft_args(tiny_bigs, "sst2", glue_dir, cut, *common))
    assert resumed["eval_loss"] == full["eval_loss"]
    steps = [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(15) == 1  # log lines after the checkpoint written once
    # other settings: the stale checkpoint is not resumed
    other = finetune(*ft_args(tiny_bigs, "sst2", glue_dir, cut, *common, "--learning_rate", "5e-3"))
    assert other["eval_loss"] != full["eval_loss"]


def test_random_init_control_uses_the_config_not_the_weights(tiny_bigs, glue_dir, tmp_path):
    import torch

    from bigs.finetune import load_model, parse_args

    base = [
        "--model_name_or_path",
        str(tiny_bigs),
        "--task_name",
        "sst2",
        "--output_dir",
        str(tmp_path),
        "--do_train",
        "--max_seq_length",
        "12",
    ]
    pre, _, _ = load_model(parse_args(base), task("sst2"))
    torch.manual_seed(123)  # not the fixture's seed 0: that would rebuild the (untrained) fixture itself
    rnd, _, _ = load_model(parse_args(base + ["--random_init"]), task("sst2"))
    assert pre.config.hidden_size == rnd.config.hidden_size == 20
    w = "bigs.embeddings.word_embeddings.weight"
    assert not torch.equal(pre.state_dict()[w], rnd.state_dict()[w])


def test_bert_baseline_checkpoint(glue_dir, tmp_path):
    """Our BERT baseline's final/ (BertForMaskedLM names) and a plain HF BERT dir both load."""
    import torch
    from transformers import BertConfig, BertModel

    from bigs.bert import BertForMaskedLMMaskedHead
    from bigs.tokenizer import save_tokenizer
    from bigs.train.checkpoint import save_model

    torch.manual_seed(0)
    cfg = BertConfig(
        hidden_size=20, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, max_position_embeddings=24
    )
    for name, model in (("bert-final", BertForMaskedLMMaskedHead(cfg)), ("hf-bert", BertModel(cfg))):
        d = tmp_path / name
        save_model(model, d)
        save_tokenizer(d)
        res = finetune(*ft_args(d, "sst2", glue_dir, tmp_path / f"{name}-out", "--num_train_epochs", "1"))
        assert 0 <= res["eval_accuracy"] <= 1
        assert json.loads((tmp_path / f"{name}-out" / "config.json").read_text())["model_type"] == "bert"


def test_mnli_start_protocol(tiny_bigs, glue_dir, tmp_path):
    """MNLI reports matched and mismatched; RTE from the MNLI model needs --ignore_mismatched_sizes."""
    mnli = finetune(*ft_args(tiny_bigs, "MNLI", glue_dir, tmp_path / "mnli", "--num_train_epochs", "1"))
    assert {"eval_accuracy", "eval_accuracy_mm", "eval_loss_mm", "eval_samples_mm"} <= set(mnli)
    rte = ft_args(tmp_path / "mnli", "rte", glue_dir, tmp_path / "rte", "--num_train_epochs", "1")
    with pytest.raises(
        BigsError,
        match=r"mnli/model.safetensors: classifier\.bias: checkpoint has shape \(3,\) but RTE needs \(2,\).*--ignore_mismatched_sizes",
    ):
        finetune(*rte)
    assert not (tmp_path / "rte").exists()
    assert "eval_accuracy" in finetune(*rte, "--ignore_mismatched_sizes")


# ------------------------------------------------------------------------------------------------
# bad input: one clear error naming the file (and line), nothing written


def _bad_dir(tmp_path, glue_dir, mutate):
    d = tmp_path / "glue"
    shutil.copytree(glue_dir / "SST-2", d / "SST-2")
    mutate(d / "SST-2")
    return d


BAD = [
    ("missing task dir", lambda d: shutil.rmtree(d), r"SST-2: --data_dir: no SST-2 directory"),
    ("missing split", lambda d: (d / "dev.tsv").unlink(), r"dev.tsv: file: missing"),
    (
        "wrong header",
        lambda d: (d / "train.tsv").write_text("text\tlabel\nfine\t1\n"),
        r"train.tsv:1: header: no column 'sentence'",
    ),
    (
        "column count",
        lambda d: (d / "train.tsv").write_text("sentence\tlabel\na\t1\nb\t0\textra\n"),
        r"train.tsv:3: columns: 3 tab-separated fields, expected 2",
    ),
    (
        "label outside the set",
        lambda d: (d / "dev.tsv").write_text("sentence\tlabel\na\t1\nb\t2\n"),
        r"dev.tsv:3: label: '2' is not a SST-2 label; expected one of 0, 1",
    ),
    ("empty train", lambda d: (d / "train.tsv").write_text("sentence\tlabel\n"), r"train.tsv: rows: no examples"),
]


@pytest.mark.parametrize("name,mutate,message", BAD, ids=[b[0] for b in BAD])
def test_bad_glue_files(tiny_bigs, glue_dir, tmp_path, name, mutate, message):
    d = _bad_dir(tmp_path, glue_dir, mutate)
    out = tmp_path / "out"
    with pytest.raises(BigsError, match=message):
        finetune(*ft_args(tiny_bigs, "sst2", d, out))
    assert not out.exists()


def test_bad_task_and_lengths(tiny_bigs, glue_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BigsError, match="unknown task 'glue'"):
        finetune(*ft_args(tiny_bigs, "glue", glue_dir, out))
    with pytest.raises(
        BigsError,
        match=r"config.json: max_position_embeddings: the model has 24 positions but "
        r"--max_seq_length is 128",
    ):
        finetune(*ft_args(tiny_bigs, "sst2", glue_dir, out, "--max_seq_length", "128"))
    bad = tmp_path / "no-model"
    bad.mkdir()
    with pytest.raises(BigsError, match=r"no-model/config.json: --model_name_or_path: missing"):
        finetune(*ft_args(bad, "sst2", glue_dir, out))
    assert not out.exists()


def test_offline_without_data_dir_says_how(tiny_bigs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from bigs.finetune import main

    with pytest.raises(BigsError, match=r"pass --data_dir DIR"):
        main(
            [
                "--model_name_or_path",
                str(tiny_bigs),
                "--task_name",
                "rte",
                "--output_dir",
                str(tmp_path / "o"),
                "--do_train",
            ]
        )


def test_cli_exit_code_2(tiny_bigs, glue_dir, tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "bigs.finetune", *ft_args(tiny_bigs, "wnli", glue_dir, tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: "), p.stderr[-2000:]
    assert "WNLI: --data_dir: no WNLI directory" in p.stderr


# ------------------------------------------------------------------------------------------------
# the guarantees pretraining has: busy dir, preemption, non-finite loss (bigs/train/)
def _ft_cli(*argv, env=None):
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "bigs.finetune", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_stop_signal_checkpoints_exits_3_and_the_rerun_ends_as_an_uninterrupted_run(
    tiny_bigs, glue_dir, tmp_path, sig
):
    """SIGTERM / SIGUSR1 (a cluster's preemption) and a first Ctrl-C: finish the step, checkpoint, exit 3;
    the same command again resumes and ends where an uninterrupted run ends (SIGTERM's rerun is checked)."""
    args = ft_args(tiny_bigs, "sst2", glue_dir, tmp_path / "cut", "--num_train_epochs", "20", "--logging_steps", "1")
    proc = _ft_cli(*args)
    wait_for_step(tmp_path / "cut", 10, [proc])
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr[-2000:]
    (ckpt,) = (tmp_path / "cut").glob("checkpoint-*")  # --save_strategy no: the stop's own checkpoint
    assert f"stopped by {sig.name}" in stdout and str(ckpt) in stdout and "Traceback" not in stderr
    assert not (tmp_path / "cut" / "eval_results.json").exists()
    if sig == signal.SIGTERM:
        full = finetune(*ft_args(tiny_bigs, "sst2", glue_dir, tmp_path / "full", "--num_train_epochs", "20"))
        resumed = finetune(*args)
        assert resumed["eval_loss"] == full["eval_loss"]  # bit for bit on CPU


def test_a_second_run_in_the_same_output_dir_is_refused_naming_the_first(tiny_bigs, glue_dir, tmp_path):
    import time

    out = tmp_path / "o"
    first = _ft_cli(*ft_args(tiny_bigs, "sst2", glue_dir, out, "--num_train_epochs", "5000", "--logging_steps", "1"))
    try:
        wait_for_step(out, 1, [first])
        t = time.time()
        second = _ft_cli(*ft_args(tiny_bigs, "sst2", glue_dir, out))
        _, stderr = second.communicate(timeout=120)
        assert second.returncode == 2 and time.time() - t < 30
        assert f"in use by a running bigs.finetune (pid {first.pid} on" in stderr and first.poll() is None
    finally:
        first.kill()  # kill -9: the kernel drops the lock with the process
        first.wait()
    assert "eval_accuracy" in finetune(*ft_args(tiny_bigs, "sst2", glue_dir, out, "--num_train_epochs", "1"))


def test_a_non_finite_loss_exits_4_naming_the_step_and_the_last_good_checkpoint(tiny_bigs, glue_dir, tmp_path):
    out = tmp_path / "o"
    args = ft_args(tiny_bigs, "sst2", glue_dir, out, "--save_strategy", "steps", "--save_steps", "5")
    proc = _ft_cli(*args, env={"BIGS_FAULT_NAN_AT_STEP": "12"})
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 4 and "non-finite loss (nan) at step 13" in stderr and "checkpoint-10" in stderr
    assert not (out / "checkpoint-15").exists() and not (out / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------
# tables


def _results(root: Path, run: str, scores: dict[str, list[dict]]) -> list[str]:
    paths = []
    for hub, per_seed in scores.items():
        for seed, res in zip((1, 2, 3), per_seed):
            p = root / run / hub / f"seed{seed}" / "eval_results.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(res))
            paths.append(str(p))
    return paths


def test_tables_and_plot(tmp_path):
    from bigs.glue_table import main

    sst = [{"eval_accuracy": a} for a in (0.80, 0.70, 0.75)]
    mrpc = [
        {"eval_accuracy": a, "eval_f1": f, "eval_combined_score": (a + f) / 2}
        for a, f in ((0.6, 0.8), (0.7, 0.7), (0.5, 0.9))
    ]
    mnli = [{"eval_accuracy": m, "eval_accuracy_mm": mm} for m, mm in ((0.6, 0.4), (0.5, 0.5), (0.7, 0.5))]
    wnli = [{"eval_accuracy": 0.1}] * 3
    paths = _results(tmp_path, "bigs", {"sst2": sst, "mrpc": mrpc, "mnli": mnli, "wnli": wnli})
    assert main(["run", "--name", "bigs", "--results", *paths, "-o", str(tmp_path / "bigs")]) == 0
    import csv

    rows = {(r["task"], r["metric"]): r for r in csv.DictReader(open(tmp_path / "bigs.csv"))}
    assert float(rows[("SST-2", "accuracy")]["median"]) == pytest.approx(75.0)
    assert float(rows[("SST-2", "accuracy")]["min"]) == pytest.approx(70.0)
    assert float(rows[("MRPC", "score")]["median"]) == pytest.approx(70.0)
    assert float(rows[("MNLI", "score")]["max"]) == pytest.approx(60.0)  # mean(m, mm) per seed: 50, 50, 60
    avg = rows[
        ("avg", "score (3 tasks)")
    ]  # WNLI left out; per seed: mean(80,70,50)=66.67, mean(70,70,50)=63.33, mean(75,70,60)=68.33
    assert float(avg["median"]) == pytest.approx(66.6667, abs=1e-3) and float(avg["min"]) == pytest.approx(
        63.3333, abs=1e-3
    )
    assert "| SST-2 | accuracy | 3 | 75.0 (70.0–80.0) |" in (tmp_path / "bigs.md").read_text()
    paths = _results(tmp_path, "bigs-random-init", {"sst2": [{"eval_accuracy": 0.9}]})
    main(["run", "--name", "bigs-random-init", "--results", *paths, "-o", str(tmp_path / "ctrl")])
    assert (
        main(
            [
                "summary",
                "--tables",
                str(tmp_path / "bigs.csv"),
                str(tmp_path / "ctrl.csv"),
                "-o",
                str(tmp_path / "summary"),
                "--plot",
                str(tmp_path / "glue.png"),
            ]
        )
        == 0
    )
    md = (tmp_path / "summary.md").read_text()
    assert "| task | bigs | bigs-random-init |" in md and "| SST-2 | 75.0 (70.0–80.0) | 90.0 |" in md
    assert "| MRPC | 70.0 (70.0–70.0) | – |" in md
    assert (tmp_path / "glue.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------------
# the workflow


@pytest.fixture(scope="module")
def wf_glue(tmp_path_factory, glue_dir):
    from conftest import copy_workflow

    wf = copy_workflow(tmp_path_factory.mktemp("wf-glue"))
    shutil.copytree(glue_dir, wf / "glue")
    return wf


def _overlay(wf, name, finetune):
    from conftest import write_yaml

    return write_yaml(wf / name, {"finetune": finetune})


def test_workflow_dry_run_two_tasks_two_seeds(wf_glue):
    from conftest import job_counts, shell_commands, smk

    _overlay(wf_glue, "ft.yaml", {"data_dir": "glue", "tasks": ["sst2", "rte"], "seeds": [1, 2]})
    out = smk(wf_glue, "-n", "-p", "finetune", "--configfile", "ft.yaml").stdout
    counts = job_counts(out)
    # 2 fine-tuned runs (bigs-tiny + its random-init control) x (sst2, rte, and mnli that rte starts from) x 2 seeds
    assert counts["finetune_task"] == 12 and counts["glue_table_run"] == 2 and counts["glue_summary"] == 1
    cmds = shell_commands(out, "bigs.finetune")
    rte = [c for c in cmds if "--task_name=rte" in c]
    assert len(rte) == 4 and all("--ignore_mismatched_sizes" in c and "--random_init" not in c for c in rte)
    assert {c[c.index("--task_name=rte") - 1] for c in rte} == {
        f"--model_name_or_path=results/finetune/{r}/mnli/seed{s}"
        for r in ("bigs-tiny", "bigs-tiny-random-init")
        for s in (1, 2)
    }
    ctrl = [c for c in cmds if "--output_dir=results/finetune/bigs-tiny-random-init/sst2/seed1" in c]
    assert len(ctrl) == 1 and "--random_init" in ctrl[0] and "--learning_rate=2e-05" in ctrl[0]
    assert "--data_dir=glue" in ctrl[0]


def test_workflow_without_data_fails_before_any_job(wf_glue):
    from conftest import smk

    p = smk(wf_glue, "-n", "finetune", check=False)
    assert p.returncode != 0 and "no GLUE data" in p.stdout and "--config finetune='{data_dir:" in p.stdout
    assert "Job stats" not in p.stdout
    assert smk(wf_glue, "-n", "pretrain").returncode == 0  # the embedded default's target is unchanged


@pytest.mark.slow
def test_workflow_tiny_run_and_reruns(wf_glue, tiny_bigs, monkeypatch):
    """Real jobs on a stand-in pretrained model; a per-task change reruns only that task's jobs."""
    from conftest import REPO as ROOT
    from conftest import job_counts, smk

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # jobs import bigs from this checkout, not an installed copy

    final = wf_glue / "results" / "pretrain" / "bigs-tiny" / "final"
    shutil.copytree(tiny_bigs, final)
    (final / "metrics.jsonl").write_text("")
    ft = {
        "data_dir": "glue",
        "tasks": ["sst2", "stsb"],
        "seeds": [3],
        "random_init_control": False,
        "from_mnli": [],
        "max_seq_length": 12,
        "per_device_train_batch_size": 8,
        "learning_rate": 1.0e-2,
        "num_train_epochs": 2,
        "logging_steps": 5,
    }
    _overlay(wf_glue, "real.yaml", ft)
    only = ["--allowed-rules", "finetune_task", "glue_table_run", "glue_summary", "finetune"]
    smk(wf_glue, "--cores", "2", "finetune", "--configfile", "real.yaml", *only)
    md = (wf_glue / "results" / "glue" / "summary.md").read_text()
    assert "| SST-2 |" in md and "| STS-B |" in md and "| avg |" in md
    assert (wf_glue / "results" / "plots" / "glue.png").stat().st_size > 0
    _overlay(wf_glue, "changed.yaml", {**ft, "per_task": {"stsb": {"learning_rate": 5.0e-3}}})
    counts = job_counts(smk(wf_glue, "-n", "finetune", "--configfile", "changed.yaml", *only).stdout)
    assert counts == {"finetune_task": 1, "glue_table_run": 1, "glue_summary": 1, "finetune": 1}, counts
