"""Sentence-split articles with nltk punkt and spread them over train/test text shards
(academic-budget-bert `shard_data.py`, REFERENCE.md §3).

    python -m bigs.data.shard --dir CORPUS_DIR -o SHARDS --num_train_shards 256 \\
        --num_test_shards 128 --frac_test 0.1 [--seed 42] [--n_processes 8] [--overwrite]

Input: every *.txt in --dir, one article per line (bigs.data.process output). Output:
SHARDS/training{i}.txt and SHARDS/test{i}.txt, one sentence per line, a blank line after each
article, plus SHARDS/.bigs-shard.json (the settings; a rerun with other settings is refused
unless --overwrite). The whole directory appears atomically.

Memory grows with the number of articles, not the size of the text: pass 1 streams the articles
through punkt (n_processes workers) into a spill file and keeps one sentence count per article;
the articles are then assigned; pass 2 streams the spill file into the shard files.

Assignment (deterministic for --seed): shuffle articles; the first ones in that order go to the
test split until it holds frac_test of all sentences (at least one article per test shard);
within each split, articles in decreasing sentence count go to the shard with the fewest
sentences so far (longest-processing-time rule), so shard sentence counts are balanced.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np

from bigs.errors import atomic_dir, cli_main, fail

log = logging.getLogger("bigs.data.shard")
SETTINGS = ".bigs-shard.json"
MAX_OPEN = 512  # shard files open at once in pass 2; more shards -> several sweeps of the spill file
CHUNK = 64  # articles per task sent to a worker

_split = None


def _init_worker(cache_env: dict):
    os.environ.update(cache_env)
    global _split
    from bigs.data.punkt import sentence_splitter

    _split = sentence_splitter()


def _split_chunk(articles: list[str]) -> list[list[str]]:
    out = []
    for a in articles:
        out.append([s for s in (x.strip() for x in _split(a)) if s])
    return out


def iter_articles(files: list[Path]):
    for path in files:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line


def _chunks(it, n):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def bounded_imap(pool, fn, items, window: int):
    """Ordered imap that keeps at most `window` tasks in flight (Pool.imap reads all input first)."""
    pending = collections.deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def assign(counts: np.ndarray, num_train: int, num_test: int, frac_test: float, seed: int) -> np.ndarray:
    """Shard index per article: 0..num_train-1 are training{i}, num_train+j is test{j}."""
    a = len(counts)
    rng = np.random.default_rng(seed)
    order = rng.permutation(a)
    if num_test == 0:
        n_test = 0
    else:
        cum = np.cumsum(counts[order])
        n_test = int(np.searchsorted(cum, frac_test * cum[-1])) + 1
        n_test = min(max(n_test, num_test), a - num_train)
    shard_of = np.empty(a, dtype=np.int32)
    for ids, first, n in ((order[n_test:], 0, num_train), (order[:n_test], num_train, num_test)):
        if n == 0:
            continue
        ids = ids[np.argsort(-counts[ids], kind="stable")]  # longest first; ties in shuffled order
        heap = [(0, i) for i in range(n)]
        for art, c in zip(ids.tolist(), counts[ids].tolist()):
            load, s = heapq.heappop(heap)
            shard_of[art] = first + s
            heapq.heappush(heap, (load + c, s))
    return shard_of


def shard_names(num_train: int, num_test: int) -> list[str]:
    return [f"training{i}.txt" for i in range(num_train)] + [f"test{j}.txt" for j in range(num_test)]


def check_output(out: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to replace a directory of other shards unless --overwrite."""
    if not out.exists() or overwrite or not any(out.iterdir()):
        return
    old = out / SETTINGS
    if not old.is_file():
        raise fail(
            out,
            "-o",
            "exists and holds files not written by bigs.data.shard — choose another directory or pass --overwrite",
        )
    prev = json.loads(old.read_text())
    if prev != settings:
        diff = sorted(k for k in set(prev) | set(settings) if prev.get(k) != settings.get(k))
        raise fail(
            out,
            "-o",
            f"holds shards made with different settings ({', '.join(diff)}) — "
            "choose another directory or pass --overwrite",
        )


