"""GLUE tables and the comparison plot, from the eval_results.json of bigs.finetune jobs.

    python -m bigs.glue_table run --name bigs-tiny -o results/glue/bigs-tiny \
        --results results/finetune/bigs-tiny/<task>/seed<k>/eval_results.json ...
    python -m bigs.glue_table summary --tables results/glue/bigs-tiny.csv results/glue/bert-tiny.csv \
        -o results/glue/summary --plot results/plots/glue.png
    python -m bigs.glue_table budget --tables results/glue/bigs-at-0.25.csv results/glue/bigs.csv \
        --models results/pretrain/bigs/marker-0.25 results/pretrain/bigs/final \
        -o results/glue/budget --plot results/plots/glue_budget.png

`run` writes <out>.csv (long format: run, task, metric, n, median, min, max, values) and <out>.md:
per task and metric the median over seeds with min–max, plus the task's `score` (what it adds
to the GLUE average, bigs/glue.py) and a row `avg`: per seed, the mean of that seed's task
scores; then median (min–max) over seeds like any task. `summary` puts the runs side by side
(one column per run: score median (min–max)) and draws one bar per run and task, error bars =
seed min–max. The task and seed of a result come from its path: .../<task>/seed<k>/eval_results.json.
`budget` is GLUE along a time budget: the GLUE average of each model a run kept (bigs.pretrain
--finetune_time_markers, and its final model) against the training hours in its trainer_state.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from pathlib import Path

from bigs.errors import atomic_path, cli_main, fail
from bigs.glue import AVERAGE_EXCLUDES, TASKS, task, task_score

FIELDS = ["run", "task", "metric", "n", "median", "min", "max", "values"]


def read_results(paths: list[str]) -> dict[str, dict[int, dict]]:
    """{task hub name: {seed: eval_results dict}} from .../<task>/seed<k>/eval_results.json paths."""
    out: dict[str, dict[int, dict]] = {}
    for p in map(Path, paths):
        m = re.fullmatch(r"seed(\d+)", p.parent.name)
        if not m or not p.is_file():
            raise fail(p, "--results", "expected an existing .../<task>/seed<k>/eval_results.json")
        try:
            res = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise fail(p, "json", f"not valid JSON ({exc.msg})") from None
        out.setdefault(task(p.parent.parent.name).hub, {})[int(m.group(1))] = res
    return out


def spread(values: list[float]) -> dict:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": ";".join(f"{v:.4g}" for v in values),
    }


def run_rows(name: str, results: dict[str, dict[int, dict]]) -> list[dict]:
    """Rows of one run's table: every metric of every task (in %), each task's score, the average."""
    rows, per_seed = [], {}
    for hub in (h for h in TASKS if h in results):  # GLUE order
        t, by_seed = TASKS[hub], results[hub]
        metrics = [f"eval_{m}" for m in t.metrics] + (["eval_accuracy_mm"] if hub == "mnli" else [])
        for key in metrics:
            vals = [100 * r[key] for r in by_seed.values() if r.get(key) is not None]
            if vals:
                rows.append({"run": name, "task": t.name, "metric": key.removeprefix("eval_"), **spread(vals)})
        scores = {s: task_score(t, r) for s, r in by_seed.items()}
        scores = {s: v for s, v in scores.items() if v is not None}
        if scores:
            rows.append({"run": name, "task": t.name, "metric": "score", **spread(list(scores.values()))})
        if hub not in AVERAGE_EXCLUDES:
            for s, v in scores.items():
                per_seed.setdefault(s, []).append(v)
    n_tasks = max((len(v) for v in per_seed.values()), default=0)
    complete = [statistics.fmean(v) for v in per_seed.values() if len(v) == n_tasks]  # seeds that ran every task
    if complete:
        rows.append({"run": name, "task": "avg", "metric": f"score ({n_tasks} tasks)", **spread(complete)})
    return rows


def cell(r: dict) -> str:
    if r["n"] == 1:
        return f"{r['median']:.1f}"
    return f"{r['median']:.1f} ({r['min']:.1f}–{r['max']:.1f})"


def write_csv(path: Path, rows: list[dict], fields=FIELDS) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)


def read_csv(path: str, flag: str = "--tables") -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise fail(p, flag, "no such file — run `snakemake finetune` (or python -m bigs.glue_table run) first")
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update(n=int(r["n"]), median=float(r["median"]), min=float(r["min"]), max=float(r["max"]))
    return rows


def run_markdown(name: str, rows: list[dict]) -> str:
    lines = [
        f"# GLUE dev: {name}",
        "",
        "median over seeds (min–max), in %; `score` is what a task adds to the GLUE average (bigs/glue.py)",
        "",
        "| task | metric | seeds | value |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['task']} | {r['metric']} | {r['n']} | {cell(r)} |" for r in rows]
    return "\n".join(lines) + "\n"


def summary_markdown(rows: list[dict], runs: list[str]) -> str:
    scores = [r for r in rows if r["metric"].startswith("score")]
    tasks = list(dict.fromkeys(r["task"] for r in scores))
    by = {(r["run"], r["task"]): r for r in scores}
    lines = [
        "# GLUE dev: runs side by side",
        "",
        "task score, median over seeds (min–max), in %; avg = GLUE average without WNLI (bigs/glue.py)",
        "",
        "| task | " + " | ".join(runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(cell(by[(r, t)]) if (r, t) in by else "–" for r in runs) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], runs: list[str], path: Path) -> None:
    """One group of bars per task (and avg), one bar per run; error bars = seed min–max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [r for r in rows if r["metric"].startswith("score")]
    tasks = list(dict.fromkeys(r["task"] for r in scores))
    by = {(r["run"], r["task"]): r for r in scores}
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(tasks) * max(1, len(runs)) ** 0.5 + 2), 4))
    for i, run in enumerate(runs):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j, t in enumerate(tasks) if (run, t) in by]
        rs = [by[(run, t)] for t in tasks if (run, t) in by]
        med = [r["median"] for r in rs]
        err = [[m - r["min"] for m, r in zip(med, rs)], [r["max"] - m for m, r in zip(med, rs)]]
        ax.bar(xs, med, width, yerr=err, capsize=3, label=run)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("dev score (%)")
    ax.set_title("GLUE dev: median over seeds, bars = min–max")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


