"""GLUE: the nine tasks, their file readers, their metrics and the GLUE average (REFERENCE.md §5);
and the long-document tasks the original's run_glue.py fine-tunes the long models on (REFERENCE.md §7).

One table (`TASKS`) says everything about a task: where its files are, which columns hold the
text and the label, the label set, the metrics. Everything else reads it:

    from bigs.glue import task, read_split, compute_metrics
    t = task("SST-2")                                  # also "sst2", "Sst-2"
    split = read_split(t, "train", data_dir="glue")   # glue/SST-2/train.tsv
    compute_metrics(t, predictions, split.labels)      # {"accuracy": ...}

Local files: the layout of the usual GLUE download script, `DIR/<TASK>/{train,dev,test}.tsv`
(MNLI: dev_matched / dev_mismatched / test_matched / test_mismatched). Read with quoting OFF:
a `"` is text, never a field delimiter (csv's default quoting would swallow tabs and newlines
between two quote marks). MRPC's files start with a UTF-8 BOM: read as utf-8-sig. Columns are
found by header name (the headers are fixed by the download script; MNLI's train and dev files
have different widths but the same names); CoLA's train/dev files have no header.

Labels: ids follow the hub dataset `nyu-mll/glue` (what the original run_glue trains on), so a
model fine-tuned from local files and one fine-tuned from the hub agree on what class 0 means.
`file_labels[i]` is how class i is written in the .tsv files, and in the GLUE submission files.

Long documents (`LONG_TASKS`; fine-tune at the model's length, e.g. --max_seq_length 4096), from the
hub online or offline from `DIR/<task>/<split>.jsonl`, the hub's splits (validation as dev.jsonl),
one JSON object per line with the hub's columns:
  contract_nli   SCROLLS (tau/scrolls, contract_nli): `input` is "<hypothesis>\n\n<contract>", read as the
                 pair (hypothesis, contract) — the original splits on every "\n\n" and keeps the first
                 paragraph of the contract only; we keep all of it. Labels: the sorted `output` values
                 (Contradiction, Entailment, Not mentioned), as the original. Accuracy. dev = validation.
  imdb           stanfordnlp/imdb: `text`, `label` (0 negative, 1 positive). Accuracy; dev = test, as the original.
  hyperpartisan  hyperpartisan_news_detection (byarticle): (`text`, `title`), `hyperpartisan` (true/false).
                 The hub has a train split only (645 articles): train/dev/test = 80/10/10 % of it by a fixed
                 permutation (the original's train_test_split had no seed). Accuracy and F1 of "true".
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bigs.errors import BigsError, fail, first_line


@dataclass(frozen=True)
class Task:
    name: str  # directory and submission name, as the download script spells it: "SST-2"
    hub: str  # nyu-mll/glue config name: "sst2"
    text: tuple[str, ...]  # header names of the text column(s); CoLA train/dev: by position
    label: str  # header name of the label column ("" = CoLA's headerless files)
    file_labels: tuple[str, ...] | None  # class i as written in the files; None = regression
    metrics: tuple[str, ...]  # HF run_glue's metric names, in its order
    dev: tuple[str, ...] = ("dev",)  # dev split file stems
    test: tuple[str, ...] = ("test",)
    test_id: str = "index"
    hub_text: tuple[str, ...] = ()  # column names in nyu-mll/glue when they differ from `text`
    submission: tuple[str, ...] = ()  # GLUE submission file stems, one per dev/test split
    dataset: str = "nyu-mll/glue"  # the hub dataset (long-document tasks: their own)
    dataset_config: str | None = None  # its config (GLUE's is `hub`)
    fmt: str = "tsv"  # local files: GLUE's .tsv, or .jsonl with the hub's columns (long documents)

    @property
    def num_labels(self) -> int:
        return 1 if self.file_labels is None else len(self.file_labels)

    @property
    def is_regression(self) -> bool:
        return self.file_labels is None


_BIN = ("0", "1")
TASKS = {t.hub: t for t in (
    Task("CoLA", "cola", ("sentence",), "", _BIN, ("matthews_correlation",)),
    Task("SST-2", "sst2", ("sentence",), "label", _BIN, ("accuracy",)),
    Task("MRPC", "mrpc", ("#1 String", "#2 String"), "Quality", _BIN, ("accuracy", "f1"),
         hub_text=("sentence1", "sentence2")),
    Task("STS-B", "stsb", ("sentence1", "sentence2"), "score", None, ("pearson", "spearmanr")),
    Task("QQP", "qqp", ("question1", "question2"), "is_duplicate", _BIN, ("accuracy", "f1"), test_id="id"),
    Task("MNLI", "mnli", ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction"),
         ("accuracy",), dev=("dev_matched", "dev_mismatched"), test=("test_matched", "test_mismatched"),
         hub_text=("premise", "hypothesis"), submission=("MNLI-m", "MNLI-mm")),
    Task("QNLI", "qnli", ("question", "sentence"), "label", ("entailment", "not_entailment"), ("accuracy",)),
    Task("RTE", "rte", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), ("accuracy",)),
    Task("WNLI", "wnli", ("sentence1", "sentence2"), "label", _BIN, ("accuracy",)),
)}  # fmt: skip
LONG_TASKS = {t.hub: t for t in (
    Task("contract_nli", "contract_nli", ("input",), "output", ("Contradiction", "Entailment", "Not mentioned"),
         ("accuracy",), dataset="tau/scrolls", dataset_config="contract_nli", fmt="jsonl"),
    Task("imdb", "imdb", ("text",), "label", ("0", "1"), ("accuracy",), dataset="stanfordnlp/imdb", fmt="jsonl"),
    Task("hyperpartisan", "hyperpartisan", ("text", "title"), "hyperpartisan", ("false", "true"), ("accuracy", "f1"),
         dataset="hyperpartisan_news_detection", dataset_config="byarticle", fmt="jsonl"),
)}  # fmt: skip
HUB_LONG_SPLITS = {  # our split kind -> the hub split it comes from (hyperpartisan: its train, cut 80/10/10)
    "contract_nli": {"train": "train", "dev": "validation", "test": "test"},
    "imdb": {"train": "train", "dev": "test", "test": "test"},
    "hyperpartisan": {"train": "train", "dev": "train", "test": "train"},
}
HYPERPARTISAN_CUT = (0.8, 0.9)  # of a permutation of the 645 articles by np.random.default_rng(0)
# CoLA train/dev.tsv: no header; source, label, original label ("*" or empty), sentence.
COLA_COLUMNS = {"label": 1, "sentence": 3, "width": 4}


def task(name: str) -> Task:
    """A task by either spelling, any case: "sst2", "SST-2", "sts-b", "MNLI"."""
    key = name.lower().replace("-", "")
    key = "hyperpartisan" if key == "hyperpartisan_news_detection" else key
    if key not in TASKS and key not in LONG_TASKS:
        raise BigsError(
            f"--task_name: unknown task {name!r}; use one of "
            f"{', '.join(t.name for t in (*TASKS.values(), *LONG_TASKS.values()))} (either spelling, any case)"
        )
    return TASKS.get(key) or LONG_TASKS[key]


# ------------------------------------------------------------------------------------------------
# reading


@dataclass
class Split:
    """One split of one task: texts (one or two lists), labels (ids or scores; None for test)."""

    source: str  # file path or hub name, for messages
    ids: list[str]
    texts: tuple[list[str], ...]
    labels: np.ndarray | None  # (N,) int64 class ids or float32 scores

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int | None) -> Split:
        """The first n examples (--max_*_samples), as HF run_glue's select(range(n))."""
        if n is None or n >= len(self):
            return self
        return Split(
            self.source,
            self.ids[:n],
            tuple(t[:n] for t in self.texts),
            None if self.labels is None else self.labels[:n],
        )


