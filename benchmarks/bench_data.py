"""Data-stage figures: samples tokens/s at dup 1 and 10 vs the tokenizers floor, shard
MB/s and peak RSS, samples peak RSS on a 100 MB text shard, n_processes 1 -> 2.

    nice python benchmarks/bench_data.py [--work DIR] [--big_mb 100] [--skip_big]

Each measurement runs in a fresh subprocess (its own peak RSS, children included).
Reference: academic-budget-bert create_pretraining_data.py ran ≈205k input tokens/s on one core
of this kind of machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "enwiki-sample-106-articles.xml.bz2"
ACADEMIC_BUDGET_TOKENS_PER_S = 205_000

RUNNER = textwrap.dedent("""
    import json, resource, sys, time
    t = time.perf_counter()
    exec(sys.argv[1])
    dt = time.perf_counter() - t
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print("BENCH " + json.dumps({"seconds": dt, "peak_rss_mb": rss / 1024, "result": globals().get("result")}))
""")


def measure(code: str) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-c", RUNNER, textwrap.dedent(code)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    line = [x for x in r.stdout.splitlines() if x.startswith("BENCH ")][-1]
    return json.loads(line[6:])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", default=None)
    p.add_argument("--big_mb", type=int, default=100)
    p.add_argument("--skip_big", action="store_true")
    p.add_argument("--smoke", action="store_true", help="dup 1 and 2, no big shard: every code path in seconds (CI)")
    a = p.parse_args()
    dups = (1, 2) if a.smoke else (1, 10)
    a.skip_big = a.skip_big or a.smoke
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-data-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    corpus = work / "corpus"
    if not (corpus / "wiki_one_article_per_line.txt").exists():
        measure(f"from bigs.data.process import process; process({str(SAMPLE)!r}, {str(corpus)!r}, 'wiki', 2)")
    text_mb = (corpus / "wiki_one_article_per_line.txt").stat().st_size / 1e6

    # shard: MB/s per process and peak RSS, n_processes 1 -> 2
    for n in (1, 2):
        out = work / f"shards{n}"
        shutil.rmtree(out, ignore_errors=True)
        m = measure(
            f"from bigs.data.shard import shard; shard({str(corpus)!r}, {str(out)!r}, 4, 2, 0.1, 1, n_processes={n})"
        )
        print(
            f"shard      n_processes={n}: {text_mb:.2f} MB in {m['seconds']:.2f} s = {text_mb / m['seconds']:.2f} MB/s, "
            f"peak RSS {m['peak_rss_mb']:.0f} MB"
        )
    shards = work / "shards1"

    # floor: single-thread tokenizers on the same sentence lines
    m = measure(f"""
        from pathlib import Path
        from bigs.data.samples import load_vocab
        tok = load_vocab().tokenizer
        lines = [l.strip() for p in sorted(Path({str(shards)!r}).glob('*.txt')) for l in open(p) if l.strip()]
        import time
        t0 = time.perf_counter()
        n = sum(len(e.ids) for e in tok.encode_batch_fast(lines, add_special_tokens=False))
        result = [n, time.perf_counter() - t0]
    """)
    n_tokens, floor_s = m["result"]
    floor = n_tokens / floor_s
    print(
        f"tokenizers encode_batch_fast, 1 thread: {n_tokens} tokens in {floor_s:.2f} s = {floor / 1e3:.0f}k tokens/s (floor)"
    )

    # samples: dup 1 and 10, one process; n_processes 2
    times = {}
    for dup, n in ((dups[0], 1), (dups[1], 1), (dups[0], 2), (dups[1], 2)):
        out = work / f"samples-d{dup}-n{n}"
        shutil.rmtree(out, ignore_errors=True)
        m = measure(
            f"from bigs.data.samples import generate; generate({str(shards)!r}, {str(out)!r}, dup_factor={dup}, "
            f"seed=42, max_seq_length=128, n_processes={n})"
        )
        times[dup, n] = m["seconds"]
        print(
            f"samples    dup={dup:<2} n_processes={n}: {m['seconds']:.2f} s = {n_tokens / m['seconds'] / 1e3:.0f}k input "
            f"tokens/s ({n_tokens / m['seconds'] / ACADEMIC_BUDGET_TOKENS_PER_S:.2f}x academic-budget 205k; "
            f"{n_tokens / m['seconds'] / floor:.0%} of the floor), peak RSS {m['peak_rss_mb']:.0f} MB"
        )
    lo, hi = dups
    print(
        f"samples    dup {hi} / dup {lo} time (1 process): {times[hi, 1] / times[lo, 1]:.2f}x; "
        f"n_processes 1 -> 2 speedup: dup {lo} {times[lo, 1] / times[lo, 2]:.2f}x, dup {hi} {times[hi, 1] / times[hi, 2]:.2f}x"
    )

    if a.skip_big:
        return
    # samples peak RSS on one ~100 MB text shard (the sample's shards repeated)
    big = work / "big"
    big.mkdir(exist_ok=True)
    target = big / "training0.txt"
    if not target.exists() or target.stat().st_size < a.big_mb * 1e6:
        chunk = "".join(p.read_text() for p in sorted(shards.glob("*.txt")))
        with open(target, "w") as f:
            while f.tell() < a.big_mb * 1e6:
                f.write(chunk)
    big_mb = target.stat().st_size / 1e6
    out = work / "samples-big"
    shutil.rmtree(out, ignore_errors=True)
    m = measure(
        f"from bigs.data.samples import generate; generate({str(big)!r}, {str(out)!r}, dup_factor=1, seed=42, "
        "max_seq_length=128, n_processes=1)"
    )
    print(
        f"samples    {big_mb:.0f} MB text shard, dup 1, 1 process: {m['seconds']:.1f} s, peak RSS {m['peak_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