def shard(
    txt_dir,
    out,
    num_train: int,
    num_test: int,
    frac_test: float,
    seed: int = 12345,
    *,
    n_processes: int = 1,
    overwrite: bool = False,
) -> dict:
    """Run the stage on the *.txt files of `txt_dir` (a dir, or a list of dirs: several sources of one
    corpus, sharded together); return per-shard sentence counts."""
    dirs = [Path(d) for d in (txt_dir if isinstance(txt_dir, (list, tuple)) else [txt_dir])]
    txt_dir, out = dirs[0] if len(dirs) == 1 else ", ".join(map(str, dirs)), Path(out)
    if num_train < 1:
        raise fail(txt_dir, "--num_train_shards", "must be >= 1")
    if num_test < 0:
        raise fail(txt_dir, "--num_test_shards", "must be >= 0")
    if num_test > 0 and not 0 < frac_test < 1:
        raise fail(txt_dir, "--frac_test", f"{frac_test} must be in (0, 1) when --num_test_shards > 0")
    for d in dirs:
        if not d.is_dir():
            raise fail(d, "--dir", "no such directory")
    files = sorted(p for d in dirs for p in d.iterdir() if p.suffix == ".txt" and p.is_file())
    if not files:
        raise fail(txt_dir, "--dir", "no .txt files (make them with python -m bigs.data.process)")
    settings = {
        "num_train_shards": num_train,
        "num_test_shards": num_test,
        "frac_test": frac_test,
        "seed": seed,
        "inputs": {(p.name if len(dirs) == 1 else f"{p.parent.name}/{p.name}"): p.stat().st_size for p in files},
    }
    check_output(out, settings, overwrite)

    from bigs.data.punkt import ensure_punkt

    ensure_punkt()  # fail early (and write the punkt_tab files once, before workers start)
    env = {k: os.environ[k] for k in ("NLTK_DATA", "BIGS_CACHE") if k in os.environ}
    with atomic_dir(out) as tmp:
        spill = tmp / ".spill.txt"
        counts = []
        ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        with (
            ctx.Pool(n_processes, initializer=_init_worker, initargs=(env,)) as pool,
            open(spill, "w", encoding="utf-8", newline="\n") as sp,
        ):
            for chunk in bounded_imap(pool, _split_chunk, _chunks(iter_articles(files), CHUNK), 4 * n_processes):
                for sents in chunk:
                    if sents:
                        counts.append(len(sents))
                        sp.write("\n".join(sents) + "\n\n")
        counts = np.asarray(counts, dtype=np.int64)
        if len(counts) < num_train + num_test:
            raise fail(
                txt_dir,
                "--num_train_shards/--num_test_shards",
                f"fewer articles ({len(counts)}) than shards ({num_train} train + {num_test} test = "
                f"{num_train + num_test}) — add text or ask for fewer shards",
            )
        shard_of = assign(counts, num_train, num_test, frac_test, seed)
        names = shard_names(num_train, num_test)
        for lo in range(0, len(names), MAX_OPEN):  # pass 2: spill -> shard files
            hi = min(lo + MAX_OPEN, len(names))
            handles = [open(tmp / n, "w", encoding="utf-8", newline="\n") for n in names[lo:hi]]
            try:
                with open(spill, encoding="utf-8", newline="\n") as sp:
                    art, buf = 0, []
                    for line in sp:
                        if line != "\n":
                            buf.append(line)
                            continue
                        s = shard_of[art]
                        if lo <= s < hi:
                            handles[s - lo].write("".join(buf) + "\n")
                        art, buf = art + 1, []
            finally:
                for h in handles:
                    h.close()
        spill.unlink()
        (tmp / SETTINGS).write_text(json.dumps(settings, indent=1, sort_keys=True))
    per_shard = np.bincount(shard_of, weights=counts, minlength=len(names)).astype(int)
    tr, te = per_shard[:num_train], per_shard[num_train:]
    log.info(
        "%d articles, %d sentences -> %d train shards (sentences min %d max %d), %d test shards%s",
        len(counts),
        counts.sum(),
        num_train,
        tr.min(),
        tr.max(),
        num_test,
        f" (sentences min {te.min()} max {te.max()})" if num_test else "",
    )
    return dict(zip(names, per_shard.tolist()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dir", required=True, nargs="+", help="directory of *.txt, one article per line (several: sharded together)"
    )
    p.add_argument("-o", "--o", dest="o", required=True, help="output directory")
    p.add_argument("--num_train_shards", type=int, default=256)
    p.add_argument("--num_test_shards", type=int, default=256)
    p.add_argument("--frac_test", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--n_processes", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace an output dir made with other settings")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.n_processes < 1:
        raise fail(", ".join(args.dir), "--n_processes", "must be >= 1")
    shard(
        args.dir,
        args.o,
        args.num_train_shards,
        args.num_test_shards,
        args.frac_test,
        args.seed,
        n_processes=args.n_processes,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    cli_main(main, output_flag="-o")
