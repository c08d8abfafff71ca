"""Data stages at corpus size: process -> shard -> samples through Snakemake with
per-shard jobs, per stage MB/s, tokens/s per core and peak RSS per job, and the wall time
extrapolated to the paper-size corpus on one 32-core node and on N SLURM nodes.

    nice python benchmarks/bench_scale.py --mb 100 --work /tmp/bench-scale    # ~10-15 min on 2 cores
    nice python benchmarks/bench_scale.py --mb 1000 --work /tmp/bench-scale   # the 1 GB figure

The corpus: no large corpus is reachable offline, so the bundled Wikipedia sample
(data/enwiki-sample-106-articles.xml.bz2, 106 real articles) is extracted once (bigs.data.process
--type wiki) and its articles are repeated and reshuffled (seeded) into --mb MB of plain text,
articles separated by blank lines, in 64 MB files (`corpus.raw.type: text`). Repetition keeps the
statistics of real text (sentence lengths, WordPiece rate); it cannot show costs that depend on
vocabulary growth or duplicates. Text shards are sized --shard_mb (the paper's 256 train shards of
≈25 GB are ≈90 MB each): per-job memory must then stay flat as the corpus grows.

Every job's python loads a monitor (sitecustomize.py in the workflow copy) that samples the RSS of
the job's whole process tree (workers included) every 0.1 s and records wall, CPU (user+sys of
the job and its workers) and peak RSS in WF/jobs.jsonl; the report is WORK/report-<mb>MB.{json,md}.
Extrapolation: CPU-seconds per MB of each stage × the target size, divided by the cores the stage
can use (process and shard are one multi-process job: one node; tokenize/mask are per-shard jobs:
every node), mask × dup_factor 10 (the paper's) / the --dup_factor measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "enwiki-sample-106-articles.xml.bz2"
WORKFLOW_FILES = ["Snakefile", "rules", "schemas", "scripts", "envs", "presets", "profiles", "config.yaml", "data"]
# Paper-size corpus (academic-budget-bert's recipe: English Wikipedia + BookCorpus). Its docs give no
# sizes; BookCorpus plain_text = 4,853,859,824 bytes (HF dataset card); English Wikipedia extracted
# text ≈ 20 GB (wikiextractor output of a 2022 dump; an estimate, not from academic-budget-bert).
TARGETS_MB = {"wikipedia": 20_000, "bookcorpus": 4_854}
# stage -> the words of a job's command line that mark it (rules process_corpus, shard_corpus,
# tokenize_shard, mask_shard)
STAGES = {
    "process": ("process.py",),
    "shard": ("shard.py",),
    "tokenize": ("samples.py", "tokenize"),
    "mask": ("samples.py", "mask"),
}

# Written as sitecustomize.py into the workflow copy: every job's `python -m bigs.data.*` finds it
# there (the rules' job prefix puts the workflow dir first on PYTHONPATH) and records itself.
MONITOR = '''"""bench_scale.py job monitor: wall, CPU (self + children) and peak RSS of the process tree."""
import atexit, json, os, resource, sys, threading, time
try:
    import psutil
except ImportError:
    psutil = None
_t0, _peak = time.time(), [0]


def _sample():
    me = psutil.Process()
    while True:
        try:
            _peak[0] = max(_peak[0], sum(q.memory_info().rss for q in [me] + me.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.1)


def _record():
    if "bigs" + os.sep + "data" not in (sys.argv[0] if sys.argv else ""):
        return
    ru_self, ru_kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    rec = {"argv": [os.path.basename(sys.argv[0])] + sys.argv[1:], "start": _t0, "wall_s": time.time() - _t0,
           "cpu_s": ru_self.ru_utime + ru_self.ru_stime + ru_kids.ru_utime + ru_kids.ru_stime,
           "peak_tree_rss_mb": _peak[0] / 2**20, "max_proc_rss_mb": max(ru_self.ru_maxrss, ru_kids.ru_maxrss) / 1024}
    with open(@LOG@, "a") as f:
        f.write(json.dumps(rec) + "\\n")


if psutil is not None:
    threading.Thread(target=_sample, daemon=True).start()
atexit.register(_record)
'''


def build_corpus(work: Path, mb: int, seed: int = 0) -> Path:
    """WORK/raw-<mb>MB/part-*.txt: the sample's articles repeated and reshuffled to `mb` MB."""
    raw = work / f"raw-{mb}MB"
    if (raw / "DONE").exists():
        return raw
    articles_txt = work / "sample-articles" / "wiki_one_article_per_line.txt"
    if not articles_txt.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bigs.data.process",
                "-f",
                str(SAMPLE),
                "-o",
                str(articles_txt.parent),
                "--type",
                "wiki",
            ],
            check=True,
            cwd=REPO,
        )
    articles = [ln for ln in articles_txt.read_text().splitlines() if ln.strip()]
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    rng, target, written, part = random.Random(seed), mb * 10**6, 0, 0
    f = None
    while written < target:
        order = articles[:]
        rng.shuffle(order)
        for a in order:
            if f is None or f.tell() > 64 * 10**6:
                if f:
                    f.close()
                f = open(raw / f"part-{part:04d}.txt", "w")
                part += 1
            line = a + "\n\n"
            f.write(line)
            written += len(line.encode())
            if written >= target:
                break
    f.close()
    (raw / "DONE").write_text(f"{written} bytes, {len(articles)} distinct articles, seed {seed}\n")
    return raw


