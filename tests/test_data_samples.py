"""bigs.data.samples: tokenizer, instances, masking rules, copies, numbering, per-shard CLI, bad flags, kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES_SETTINGS as S

from bigs.data import samples
from bigs.data.format import FIELDS, read_attrs, read_shard, validate_shard
from bigs.errors import BigsError

CLS, SEP, MASK, PAD = 101, 102, 103, 0


def test_canonical_ids():
    v = samples.load_vocab("bert-large-uncased")
    assert v.size == 30522 and v.md5 == "64800d5d8528ce344256daf115d4965e"
    enc = v.tokenizer.encode("The goal of life is [MASK].")
    assert enc.ids == [101, 1996, 3125, 1997, 2166, 2003, 103, 1012, 102]
    assert (v.cls_id, v.sep_id, v.mask_id, v.pad_id, v.unk_id) == (101, 102, 103, 0, 100)


def test_output_index_formula():
    assert samples.output_index(0, 0, 4) == 0
    assert samples.output_index(3, 0, 4) == 3
    assert samples.output_index(1, 2, 4) == 9  # copy * N + i
    ks = {samples.output_index(i, j, 5) for i in range(5) for j in range(3)}
    assert ks == set(range(15))
    with pytest.raises(ValueError):
        samples.output_index(5, 0, 5)


def _all(d: Path, split="train"):
    return {p.name: read_shard(p) for p in sorted(d.glob(f"{split}_shard_*.hdf5"))}


def test_wiki_samples_files_and_seeds(wiki_samples_dir):
    names = sorted(p.name for p in wiki_samples_dir.glob("*.hdf5"))
    assert names == sorted([f"train_shard_{k}.hdf5" for k in range(8)] + [f"test_shard_{k}.hdf5" for k in range(4)])
    for k in range(8):
        at = read_attrs(wiki_samples_dir / f"train_shard_{k}.hdf5")
        assert at["seed"] == S["seed"] + k and at["k"] == k
        assert (at["shard_index"], at["copy"]) == (k % 4, k // 4)
        assert at["source"] == f"training{k % 4}.txt"


def test_masking_rules(wiki_samples_dir):
    n_masked = kept = rand = mask = 0
    for name, a in _all(wiki_samples_dir).items():
        validate_shard(wiki_samples_dir / name)
        ids, m = a["input_ids"], a["input_mask"].astype(bool)
        pos, mids = a["masked_lm_positions"], a["masked_lm_ids"]
        lengths = m.sum(1)
        assert ids.shape[1] == 128 and pos.shape[1] == 20
        rows = np.arange(len(ids))
        assert (ids[:, 0] == CLS).all() and (ids[rows, lengths - 1] == SEP).all()
        assert (ids[~m] == PAD).all() and (a["segment_ids"] == 0).all()
        real = pos != 0
        # never [CLS] (0 is padding anyway), [SEP] or [PAD]
        assert (pos[real] < (lengths - 1)[np.nonzero(real)[0]]).all()
        # ascending, padding last
        p = np.where(real, pos, 10**6)
        assert (np.diff(p, axis=1) > 0).all() or (np.diff(p, axis=1)[real[:, 1:]] > 0).all()
        # count rule, Python's round (half to even) on len counting [CLS]/[SEP]
        want = [min(20, max(1, round(int(n) * 0.15))) for n in lengths]
        assert real.sum(1).tolist() == want
        at = ids[np.nonzero(real)[0], pos[real]]
        n_masked += real.sum()
        mask += (at == MASK).sum()
        kept += (at == mids[real]).sum()
        rand += ((at != MASK) & (at != mids[real])).sum()
        # the masked token is the original: masked_lm_ids are real tokens
        assert not np.isin(mids[real], [CLS, SEP, MASK, PAD]).any()
    assert n_masked > 100_000
    assert abs(mask / n_masked - 0.8) < 0.01
    assert abs(kept / n_masked - 0.1) < 0.01
    assert abs(rand / n_masked - 0.1) < 0.01


def _restored(a):
    ids = a["input_ids"].copy()
    r, c = np.nonzero(a["masked_lm_positions"])
    ids[r, a["masked_lm_positions"][r, c]] = a["masked_lm_ids"][r, c]
    return ids


def test_dup_copies_share_tokens_and_differ_in_masks(wiki_samples_dir):
    for i in range(4):
        a = read_shard(wiki_samples_dir / f"train_shard_{i}.hdf5")
        b = read_shard(wiki_samples_dir / f"train_shard_{i + 4}.hdf5")
        assert a["input_ids"].shape == b["input_ids"].shape
        # same token sequences (order is shuffled per copy)
        sa = sorted(map(bytes, _restored(a)))
        sb = sorted(map(bytes, _restored(b)))
        assert sa == sb
        # different masks: compare per instance, matched by restored tokens
        ka = {bytes(r): tuple(p) for r, p in zip(_restored(a), a["masked_lm_positions"])}
        kb = {bytes(r): tuple(p) for r, p in zip(_restored(b), b["masked_lm_positions"])}
        same = sum(ka[k] == kb[k] for k in ka)
        assert same < 0.05 * len(ka)


def test_instances_cover_the_text_in_order(wiki_text_shards_dir):
    vocab = samples.load_vocab()
    tok = samples.tokenize_file(wiki_text_shards_dir / "training0.txt", vocab)
    starts, lengths = samples.make_instances(tok, 128, 0.0, np.random.default_rng(0))
    assert (lengths >= 1).all() and (lengths <= 126).all()
    # with short_seq_prob 0 and no truncation loss, only the last chunk of a document is short
    full = (lengths == 126).mean()
    assert full > 0.7
    # bodies never cross a document boundary
    doc_tok = tok.sent_offsets[tok.doc_offsets]
    d0 = np.searchsorted(doc_tok, starts, side="right")
    d1 = np.searchsorted(doc_tok, starts + lengths - 1, side="right")
    assert (d0 == d1).all()
    # tokens are covered once, except what truncation drops (the sentence that overshoots the
    # target loses its tail or the chunk its head, as in create_pretraining_data.py: ~10 % at L=128)
    assert 0.85 * len(tok.ids) < lengths.sum() <= len(tok.ids)
    assert (np.diff(starts) > 0).all()


def test_same_seed_same_files_other_seed_differs(wiki_text_shards_dir, tmp_path):
    src = tmp_path / "in"  # the two small test text shards keep this fast
    src.mkdir()
    for n in ("test0.txt", "test1.txt"):
        shutil.copy(wiki_text_shards_dir / n, src / n)
    kw = dict(dup_factor=2, max_seq_length=128, n_processes=1)
    out1 = samples.generate(src, tmp_path / "a", seed=42, **kw)
    out2 = samples.generate(src, tmp_path / "b", seed=42, **kw)
    out3 = samples.generate(src, tmp_path / "c", seed=43, **kw)
    assert [p.name for p in out1] == [p.name for p in out2] == [f"test_shard_{k}.hdf5" for k in range(4)]
    for p1, p2, p3 in zip(out1, out2, out3):
        a, b, c = read_shard(p1), read_shard(p2), read_shard(p3)
        for k in FIELDS:
            np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a["masked_lm_positions"], c["masked_lm_positions"])


def test_per_shard_cli_equals_in_process_form(wiki_text_shards_dir, wiki_samples_dir, tmp_path):
    """The Snakemake path (tokenize once, mask per copy) writes the very files of the plain form."""
    tok = tmp_path / "tokens" / "training1.npz"
    run = lambda *a: subprocess.run([sys.executable, "-m", "bigs.data.samples", *a], capture_output=True, text=True)  # noqa: E731
    r = run("tokenize", "--input", str(wiki_text_shards_dir / "training1.txt"), "--output", str(tok))
    assert r.returncode == 0, r.stderr
    k = samples.output_index(1, 1, 4)
    out = tmp_path / f"train_shard_{k}.hdf5"
    r = run(
        "mask",
        "--tokens",
        str(tok),
        "--copy",
        "1",
        "--num_shards",
        "4",
        "--output",
        str(out),
        "--seed",
        str(S["seed"]),
        "--max_seq_length",
        "128",
        "--max_predictions_per_seq",
        "20",
    )
    assert r.returncode == 0, r.stderr
    a, b = read_shard(out), read_shard(wiki_samples_dir / f"train_shard_{k}.hdf5")
    for name in FIELDS:
        np.testing.assert_array_equal(a[name], b[name])
    # a wrong k in the output name is refused, naming the flag
    r = run(
        "mask",
        "--tokens",
        str(tok),
        "--copy",
        "0",
        "--num_shards",
        "4",
        "--output",
        str(tmp_path / "train_shard_7.hdf5"),
        "--max_seq_length",
        "128",
    )
    assert r.returncode == 2 and "--output" in r.stderr and "train_shard_1.hdf5" in r.stderr
    assert not (tmp_path / "train_shard_7.hdf5").exists()


@pytest.mark.parametrize("L", [512, 1024, 4096])
def test_long_sequences(wiki_text_shards_dir, tmp_path, L):
    vocab = samples.load_vocab()
    tok = samples.tokenize_file(wiki_text_shards_dir / "test0.txt", vocab)
    spec = samples.MaskSpec(max_seq_length=L, max_predictions_per_seq=80, masked_lm_prob=0.15, short_seq_prob=0.1)
    (path,) = samples.write_copies(tok, tmp_path, shard_index=0, num_shards=2, copies=[0], seed=42, spec=spec)
    a = validate_shard(path)
    assert a["input_ids"].shape[1] == L and a["masked_lm_positions"].shape[1] == 80
    lengths = a["input_mask"].sum(1)
    assert lengths.max() <= L
    assert (a["masked_lm_positions"] != 0).sum(1).tolist() == [min(80, max(1, round(int(n) * 0.15))) for n in lengths]


def test_whole_word_mask(wiki_text_shards_dir, tmp_path):
    vocab = samples.load_vocab()
    tok = samples.tokenize_file(wiki_text_shards_dir / "test1.txt", vocab)
    spec = samples.MaskSpec(max_seq_length=128, max_predictions_per_seq=20, whole_word_mask=True)
    (path,) = samples.write_copies(tok, tmp_path, shard_index=1, num_shards=2, copies=[0], seed=42, spec=spec)
    a = validate_shard(path)
    ids = _restored(a)
    cont = vocab.continuation
    checked = 0
    for i in range(len(ids)):
        masked = set(a["masked_lm_positions"][i][a["masked_lm_positions"][i] != 0].tolist())
        n = int(a["input_mask"][i].sum())
        for p in masked:  # a masked ## piece implies its previous piece is masked, and the next ## piece too
            if cont[ids[i, p]] and p > 1:  # at p == 1 front truncation may have cut the word
                assert p - 1 in masked
            if p + 1 < n - 1 and cont[ids[i, p + 1]]:
                assert p + 1 in masked
                checked += 1
    assert checked > 50


@pytest.mark.parametrize(
    "flags, flag",
    [
        (["--max_predictions_per_seq", "128"], "--max_predictions_per_seq"),
        (["--masked_lm_prob", "0"], "--masked_lm_prob"),
        (["--masked_lm_prob", "1.5"], "--masked_lm_prob"),
        (["--dup_factor", "0"], "--dup_factor"),
    ],
)
def test_bad_flags(wiki_text_shards_dir, tmp_path, flags, flag):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bigs.data.samples",
            "--dir",
            str(wiki_text_shards_dir),
            "-o",
            str(tmp_path / "out"),
            "--max_seq_length",
            "128",
            "--model_name",
            "bert-large-uncased",
            *flags,
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and flag in r.stderr and str(wiki_text_shards_dir) in r.stderr
    assert not (tmp_path / "out").exists()


def test_vocab_wrong_size(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a"]) + "\n")
    with pytest.raises(BigsError, match=r"vocab\.txt: --vocab_file: vocab of the wrong size: 7 entries.*30522"):
        samples.load_vocab("bert-large-uncased", bad)


def test_unknown_tokenizer_offline():
    with pytest.raises(BigsError, match=r"no-such-org/no-such-tokenizer: --model_name: cannot load tokenizer.*offline"):
        samples.load_vocab("no-such-org/no-such-tokenizer")


def test_empty_dir_and_empty_shard(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(BigsError, match="--dir: no .txt text shards"):
        samples.generate(tmp_path / "in", tmp_path / "out", max_seq_length=128)
    (tmp_path / "in" / "training0.txt").write_text("\n\n  \n")
    with pytest.raises(BigsError, match=r"training0\.txt: --input: no tokens"):
        samples.generate(tmp_path / "in", tmp_path / "out", max_seq_length=128)
    assert not list((tmp_path / "out").glob("*.hdf5"))


def test_refuses_output_with_other_settings(wiki_text_shards_dir, wiki_samples_dir):
    with pytest.raises(BigsError, match=r"-o: holds shards made with different settings \(max_seq_length\)"):
        samples.generate(
            wiki_text_shards_dir,
            wiki_samples_dir,
            dup_factor=2,
            seed=42,
            max_seq_length=512,
            max_predictions_per_seq=20,
        )


def test_kill_9_mid_write_leaves_nothing_then_rerun_regenerates(wiki_text_shards_dir, tmp_path):
    # a token file ~8x the wiki shard so the write takes a while
    vocab = samples.load_vocab()
    t = samples.tokenize_file(wiki_text_shards_dir / "training0.txt", vocab)
    reps = 8
    ids = np.tile(t.ids, reps)
    so = np.concatenate([t.sent_offsets[:-1] + r * len(t.ids) for r in range(reps)] + [[reps * len(t.ids)]])
    ns = len(t.sent_offsets) - 1
    do = np.concatenate([t.doc_offsets[:-1] + r * ns for r in range(reps)] + [[reps * ns]])
    tok = samples.save_tokens(samples.Tokens(ids, so, do, t.meta), tmp_path / "training0.npz")
    out = tmp_path / "out" / "train_shard_0.hdf5"
    cmd = [
        sys.executable,
        "-m",
        "bigs.data.samples",
        "mask",
        "--tokens",
        str(tok),
        "--copy",
        "0",
        "--num_shards",
        "1",
        "--output",
        str(out),
        "--max_seq_length",
        "128",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed = time.time() + 60, False
    while time.time() < deadline and proc.poll() is None:
        if out.parent.is_dir() and any(p.name.startswith(".tmp-train_shard_0.hdf5") for p in out.parent.iterdir()):
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait()
    assert killed, "the writer finished before a temp file was seen"
    assert not out.exists()
    # rerun (what Snakemake does) regenerates a valid file
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(validate_shard(out)["input_ids"]) > 7000