def split_files(t: Task, kind: str) -> tuple[str, ...]:
    """File stems of a split kind: "train" -> ("train",), "dev" -> MNLI's two dev files, ..."""
    return {"train": ("train",), "dev": t.dev, "test": t.test}[kind]


def parse_label(t: Task, value: str, where: str):
    """A label cell -> class id (or float score for STS-B); anything else is an error naming `where`."""
    if t.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not 0.0 <= score <= 5.0:  # NaN fails too
            raise fail(where, t.label, f"STS-B score {value!r} is not a number in [0, 5]")
        return score
    if value not in t.file_labels:
        raise fail(
            where,
            t.label or "label (column 2)",
            f"{value!r} is not a {t.name} label; expected one of {', '.join(t.file_labels)}",
        )
    return t.file_labels.index(value)


def read_tsv(path: Path) -> list[list[str]]:
    """Rows of a GLUE .tsv: split on tabs only, quoting OFF, BOM dropped, '\\r\\n' or '\\n'."""
    if not path.is_file():
        raise fail(path, "file", "missing — expected the GLUE download script's layout DIR/<TASK>/<split>.tsv")
    with open(path, encoding="utf-8-sig", newline="\n") as f:  # newline="\n": a lone \r stays text
        return [line.rstrip("\n").removesuffix("\r").split("\t") for line in f]