BUDGET_FIELDS = ["run", "variant", "hours", "step", "tokens_seen", "tasks", "n", "median", "min", "max"]


def budget_rows(tables: list[str], models: list[str]) -> list[dict]:
    """One row per (table, model dir): the GLUE average of that fine-tuned variant at its model's hours."""
    if len(tables) != len(models):
        raise fail("command line", "--models", f"{len(models)} model dirs for {len(tables)} tables: one per table")
    rows = []
    for table, model in zip(tables, models):
        state_path = Path(model) / "trainer_state.json"
        if not state_path.is_file():
            raise fail(state_path, "--models", "missing — a model dir that bigs.pretrain wrote (final/, marker-<f>/)")
        state = json.loads(state_path.read_text())
        avg = [r for r in read_csv(table) if r["task"] == "avg"]
        if not avg:
            raise fail(table, "avg", "no GLUE average (a seed ran only some tasks?)")
        a = avg[0]
        rows.append(
            {
                "run": Path(model).parent.name,
                "variant": a["run"],
                "hours": state.get("elapsed_s", 0.0) / 3600,
                "step": state.get("step"),
                "tokens_seen": state.get("tokens_seen"),
                "tasks": a["metric"].removeprefix("score (").removesuffix(")"),
                **{k: a[k] for k in ("n", "median", "min", "max")},
            }
        )
    return sorted(rows, key=lambda r: (r["run"], r["hours"]))


def budget_markdown(rows: list[dict]) -> str:
    lines = [
        "# GLUE along the time budget",
        "",
        "GLUE average (without WNLI) of each model kept along a run's budget, median over seeds (min–max), in %",
        "",
        "| run | model | hours | step | GLUE avg |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['run']} | {r['variant']} | {r['hours']:.3g} | {r['step']} | {cell(r)} |" for r in rows]
    return "\n".join(lines) + "\n"


def budget_plot(rows: list[dict], path: Path) -> None:
    """GLUE average against training hours, one line per run, error bars = seed min–max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in dict.fromkeys(r["run"] for r in rows):
        rs = [r for r in rows if r["run"] == run]
        med = [r["median"] for r in rs]
        err = [[m - r["min"] for m, r in zip(med, rs)], [r["max"] - m for m, r in zip(med, rs)]]
        ax.errorbar([r["hours"] for r in rs], med, yerr=err, marker="o", capsize=3, label=run)
    ax.set_xlabel("pretraining wall time (hours)")
    ax.set_ylabel("GLUE average, dev (%)")
    ax.set_title("GLUE along the time budget: median over seeds, bars = min–max")
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigs.glue_table", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one run's table from its eval_results.json files")
    r.add_argument("--name", required=True)
    r.add_argument("--results", nargs="+", required=True)
    r.add_argument("-o", "--output", required=True, help="writes OUTPUT.csv and OUTPUT.md")
    s = sub.add_parser("summary", help="runs side by side, and the plot")
    s.add_argument("--tables", nargs="+", required=True, help="per-run CSVs of `run`")
    s.add_argument("-o", "--output", required=True, help="writes OUTPUT.csv and OUTPUT.md")
    s.add_argument("--plot", default=None, help="PNG path")
    b = sub.add_parser("budget", help="GLUE average against the training hours of each model kept along a budget")
    b.add_argument("--tables", nargs="+", required=True, help="per-variant CSVs of `run`")
    b.add_argument("--models", nargs="+", required=True, help="the model dir of each table (its trainer_state.json)")
    b.add_argument("-o", "--output", required=True, help="writes OUTPUT.csv and OUTPUT.md")
    b.add_argument("--plot", default=None, help="PNG path")
    args = p.parse_args(argv)
    out = Path(args.output)
    if args.cmd == "budget":
        rows = budget_rows(args.tables, args.models)
        if args.plot:
            budget_plot(rows, Path(args.plot))
        write_csv(out.with_name(out.name + ".csv"), rows, BUDGET_FIELDS)
        with atomic_path(out.with_name(out.name + ".md")) as tmp:
            tmp.write_text(budget_markdown(rows))
        print(budget_markdown(rows))
        return 0
    if args.cmd == "run":
        rows = run_rows(args.name, read_results(args.results))
        md = run_markdown(args.name, rows)
    else:
        rows = [row for path in args.tables for row in read_csv(path)]
        runs = list(dict.fromkeys(r["run"] for r in rows))
        md = summary_markdown(rows, runs)
        if args.plot:
            plot(rows, runs, Path(args.plot))
    write_csv(out.with_name(out.name + ".csv"), rows)
    with atomic_path(out.with_name(out.name + ".md")) as tmp:
        tmp.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    cli_main(main)
