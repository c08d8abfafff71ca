"""GLUE: the nine tasks, their file readers, their metrics and the GLUE average (REFERENCE.md §5).

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
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bigs.errors import BigsError, fail


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
# CoLA train/dev.tsv: no header; source, label, original label ("*" or empty), sentence.
COLA_COLUMNS = {"label": 1, "sentence": 3, "width": 4}


def task(name: str) -> Task:
    """A task by either spelling, any case: "sst2", "SST-2", "sts-b", "MNLI"."""
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise BigsError(
            f"--task_name: unknown task {name!r}; use one of "
            f"{', '.join(t.name for t in TASKS.values())} (either spelling, any case)"
        )
    return TASKS[key]


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
        why = "offline (HF_HUB_OFFLINE)" if offline else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        raise BigsError(f"nyu-mll/glue/{t.hub}: {name}: cannot load GLUE from the hub ({why}) — {how}") from None
    text_cols = t.hub_text or t.text
    texts = tuple(list(ds[c]) for c in text_cols)
    ids = [str(x) for x in ds["idx"]]
    if kind == "test":
        return Split(f"nyu-mll/glue/{t.hub}/{name}", ids, texts, None)
    dtype = np.float32 if t.is_regression else np.int64
    return Split(f"nyu-mll/glue/{t.hub}/{name}", ids, texts, np.asarray(ds["label"], dtype=dtype))


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