def read_file(t: Task, path: Path, labelled: bool) -> Split:
    """One .tsv of task `t`: train/dev files (labelled) or a test file (ids, no labels)."""
    rows = read_tsv(path)
    while rows and rows[-1] == [""]:  # trailing blank line(s)
        rows.pop()
    if t.hub == "cola" and labelled:  # no header: fixed positions
        width, cols = COLA_COLUMNS["width"], {"label": COLA_COLUMNS["label"], "text": [COLA_COLUMNS["sentence"]]}
        first = 1
    else:
        header = rows[0] if rows else []
        need = ([] if labelled else [t.test_id]) + list(t.text) + ([t.label] if labelled else [])
        missing = [c for c in need if c not in header]
        if missing:
            raise fail(
                f"{path}:1",
                "header",
                f"no column {missing[0]!r}; a {t.name} "
                f"{'train/dev' if labelled else 'test'} file has columns {', '.join(need)} "
                f"(found: {', '.join(header) or 'an empty file'})",
            )
        width, first = len(header), 2
        cols = {
            "label": header.index(t.label) if labelled else None,
            "text": [header.index(c) for c in t.text],
            "id": None if labelled else header.index(t.test_id),
        }
    ids, texts, labels = [], tuple([] for _ in cols["text"]), []
    for lineno, row in enumerate(rows[first - 1 :], start=first):
        where = f"{path}:{lineno}"
        if len(row) != width:
            raise fail(
                where,
                "columns",
                f"{len(row)} tab-separated fields, expected {width} (a tab inside a text, or a truncated line?)",
            )
        for out, c in zip(texts, cols["text"]):
            out.append(row[c])
        if labelled:
            labels.append(parse_label(t, row[cols["label"]], where))
            ids.append(str(len(ids)))  # dev predictions are numbered like the test file's index
        else:
            ids.append(row[cols["id"]])
    if not ids:
        raise fail(path, "rows", "no examples (an empty file or a header only)")
    dtype = np.float32 if t.is_regression else np.int64
    return Split(str(path), ids, texts, np.asarray(labels, dtype=dtype) if labelled else None)


def read_split(t: Task, kind: str, data_dir: str | os.PathLike | None) -> list[Split]:
    """All files of a split kind ("train", "dev", "test"): one Split per file (MNLI dev: two).

    data_dir None = the hub dataset nyu-mll/glue (needs the `datasets` package and a network,
    or its local cache).
    """
    if t.fmt == "jsonl":
        return [long_split(t, kind, data_dir)]
    if data_dir is None:
        return [hub_split(t, kind, i) for i in range(len(split_files(t, kind)))]
    d = Path(data_dir) / t.name
    if not d.is_dir():
        raise fail(
            d,
            "--data_dir",
            f"no {t.name} directory; expected the GLUE download script's layout "
            f"{Path(data_dir)}/<TASK>/{{train,dev,test}}.tsv",
        )
    return [read_file(t, d / f"{stem}.tsv", labelled=kind != "test") for stem in split_files(t, kind)]


HUB_SPLITS = {"train": ("train",), "dev": ("validation",), "test": ("test",)}
HUB_MNLI = {"dev": ("validation_matched", "validation_mismatched"), "test": ("test_matched", "test_mismatched")}


