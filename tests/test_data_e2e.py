"""The bundled Wikipedia sample through the four CLIs: process -> shard -> samples -> inspect."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import WIKI_SAMPLE

from bigs.data.inspect import inspect
from bigs.errors import BigsError


def cli(module, *args):
    r = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"{module}: {r.stderr[-2000:]}"
    return r


@pytest.mark.slow
def test_wiki_sample_process_shard_samples_inspect(tmp_path):
    cli("bigs.data.process", "-f", WIKI_SAMPLE, "-o", tmp_path / "corpus", "--type", "wiki", "--n_processes", 2)
    assert (tmp_path / "corpus" / "wiki_one_article_per_line.txt").stat().st_size > 2_000_000
    cli(
        "bigs.data.shard",
        "--dir",
        tmp_path / "corpus",
        "-o",
        tmp_path / "shards",
        "--num_train_shards",
        3,
        "--num_test_shards",
        1,
        "--frac_test",
        0.1,
        "--seed",
        3,
        "--n_processes",
        2,
    )
    cli(
        "bigs.data.samples",
        "--dir",
        tmp_path / "shards",
        "-o",
        tmp_path / "samples",
        "--dup_factor",
        2,
        "--seed",
        42,
        "--do_lower_case",
        1,
        "--masked_lm_prob",
        0.15,
        "--max_seq_length",
        128,
        "--model_name",
        "bert-large-uncased",
        "--max_predictions_per_seq",
        20,
        "--n_processes",
        2,
    )
    names = sorted(p.name for p in (tmp_path / "samples").glob("*.hdf5"))
    assert names == sorted([f"train_shard_{k}.hdf5" for k in range(6)] + ["test_shard_0.hdf5", "test_shard_1.hdf5"])
    r = cli("bigs.data.inspect", tmp_path / "samples", "-o", tmp_path / "stats.json")
    stats = json.loads((tmp_path / "stats.json").read_text())
    t = stats["total"]
    assert t["shards"] == 8 and "total: 8 shards" in r.stdout
    # ≈545k WordPieces in the sample, twice (dup 2), minus what truncation drops, plus [CLS]/[SEP]
    assert 0.85 * 2 * 545_000 < t["tokens"] < 1.1 * 2 * 545_000
    assert 0.145 < t["masked_share"] < 0.155
    assert abs(t["mask_token_share"] - 0.8) < 0.015 and abs(t["kept_share"] - 0.1) < 0.015
    assert 80 < t["mean_length"] <= 128 and 0.05 < t["short_share"] < 0.4
    assert t["unk_rate"] < 0.001
    s0 = stats["shards"][str(tmp_path / "samples" / "train_shard_0.hdf5")]
    assert s0["attrs"]["seed"] == 42 and s0["attrs"]["source"] == "training0.txt"


def test_inspect_rejects_bad_shard_and_names_it(wiki_samples_dir, tmp_path):
    bad = tmp_path / "train_shard_0.hdf5"
    data = (wiki_samples_dir / "train_shard_0.hdf5").read_bytes()
    bad.write_bytes(data[:1000])
    r = subprocess.run(
        [sys.executable, "-m", "bigs.data.inspect", str(bad), "-o", str(tmp_path / "s.json")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and f"{bad}: file: unreadable hdf5" in r.stderr
    assert not (tmp_path / "s.json").exists()
    with pytest.raises(BigsError, match="ids|out of range"):
        inspect([str(wiki_samples_dir / "test_shard_0.hdf5")], vocab_size=2000)


def test_inspect_stats_match_by_hand(wiki_samples_dir):
    import numpy as np

    from bigs.data.format import read_shard

    p = wiki_samples_dir / "test_shard_1.hdf5"
    s = inspect([str(p)])["shards"][str(p)]
    a = read_shard(p)
    assert s["instances"] == len(a["input_ids"]) and s["tokens"] == int(a["input_mask"].sum())
    assert s["masked"] == int((a["masked_lm_positions"] != 0).sum())
    assert s["mask_token"] + s["kept"] + s["random"] == s["masked"]
    assert s["short"] == int((a["input_mask"].sum(1) <= 64).sum())
    assert np.isclose(s["mean_length"], a["input_mask"].sum(1).mean())