def run_workflow(work: Path, raw: Path, mb: int, shard_mb: int, dup: int, cores: int) -> tuple[Path, float]:
    wf = work / f"wf-{mb}MB"
    shutil.rmtree(wf, ignore_errors=True)
    wf.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, wf / name)
    n_train = max(1, math.ceil(mb * 0.9 / shard_mb))
    n_test = max(1, math.ceil(mb * 0.1 / shard_mb))
    (wf / "bench.yaml").write_text(
        json.dumps(
            {
                "corpus": {"name": "bench", "source": "raw", "raw": {"type": "text", "path": str(raw)}},
                "shards": {"num_train_shards": n_train, "num_test_shards": n_test, "frac_test": 0.1, "seed": 42},
                "samples": {"dup_factor": dup},
            }
        )
    )
    (wf / "sitecustomize.py").write_text(MONITOR.replace("@LOG@", repr(str(wf / "jobs.jsonl"))))
    env = dict(os.environ, PYTHONPATH=str(REPO))  # after the workflow dir (job prefix): bigs from this checkout
    t = time.time()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "samples",
            "--cores",
            str(cores),
            "--configfile",
            "bench.yaml",
            "--set-threads",
            f"process_corpus={cores}",
            f"shard_corpus={cores}",
        ],
        cwd=wf,
        env=env,
        check=True,
    )
    return wf, time.time() - t


def count_tokens(wf: Path) -> int:
    import numpy as np

    return sum(int(np.load(p)["ids"].size) for p in (wf / "results" / "tokens").rglob("*.npz"))


def report(wf: Path, mb: int, dup: int, cores: int, total_wall: float, nodes: list[int]) -> dict:
    jobs = [json.loads(ln) for ln in (wf / "jobs.jsonl").read_text().splitlines()]
    tokens = count_tokens(wf)
    rows = {}
    for stage, words in STAGES.items():
        mine = [j for j in jobs if all(w in j["argv"][:3] for w in words)]
        if not mine:
            continue
        wall = max(j["start"] + j["wall_s"] for j in mine) - min(j["start"] for j in mine)
        cpu = sum(j["cpu_s"] for j in mine)
        rows[stage] = {
            "jobs": len(mine),
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "MB_per_s": round(mb / wall, 2),
            "MB_per_cpu_s": round(mb / cpu, 3),
            "tokens_per_s_per_core": round(tokens / cpu),
            "peak_rss_mb_per_job": round(max(j["peak_tree_rss_mb"] for j in mine)),
            "max_proc_rss_mb": round(max(j["max_proc_rss_mb"] for j in mine)),
        }
    out = {
        "input_mb": mb,
        "tokens": tokens,
        "dup_factor": dup,
        "cores": cores,
        "total_wall_s": round(total_wall, 1),
        "stages": rows,
        "extrapolation": extrapolate(rows, mb, dup, nodes),
    }
    return out


def extrapolate(rows: dict, mb: int, dup: int, nodes: list[int], cores_per_node: int = 32) -> dict:
    """Hours for the paper-size corpus: CPU-s/MB × size / usable cores, per stage, summed."""
    size = sum(TARGETS_MB.values())
    cpu_per_mb = {s: r["cpu_s"] / mb for s, r in rows.items()}
    cpu_per_mb["mask"] = cpu_per_mb.get("mask", 0) * 10 / dup  # the paper's dup_factor 10
    res = {"target_mb": size, "targets": TARGETS_MB}
    for n in nodes:
        one_node = ("process", "shard")  # single multi-process jobs: one node's cores at most
        secs = sum(cpu_per_mb[s] * size / (cores_per_node if s in one_node else cores_per_node * n) for s in cpu_per_mb)
        res[f"{n}_node_hours"] = round(secs / 3600, 2)
    return res


def markdown(r: dict) -> str:
    lines = [
        f"Input {r['input_mb']} MB of text, {r['tokens']:,} WordPiece tokens, dup_factor {r['dup_factor']}, "
        f"--cores {r['cores']}, {r['total_wall_s']} s in all.",
        "",
        "| stage | jobs | wall s | MB/s | tokens/s per core | peak RSS per job (MB, tree) |",
        "|---|---|---|---|---|---|",
    ]
    for s, x in r["stages"].items():
        lines.append(
            f"| {s} | {x['jobs']} | {x['wall_s']} | {x['MB_per_s']} | {x['tokens_per_s_per_core']:,} | "
            f"{x['peak_rss_mb_per_job']} |"
        )
    e = r["extrapolation"]
    lines += [
        "",
        f"Paper-size corpus ≈ {e['target_mb'] / 1000:.1f} GB (Wikipedia {TARGETS_MB['wikipedia'] / 1000:.1f} GB + BookCorpus {TARGETS_MB['bookcorpus'] / 1000:.1f} GB of text), dup_factor 10, perfect scaling assumed: "
        + ", ".join(
            f"{k.replace('_node_hours', '')} × 32-core node(s) ≈ {v} h"
            for k, v in e.items()
            if k.endswith("_node_hours")
        ),
    ]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=100, help="MB of text to build and process")
    p.add_argument("--work", default="/tmp/bench-scale")
    p.add_argument("--shard_mb", type=int, default=25, help="MB of text per text shard")
    p.add_argument("--dup_factor", type=int, default=1, help="masked copies measured (mask time is scaled to 10)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--nodes", default="1,4,16", help="node counts to extrapolate to")
    p.add_argument("--smoke", action="store_true", help="1 MB in 1 MB shards: the whole path in a minute (CI)")
    a = p.parse_args()
    if a.smoke:
        a.mb, a.shard_mb = 1, 1
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    raw = build_corpus(work, a.mb)
    wf, wall = run_workflow(work, raw, a.mb, a.shard_mb, a.dup_factor, a.cores)
    r = report(wf, a.mb, a.dup_factor, a.cores, wall, [int(n) for n in a.nodes.split(",")])
    (work / f"report-{a.mb}MB.json").write_text(json.dumps(r, indent=1))
    md = markdown(r)
    (work / f"report-{a.mb}MB.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