def hub_split(t: Task, kind: str, i: int) -> Split:
    """Split i of a kind from the hub dataset nyu-mll/glue (columns and label ids as ours)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "HF_DATASETS_OFFLINE", ""
    ) not in ("", "0")
    how = (
        "pass --data_dir DIR with a local GLUE copy in the download script's layout "
        "(DIR/<TASK>/{train,dev,test}.tsv); see README 'GLUE fine-tuning'"
    )
    try:
        import datasets
    except ImportError:
        raise BigsError(
            f"--data_dir: not given, and loading GLUE from the hub needs the `datasets` package "
            f"(pip install datasets) — or {how}"
        ) from None
    name = (HUB_MNLI if t.hub == "mnli" and kind != "train" else HUB_SPLITS)[kind][i]
    try:
        ds = datasets.load_dataset("nyu-mll/glue", t.hub, split=name)
    except Exception as exc:  # noqa: BLE001 — offline, no cache, network: all the same advice
        why = "offline (HF_HUB_OFFLINE)" if offline else f"{type(exc).__name__}: {first_line(exc)}"
        raise BigsError(f"nyu-mll/glue/{t.hub}: {name}: cannot load GLUE from the hub ({why}) — {how}") from None
    text_cols = t.hub_text or t.text
    texts = tuple(list(ds[c]) for c in text_cols)
    ids = [str(x) for x in ds["idx"]]
    if kind == "test":
        return Split(f"nyu-mll/glue/{t.hub}/{name}", ids, texts, None)
    dtype = np.float32 if t.is_regression else np.int64
    return Split(f"nyu-mll/glue/{t.hub}/{name}", ids, texts, np.asarray(ds["label"], dtype=dtype))


def long_split(t: Task, kind: str, data_dir) -> Split:
    """A long-document task's split: rows of DIR/<task>/<kind>.jsonl (hyperpartisan: cut from train.jsonl),
    or of its hub dataset; texts, labels as LONG_TASKS says (module docstring)."""
    stem = HUB_LONG_SPLITS[t.hub][kind].replace("validation", "dev")  # local files: the hub's splits
    if data_dir is not None:
        path = Path(data_dir) / t.name / f"{stem}.jsonl"
        rows, where = read_jsonl(path, t), str(path)
    else:
        rows, where = hub_rows(t, HUB_LONG_SPLITS[t.hub][kind]), t.dataset
    if t.hub == "hyperpartisan":  # the hub's only split, cut by a fixed permutation
        order = np.random.default_rng(0).permutation(len(rows))
        a, b = (int(f * len(rows)) for f in HYPERPARTISAN_CUT)
        rows = [rows[i] for i in {"train": order[:a], "dev": order[a:b], "test": order[b:]}[kind]]
    texts = tuple([] for _ in t.text) if t.hub != "contract_nli" else ([], [])
    labels = []
    for i, r in enumerate(rows):
        if t.hub == "contract_nli":  # "<hypothesis>\n\n<contract>": the pair
            hypothesis, _, contract = str(r["input"]).partition("\n\n")
            texts[0].append(hypothesis.strip())
            texts[1].append(contract.strip())
        else:
            for out, c in zip(texts, t.text):
                out.append(str(r.get(c) or ""))
        value = r.get(t.label)
        if value is not None:
            labels.append(
                parse_label(t, str(value).lower() if isinstance(value, bool) else str(value), f"{where}:{i + 1}")
            )
    ids = [str(r.get("id", i)) for i, r in enumerate(rows)]
    return Split(where, ids, texts, np.asarray(labels, dtype=np.int64) if len(labels) == len(rows) else None)


def read_jsonl(path: Path, t: Task) -> list[dict]:
    """Rows of a long-document task's local file; a wrong layout is one error naming file and line."""
    if not path.is_file():
        raise fail(
            path,
            "file",
            f"missing — {t.name} offline reads DIR/{t.name}/{{train,dev,test}}.jsonl (hyperpartisan: "
            "train.jsonl only), one JSON object per line with the hub's columns; see bigs/glue.py",
        )
    rows = []
    need = {"contract_nli": ("input",)}.get(t.hub, t.text[:1])
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise fail(f"{path}:{lineno}", "json", f"not a JSON object ({exc.msg})") from None
        missing = [c for c in need if not isinstance(row, dict) or c not in row]
        if missing:
            raise fail(f"{path}:{lineno}", missing[0], f"missing; a {t.name} row has {', '.join((*need, t.label))}")
        rows.append(row)
    if not rows:
        raise fail(path, "rows", "no examples")
    return rows


