"""Validate hdf5 shards and print statistics (per shard and in total).

    python -m bigs.data.inspect results/samples/wiki-128 [more files, dirs or gs://bucket/prefix] \\
        [-o stats.json] [--vocab_size 30522] [--mask_id 103] [--unk_id 100]

Checks the layout of bigs.data.format.validate_shard (names, dtypes, shapes, ids < vocab,
positions < L, ascending, on real tokens, masked ids != 0). Statistics: instances, tokens, mean
length, short-sequence share (length <= L/2), padded share (length < L), masked share (masked /
tokens), [MASK]/kept/random split of masked positions, [UNK] rate (of the original tokens).
gs:// shards are downloaded one at a time to a temp dir and deleted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bigs.data import storage
from bigs.data.format import DEFAULT_VOCAB_SIZE, SHARD_SUFFIXES, mlm_labels, read_attrs, validate_shard
from bigs.errors import atomic_path, cli_main, fail


def shard_stats(arrays: dict, mask_id: int = 103, unk_id: int = 100) -> dict:
    """Counts for one shard (sums, so that shards add up); see totals() for the shares."""
    ids, mask = arrays["input_ids"], arrays["input_mask"].astype(bool)
    pos, mids = arrays["masked_lm_positions"], arrays["masked_lm_ids"]
    n, seq_len = ids.shape
    lengths = mask.sum(1)
    real = pos != 0
    rows = np.nonzero(real)[0]
    at = ids[rows, pos[real]]  # what the model sees at masked positions
    labels = mlm_labels(ids, pos, mids)
    original = np.where(labels >= 0, labels, ids)
    return {
        "instances": int(n),
        "max_seq_length": int(seq_len),
        "max_predictions_per_seq": int(pos.shape[1]),
        "tokens": int(lengths.sum()),
        "short": int((lengths <= seq_len // 2).sum()),
        "padded": int((lengths < seq_len).sum()),
        "masked": int(real.sum()),
        "mask_token": int((at == mask_id).sum()),
        "kept": int((at == mids[real]).sum()),
        "random": int(((at != mask_id) & (at != mids[real])).sum()),
        "unk": int(((original == unk_id) & mask).sum()),
    }


def totals(s: dict) -> dict:
    """Add the shares to summed counts."""
    t, m = max(s["tokens"], 1), max(s["masked"], 1)
    return {
        **s,
        "mean_length": s["tokens"] / max(s["instances"], 1),
        "short_share": s["short"] / max(s["instances"], 1),
        "padded_share": s["padded"] / max(s["instances"], 1),
        "masked_share": s["masked"] / t,
        "mask_token_share": s["mask_token"] / m,
        "kept_share": s["kept"] / m,
        "random_share": s["random"] / m,
        "unk_rate": s["unk"] / t,
    }


def expand(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        if p.startswith("gs://") and not p.endswith(SHARD_SUFFIXES) or (not p.startswith("gs://") and Path(p).is_dir()):
            found = [
                f.uri for f in storage.list_files(p) if f.name.endswith(SHARD_SUFFIXES) and not f.name.startswith(".")
            ]
            if not found:
                raise fail(p, "PATH", "no .hdf5 shards here")
            out += sorted(found)
        elif p.startswith("gs://") or Path(p).is_file():
            out.append(p)
        else:
            raise fail(p, "PATH", "no such file or directory")
    return out


def inspect(paths: list[str], vocab_size: int = DEFAULT_VOCAB_SIZE, mask_id: int = 103, unk_id: int = 100) -> dict:
    """Validate every shard (BigsError on the first bad one) and return {"shards": {...}, "total": {...}}."""
    shards = {}
    with tempfile.TemporaryDirectory(prefix="bigs-inspect-") as cache:
        for uri in expand(paths):
            with storage.local_copy(uri, cache) as local:
                arrays = validate_shard(local, vocab_size=vocab_size)
                s = shard_stats(arrays, mask_id, unk_id)
                attrs = read_attrs(local)
            shards[uri] = {**totals(s), **({"attrs": attrs} if attrs else {})}
    keys = ("instances", "tokens", "short", "padded", "masked", "mask_token", "kept", "random", "unk")
    total = totals({k: sum(s[k] for s in shards.values()) for k in keys})
    total["shards"] = len(shards)
    return {"shards": shards, "total": total}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="hdf5 files, directories or gs:// prefixes")
    p.add_argument("-o", default=None, help="write the JSON stats here")
    p.add_argument("--vocab_size", type=int, default=DEFAULT_VOCAB_SIZE)
    p.add_argument("--mask_id", type=int, default=103)
    p.add_argument("--unk_id", type=int, default=100)
    a = p.parse_args(argv)
    stats = inspect(a.paths, a.vocab_size, a.mask_id, a.unk_id)
    for uri, s in stats["shards"].items():
        print(
            f"{uri}: {s['instances']} instances, {s['tokens']} tokens, mean length {s['mean_length']:.1f}, "
            f"masked {s['masked_share']:.3f} ([MASK] {s['mask_token_share']:.3f} kept {s['kept_share']:.3f} "
            f"random {s['random_share']:.3f}), short {s['short_share']:.3f}, [UNK] {s['unk_rate']:.4f}"
        )
    t = stats["total"]
    print(
        f"total: {t['shards']} shards, {t['instances']} instances, {t['tokens']} tokens, mean length "
        f"{t['mean_length']:.1f}, masked {t['masked_share']:.3f}, [MASK]/kept/random {t['mask_token_share']:.3f}/"
        f"{t['kept_share']:.3f}/{t['random_share']:.3f}, short {t['short_share']:.3f}, [UNK] {t['unk_rate']:.4f}"
    )
    if a.o:
        with atomic_path(a.o) as tmp:
            tmp.write_text(json.dumps(stats, indent=1, sort_keys=True, default=str))


if __name__ == "__main__":
    cli_main(main, output_flag="-o")
