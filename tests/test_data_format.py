"""The hdf5 shard layout: round trip, label rule vs the original loader, validation errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from bigs.data.format import FIELDS, list_shards, mlm_labels, read_shard, validate_shard, write_shard
from bigs.errors import BigsError

N, L, P, V = 13, 7, 3, 99  # odd tiny sizes (STYLE.md)


def tiny_arrays(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, L + 1, N)
    ids = rng.integers(1, V, (N, L)).astype(np.int32)
    mask = (np.arange(L) < lengths[:, None]).astype(np.int8)
    ids[mask == 0] = 0
    pos = np.zeros((N, P), np.int32)
    mids = np.zeros((N, P), np.int32)
    for i, ln in enumerate(lengths):
        k = rng.integers(1, min(P, ln - 2) + 1)
        chosen = np.sort(rng.choice(np.arange(1, ln - 1), k, replace=False))
        pos[i, :k] = chosen
        mids[i, :k] = rng.integers(1, V, k)
    return {
        "input_ids": ids,
        "input_mask": mask,
        "segment_ids": np.zeros((N, L), np.int8),
        "masked_lm_positions": pos,
        "masked_lm_ids": mids,
    }


def original_loader_labels(input_ids, masked_lm_positions, masked_lm_ids):
    """The original BiGS / academic-budget per-instance rule (REFERENCE.md §3): labels = -1,
    label[pos] = id for the positions before the first 0; loss where label > 0."""
    labels = np.ones(input_ids.shape, dtype=np.int64) * -1
    index = len(masked_lm_positions)
    padded = (masked_lm_positions == 0).nonzero()[0]
    if len(padded) != 0:
        index = padded[0]
    labels[masked_lm_positions[:index]] = masked_lm_ids[:index]
    return labels


def test_round_trip_layout_and_dtypes(tmp_path):
    a = tiny_arrays()
    path = write_shard(tmp_path / "train_shard_0.hdf5", attrs={"seed": 7}, **a)
    with h5py.File(path) as f:
        assert sorted(f.keys()) == sorted(FIELDS)
        for name, dtype in FIELDS.items():
            assert f[name].dtype == dtype
            assert f[name].compression == "gzip"
        assert f.attrs["seed"] == 7
    back = read_shard(path)
    for name in FIELDS:
        np.testing.assert_array_equal(back[name], a[name])
    validate_shard(path, vocab_size=V)
    assert [p.name for p in tmp_path.iterdir()] == ["train_shard_0.hdf5"]  # no temp left behind


def test_labels_equal_original_loader(tmp_path):
    a = tiny_arrays(1)
    ours = mlm_labels(a["input_ids"], a["masked_lm_positions"], a["masked_lm_ids"])
    assert ours.dtype == np.int64
    for i in range(N):
        orig = original_loader_labels(a["input_ids"][i], a["masked_lm_positions"][i], a["masked_lm_ids"][i])
        assert set(np.nonzero(orig > 0)[0]) == set(np.nonzero(ours[i] != -100)[0])
        np.testing.assert_array_equal(np.where(orig > 0, orig, -100), ours[i])
        np.testing.assert_array_equal(
            mlm_labels(a["input_ids"][i], a["masked_lm_positions"][i], a["masked_lm_ids"][i]), ours[i]
        )
    assert (ours != -100).sum() == (a["masked_lm_positions"] != 0).sum()


def test_shard_dataset_items(tmp_path):
    from bigs.data.format import ShardDataset

    a = tiny_arrays(2)
    path = write_shard(tmp_path / "test_shard_3.hdf5", **a)
    ds = ShardDataset(path, vocab_size=V)
    assert len(ds) == N
    item = ds[5]
    assert set(item) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "labels",
        "masked_lm_positions",
        "masked_lm_ids",
    }
    for k in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert item[k].shape == (L,) and str(item[k].dtype) == "torch.int64"
    assert item["masked_lm_positions"].shape == (P,)
    np.testing.assert_array_equal(item["input_ids"].numpy(), a["input_ids"][5])
    np.testing.assert_array_equal(item["attention_mask"].numpy(), a["input_mask"][5])
    np.testing.assert_array_equal(
        item["labels"].numpy(), mlm_labels(a["input_ids"][5], a["masked_lm_positions"][5], a["masked_lm_ids"][5])
    )


def test_batch_tensors_full_and_fixed_shape_label_the_same_tokens():
    """The one shard-to-batch path: (B, L) labels, or (B, P) labels at masked_positions — the
    same (position, id) pairs, -100 in the padding slots (position 0)."""
    from bigs.data.format import batch_tensors

    a = tiny_arrays(3)
    idx = np.array([1, 4, 6])
    full, fixed = batch_tensors(a, idx), batch_tensors(a, idx, fixed_shape=True)
    assert set(full) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert full["labels"].shape == (3, L) and fixed["labels"].shape == fixed["masked_positions"].shape == (3, P)
    np.testing.assert_array_equal(
        full["labels"].numpy(), mlm_labels(a["input_ids"][idx], a["masked_lm_positions"][idx], a["masked_lm_ids"][idx])
    )
    pos = a["masked_lm_positions"][idx]
    np.testing.assert_array_equal(fixed["labels"].numpy(), np.where(pos != 0, a["masked_lm_ids"][idx], -100))
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(full[k], fixed[k]) and full[k].dtype == torch.int64


def test_list_shards_natural_order_and_errors(tmp_path):
    a = tiny_arrays()
    for k in (10, 2, 1):
        write_shard(tmp_path / f"train_shard_{k}.hdf5", **a)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.rsplit("/", 1)[-1] for p in list_shards(tmp_path, "train")] == [
        "train_shard_1.hdf5",
        "train_shard_2.hdf5",
        "train_shard_10.hdf5",
    ]
    with pytest.raises(BigsError, match=r"no test shards.*bigs\.data\.samples"):
        list_shards(tmp_path, "test")
    with pytest.raises(BigsError, match="no such directory"):
        list_shards(tmp_path / "missing", "train")


def _write_raw(path, arrays, drop=None):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            if k != drop:
                f.create_dataset(k, data=v)


def _bad(tmp_path, name, mutate=None, drop=None):
    a = tiny_arrays()
    if mutate:
        mutate(a)
    path = tmp_path / name
    _write_raw(path, a, drop)
    return path


@pytest.mark.parametrize(
    "case, field, message",
    [
        ("missing", "masked_lm_ids", "missing dataset"),
        ("dtype", "input_ids", "dtype int64"),
        ("shape", "input_mask", "shape"),
        ("vocab", "input_ids", "out of range"),
        ("pos_range", "masked_lm_positions", "out of range"),
        ("pos_order", "masked_lm_positions", "not strictly ascending"),
        ("pos_on_pad", "masked_lm_positions", "padding"),
        ("zero_id", "masked_lm_ids", "id 0"),
        ("empty", "input_ids", "empty shard"),
        ("mask_hole", "input_mask", "a 1 follows a 0"),
    ],
)
def test_validate_rejects_bad_shards(tmp_path, case, field, message):
    def m(a):
        if case == "dtype":
            a["input_ids"] = a["input_ids"].astype(np.int64)
        elif case == "shape":
            a["input_mask"] = a["input_mask"][:, :-1]
        elif case == "vocab":
            a["input_ids"][4, 1] = V
        elif case == "pos_range":
            a["masked_lm_positions"][2, 0] = L
        elif case == "pos_order":
            a["masked_lm_positions"][3, :2] = [5, 2]
            a["masked_lm_ids"][3, :2] = [7, 7]
        elif case == "pos_on_pad":
            a["input_mask"][6, 1:] = 0
            a["input_ids"][6, 1:] = 0
        elif case == "zero_id":
            a["masked_lm_ids"][0, 0] = 0
        elif case == "empty":
            for k in a:
                a[k] = a[k][:0]
        elif case == "mask_hole":
            a["input_mask"][1, :] = [1, 0, 1, 0, 0, 0, 0]

    path = _bad(tmp_path, "train_shard_0.hdf5", m, drop="masked_lm_ids" if case == "missing" else None)
    with pytest.raises(BigsError) as e:
        validate_shard(path, vocab_size=V)
    assert str(path) in str(e.value) and field in str(e.value) and message in str(e.value)


def test_truncated_hdf5_is_a_clear_error(tmp_path):
    path = write_shard(tmp_path / "train_shard_0.hdf5", **tiny_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BigsError, match=r"train_shard_0\.hdf5: file: unreadable hdf5"):
        read_shard(path)


def test_write_shard_refuses_bad_input_and_leaves_nothing(tmp_path):
    a = tiny_arrays()
    a["masked_lm_positions"] = a["masked_lm_positions"][:5]
    with pytest.raises(BigsError, match=r"masked_lm_positions: shape \(5, 3\), expected \(13, 3\)"):
        write_shard(tmp_path / "train_shard_0.hdf5", **a)
    assert list(tmp_path.iterdir()) == []