def hub_rows(t: Task, split: str) -> list[dict]:
    """A long-document task's split from its hub dataset (online, or the datasets cache)."""
    try:
        import datasets

        ds = datasets.load_dataset(t.dataset, t.dataset_config, split=split)
    except Exception as exc:  # noqa: BLE001 — offline, no cache, no package: the same advice
        first = first_line(exc)
        raise BigsError(
            f"{t.dataset}: {split}: cannot load it from the hub ({first}) — offline, pass --data_dir DIR with "
            f"DIR/{t.name}/{{train,dev,test}}.jsonl (bigs/glue.py)"
        ) from None
    return [dict(r) for r in ds]


# ------------------------------------------------------------------------------------------------
# metrics (as HF `evaluate`'s glue metric, computed here: no downloads)


def matthews(pred: np.ndarray, ref: np.ndarray) -> float:
    """Matthews correlation, multi-class form (= (tp tn - fp fn) / sqrt(...) for two classes); 0 if undefined."""
    classes = np.union1d(pred, ref)
    C = (pred[:, None] == classes)[:, :, None] & (ref[:, None] == classes)[:, None, :]  # (N K K)
    C = C.sum(0).astype(np.float64)  # (K K) confusion: predicted x true
    n, correct = C.sum(), np.trace(C)
    p, t = C.sum(1), C.sum(0)  # (K,) predicted / true counts
    den = math.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float((correct * n - p @ t) / den) if den > 0 else 0.0


def f1_positive(pred: np.ndarray, ref: np.ndarray) -> float:
    """F1 of class 1 (MRPC "equivalent", QQP "duplicate"): 2 tp / (2 tp + fp + fn)."""
    tp = np.sum((pred == 1) & (ref == 1))
    den = 2 * tp + np.sum((pred == 1) & (ref != 1)) + np.sum((pred != 1) & (ref == 1))
    return float(2 * tp / den) if den > 0 else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x @ x) * (y @ y)))
    return float(x @ y / den) if den > 0 else 0.0


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank (scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    r = np.empty(len(x), dtype=np.float64)
    start = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first index of each run of equal values
    end = np.r_[start[1:], len(x)]
    r[order] = np.repeat((start + end + 1) / 2.0, end - start)  # mean of 1-based ranks start+1..end
    return r


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(ranks(x.astype(np.float64)), ranks(y.astype(np.float64)))


def compute_metrics(t: Task, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """HF run_glue's metrics for task `t`; `predictions` are class ids (or scores for STS-B).
    Tasks with two metrics also get `combined_score`, their mean (as run_glue)."""
    p, y = np.asarray(predictions), np.asarray(labels)
    fns = {
        "accuracy": lambda: float(np.mean(p == y)),
        "f1": lambda: f1_positive(p, y),
        "matthews_correlation": lambda: matthews(p, y),
        "pearson": lambda: pearson(p.astype(np.float64), y.astype(np.float64)),
        "spearmanr": lambda: spearman(p, y),
    }
    out = {m: fns[m]() for m in t.metrics}
    if len(out) > 1:
        out["combined_score"] = float(np.mean(list(out.values())))
    return out


# ------------------------------------------------------------------------------------------------
# the GLUE average
#
# One score per task, then the plain mean over the tasks present (WNLI never counts: its dev set
# is adversarial and BERT-style tables leave it out). Per task: CoLA Matthews; SST-2, QNLI, RTE
# accuracy; MRPC and QQP mean(accuracy, F1); STS-B mean(Pearson, Spearman) — i.e. run_glue's
# combined_score; MNLI mean(matched, mismatched accuracy). Scores in % (x100).
# This is the only place that defines it (bigs/glue_table.py and the README cite it).
AVERAGE_EXCLUDES = ("wnli",)


def task_score(t: Task, results: dict) -> float | None:
    """The one number task `t` contributes to the GLUE average, from an eval_results.json dict."""
    if t.hub == "mnli":
        m, mm = results.get("eval_accuracy"), results.get("eval_accuracy_mm")
        return None if m is None or mm is None else 100 * (m + mm) / 2
    key = "eval_combined_score" if len(t.metrics) > 1 else f"eval_{t.metrics[0]}"
    return None if results.get(key) is None else 100 * results[key]
