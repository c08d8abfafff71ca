"""Training curves, run comparison and a summary table from `metrics.jsonl` (docs/DESIGN.md).

    python -m bigs.plots --runs results/pretrain/bigs results/pretrain/bert -o results/plots \
        [--names BiGS BERT] [--eval results/evaluate/bigs.json ...] [--smoothing 0.9 (default: auto)]

Writes into OUT_DIR: train_loss.png, learning_rate.png, eval_vs_step.png, eval_vs_tokens.png,
throughput.png, plot_data.csv (every plotted point, long format: run, series, x_name, x, y),
summary.csv and summary.md (one row per run; a second table per `--eval` JSON).
Several runs are overlaid, one colour per run, legend = run name (the dir name by default).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes / CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, PercentFormatter  # noqa: E402

from bigs.errors import atomic_path, cli_main, fail  # noqa: E402

TRAIN_FIELDS = ("loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "mfu")
EVAL_FIELDS = ("eval_loss", "eval_accuracy", "eval_perplexity", "eval_tokens")
COMMON_FIELDS = ("step", "tokens_seen", "wall_time")


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def _number(path, lineno, rec, key):
    """A numeric field or None (missing / null, e.g. mfu on a CPU without a known peak)."""
    v = rec.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise fail(f"{path}:{lineno}", key, f"expected a number, got {v!r} — fix or delete the line")
    return float(v)


def read_metrics(run: str | Path) -> tuple[list[dict], list[dict]]:
    """Parse `<run>/metrics.jsonl` (or a metrics file given directly) into (train, eval) rows.

    Rows are sorted by step; when a step appears twice (a run resumed from a checkpoint re-logs
    the steps after it) the later line wins. A last line without its newline is a write cut off
    by a kill: skipped with a warning. Any other unreadable line is an error naming the line.
    """
    run = Path(run)
    path = run if run.is_file() else run / "metrics.jsonl"
    if not run.exists():
        raise fail(run, "--runs", "no such run directory")
    if not path.is_file():
        raise fail(path, "metrics.jsonl", "missing — is this a pretraining output dir (results/pretrain/<run>)?")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # last piece after the final "\n": a cut-off append
                print(f"warning: {path}:{lineno}: incomplete last line skipped", file=sys.stderr)
                continue
            raise fail(f"{path}:{lineno}", "json", f"not valid JSON ({exc.msg}) — fix or delete the line") from None
        if not isinstance(rec, dict):
            raise fail(f"{path}:{lineno}", "json", "expected one JSON object per line")
        kind = rec.get("kind")
        if kind not in ("train", "eval"):
            continue  # other kinds (if the trainer adds some) are not plotted
        if _number(path, lineno, rec, "step") is None:
            raise fail(f"{path}:{lineno}", "step", f"missing in a {kind!r} line")
        fields = COMMON_FIELDS + (TRAIN_FIELDS if kind == "train" else EVAL_FIELDS)
        row = {k: _number(path, lineno, rec, k) for k in fields}
        row["step"] = int(row["step"])
        (train if kind == "train" else evals)[row["step"]] = row
    if not train and not evals:
        raise fail(path, "metrics.jsonl", "no 'train' or 'eval' lines — the run has not logged yet")
    return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]


def ema(values: list[float | None], smoothing: float) -> list[float | None]:
    """Bias-corrected exponential moving average (as TensorBoard): s_t = a·s_{t-1} + (1-a)·x_t,
    divided by 1 - a^t so the first points are not pulled towards 0. None/NaN points are skipped."""
    out, s, n = [], 0.0, 0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(None)
            continue
        n += 1
        s = smoothing * s + (1.0 - smoothing) * v
        out.append(s / (1.0 - smoothing**n))
    return out


def ema_label(smoothing: float | None) -> str:
    return "auto" if smoothing is None else f"{smoothing:g}"


def auto_smoothing(n_points: int) -> float:
    """EMA factor whose lag, a/(1-a) points, is 2.5 % of the curve: the smoothed line follows a
    40-point run (a = 0.5) as closely as a 4000-point one (a = 0.99) instead of trailing it."""
    r = 0.025 * n_points
    return min(r / (1.0 + r), 0.99)


# ---------------------------------------------------------------------------------------------
# data for the plots: one long table, so tests can check exactly what was drawn
# ---------------------------------------------------------------------------------------------
def plot_series(name: str, train: list[dict], evals: list[dict], smoothing: float | None) -> list[tuple]:
    """(run, series, x_name, x, y) for every point that is plotted; None y values are dropped."""
    rows = []

    def add(series, x_name, xs, ys):
        rows.extend((name, series, x_name, x, y) for x, y in zip(xs, ys) if x is not None and y is not None)

    steps = [r["step"] for r in train]
    smoothing = auto_smoothing(len(train)) if smoothing is None else smoothing
    add("train_loss", "step", steps, [r["loss"] for r in train])
    add("train_loss_ema", "step", steps, ema([r["loss"] for r in train], smoothing))
    add("lr", "step", steps, [r["lr"] for r in train])
    add("tokens_per_s", "step", steps, [r["tokens_per_s"] for r in train])
    add("tokens_per_s_ema", "step", steps, ema([r["tokens_per_s"] for r in train], smoothing))
    add("mfu", "step", steps, [r["mfu"] for r in train])
    for key in ("eval_loss", "eval_accuracy", "eval_perplexity"):
        add(key, "step", [r["step"] for r in evals], [r[key] for r in evals])
        add(key, "tokens_seen", [r["tokens_seen"] for r in evals], [r[key] for r in evals])
    return rows


def sequence_length(run: Path) -> int | None:
    """The run's length: max_position_embeddings of the config.json beside its metrics (final/, the run dir's final/)."""
    d = run.parent if run.is_file() else run
    for cfg in (d / "config.json", d / "final" / "config.json"):
        if cfg.is_file():
            return json.loads(cfg.read_text()).get("max_position_embeddings")
    return None


def summarize(name: str, run: Path, train: list[dict], evals: list[dict]) -> dict:
    """One summary row: last logged values, totals, mean throughput over the logged steps."""
    last_t = train[-1] if train else {}
    last_e = evals[-1] if evals else {}
    tps = [r["tokens_per_s"] for r in train if r["tokens_per_s"] is not None]
    seen = [r["tokens_seen"] for r in train + evals if r["tokens_seen"] is not None]
    wall = [r["wall_time"] for r in train + evals if r["wall_time"] is not None]
    return {
        "run": name,
        "path": str(run),
        "seq_len": sequence_length(run),
        "final_step": max([r["step"] for r in train + evals]),
        "final_train_loss": last_t.get("loss"),
        "eval_step": last_e.get("step"),
        "eval_loss": last_e.get("eval_loss"),
        "eval_accuracy": last_e.get("eval_accuracy"),
        "eval_perplexity": last_e.get("eval_perplexity"),
        "tokens_seen": max(seen) if seen else None,
        "wall_time_s": max(wall) if wall else None,
        "mean_tokens_per_s": sum(tps) / len(tps) if tps else None,
    }


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
def _pts(rows, run, series, x_name="step"):
    xs = [r[3] for r in rows if r[0] == run and r[1] == series and r[2] == x_name]
    ys = [r[4] for r in rows if r[0] == run and r[1] == series and r[2] == x_name]
    return xs, ys


def _finish(fig, axes, path: Path):
    """Legend once per figure (below the plots, so it never covers a curve), then save atomically."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        # as many columns as fit the figure width (≈0.09 in per character + the line sample)
        entry_in = 0.09 * max(len(lab) for lab in labels) + 0.7
        ncol = max(1, min(len(labels), int(fig.get_figwidth() // entry_in)))
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)
    for ax in axes:
        if not any(len(line.get_xdata()) for line in ax.get_lines()):  # e.g. no eval yet, mfu null
            ax.tick_params(which="both", left=False, bottom=False, labelleft=False, labelbottom=False)
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        else:
            ax.grid(True, alpha=0.3)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def draw(rows: list[tuple], names: list[str], out_dir: Path, smoothing: float | None) -> list[Path]:
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}
    # a line style per run too, so identical curves (e.g. the same lr schedule) stay visible
    styles = {n: ("-", "--", ":", "-.")[i % 4] for i, n in enumerate(names)}
    tokens_fmt = EngFormatter(sep="")  # 1.2M, 3G tokens
    written = []

    # training loss: raw (faint) + smoothed (solid), one colour per run
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for n in names:
        ax.plot(*_pts(rows, n, "train_loss"), color=colors[n], alpha=0.25, lw=0.8)
        ax.plot(*_pts(rows, n, "train_loss_ema"), color=colors[n], ls=styles[n], lw=1.8, label=n)
    ax.set(
        xlabel="optimizer step",
        ylabel="masked-LM loss (nats / token)",
        title=f"Training loss (faint: raw, line: EMA {ema_label(smoothing)})",
    )
    _finish(fig, [ax], out_dir / "train_loss.png")
    written.append(out_dir / "train_loss.png")

    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for n in names:
        ax.plot(*_pts(rows, n, "lr"), color=colors[n], ls=styles[n], lw=1.8, label=n)
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="Learning-rate schedule")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _finish(fig, [ax], out_dir / "learning_rate.png")
    written.append(out_dir / "learning_rate.png")

    # evaluation on the test shards, against steps and against tokens seen (fair across batch sizes)
    panels = (
        ("eval_loss", "loss (nats / token)", "linear"),
        ("eval_accuracy", "accuracy (% of masked tokens)", "linear"),
        ("eval_perplexity", "perplexity (log scale)", "log"),
    )
    for x_name, xlabel, fname in (
        ("step", "optimizer step", "eval_vs_step.png"),
        ("tokens_seen", "tokens seen", "eval_vs_tokens.png"),
    ):
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained")
        for ax, (key, ylabel, scale) in zip(axes, panels):
            for n in names:
                xs, ys = _pts(rows, n, key, x_name)
                ax.plot(xs, ys, marker="o", ms=3, color=colors[n], ls=styles[n], label=n)
            ax.set(xlabel=xlabel, ylabel=ylabel, yscale=scale, title=key.replace("eval_", "test ").replace("_", " "))
            if key == "eval_accuracy":
                ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
            if x_name == "tokens_seen":
                ax.xaxis.set_major_formatter(tokens_fmt)
        fig.suptitle(f"Masked-LM evaluation on the test shards vs {xlabel}")
        _finish(fig, list(axes), out_dir / fname)
        written.append(out_dir / fname)

    # speed: tokens/s and model-FLOPs utilisation
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for n in names:
        ax1.plot(*_pts(rows, n, "tokens_per_s"), color=colors[n], alpha=0.25, lw=0.8)
        ax1.plot(*_pts(rows, n, "tokens_per_s_ema"), color=colors[n], ls=styles[n], lw=1.8, label=n)
        ax2.plot(*_pts(rows, n, "mfu"), color=colors[n], ls=styles[n], label=n)
    ax1.set(
        xlabel="optimizer step",
        ylabel="throughput (tokens / s)",
        title=f"Training throughput (faint: raw, line: EMA {ema_label(smoothing)})",
    )
    ax1.yaxis.set_major_formatter(tokens_fmt)
    ax2.set(xlabel="optimizer step", ylabel="MFU (% of peak FLOP/s)", title="Model FLOPs utilisation")
    ax2.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    _finish(fig, [ax1, ax2], out_dir / "throughput.png")
    written.append(out_dir / "throughput.png")
    return written


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def _markdown(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in rows:
                w.writerow(
                    [
                        "" if v is None else v
                        for v in (r if isinstance(r, (list, tuple)) else [r.get(h) for h in header])
                    ]
                )


def read_eval(path: str | Path) -> dict:
    """A `bigs.evaluate` JSON → one table row."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        m = d["metrics"]
    except FileNotFoundError:
        raise fail(path, "--eval", "no such file — run `python -m bigs.evaluate` first") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise fail(path, "metrics", "not a bigs.evaluate JSON (needs a 'metrics' object)") from None
    return {
        "evaluation": path.stem,
        "model": d.get("model"),
        "step": d.get("step"),
        **{k: m.get(k) for k in ("eval_loss", "eval_accuracy", "eval_perplexity", "eval_tokens")},
    }


def run_name(run: Path) -> str:
    """Default legend name: the run dir (results/pretrain/<run>), also for <run>/final/metrics.jsonl."""
    d = run.parent if run.is_file() else run
    return d.parent.name if d.name == "final" else d.name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigs.plots", description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="pretraining output dirs with metrics.jsonl")
    p.add_argument("-o", "--out_dir", required=True)
    p.add_argument("--names", nargs="+", help="legend names, one per run (default: dir names)")
    p.add_argument("--eval", nargs="*", default=[], help="bigs.evaluate JSON files for the summary")
    p.add_argument(
        "--smoothing",
        type=float,
        default=None,
        help="EMA factor for the loss and throughput curves, in [0, 1) (default: from the number of points)",
    )
    args = p.parse_args(argv)

    if args.smoothing is not None and not 0.0 <= args.smoothing < 1.0:
        raise fail("command line", "--smoothing", f"{args.smoothing} not in [0, 1)")
    runs = [Path(r) for r in args.runs]
    names = args.names or [run_name(r) for r in runs]
    if len(names) != len(runs):
        raise fail("command line", "--names", f"{len(names)} names for {len(runs)} runs — give one per run")
    if len(set(names)) != len(names):
        raise fail("command line", "--names", f"duplicate run names {names} — pass distinct --names")

    out_dir = Path(args.out_dir)
    rows, summary = [], []
    for name, run in zip(names, runs):
        train, evals = read_metrics(run)
        rows += plot_series(name, train, evals, args.smoothing)
        summary.append(summarize(name, run, train, evals))
    eval_rows = [read_eval(e) for e in args.eval]

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "plot_data.csv", ["run", "series", "x_name", "x", "y"], rows)
    cols = list(summary[0])
    _write_csv(out_dir / "summary.csv", cols, summary)
    md = "## Pretraining runs\n\n" + _markdown(summary, [c for c in cols if c != "path"])
    if eval_rows:
        ecols = list(eval_rows[0])
        _write_csv(out_dir / "eval_summary.csv", ecols, eval_rows)
        md += "\n## Evaluations (bigs.evaluate)\n\n" + _markdown(eval_rows, ecols)
    with atomic_path(out_dir / "summary.md", suffix=".md") as tmp:
        tmp.write_text(md)
    for png in draw(rows, names, out_dir, args.smoothing):
        print(f"wrote {png}")
    print(f"wrote {out_dir / 'summary.md'}")
    return 0


if __name__ == "__main__":
    cli_main(main)
