"""The one hdf5 shard layout: writer, reader, validator, label rule, torch Dataset, shard listing.

Layout (REFERENCE.md §3, academic-budget-bert `create_pretraining_data.py`; one file = one shard,
gzip, N instances, L = max_seq_length, P = max_predictions_per_seq):

    input_ids            (N, L) int32  token ids, 0-padded, masked positions already replaced
    input_mask           (N, L) int8   1 real token, 0 pad
    segment_ids          (N, L) int8   all 0 (no NSP)
    masked_lm_positions  (N, P) int32  masked positions ascending, 0 = padding
    masked_lm_ids        (N, P) int32  original ids at those positions, 0 = padding

Labels follow the original BiGS loader (labels = -1, label[pos] = id for pos != 0, loss where
label > 0) in the HF convention: -100 instead of -1; the set of labelled positions is identical.

Usage:
    from bigs.data.format import read_shard, ShardDataset, list_shards
    ds = ShardDataset(list_shards("results/samples/wiki-128", "train")[0])
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import numpy as np

from bigs.errors import BigsError, atomic_path, fail

FIELDS: dict[str, np.dtype] = {
    "input_ids": np.dtype(np.int32),
    "input_mask": np.dtype(np.int8),
    "segment_ids": np.dtype(np.int8),
    "masked_lm_positions": np.dtype(np.int32),
    "masked_lm_ids": np.dtype(np.int32),
}
SEQ_FIELDS = ("input_ids", "input_mask", "segment_ids")  # (N, L)
PRED_FIELDS = ("masked_lm_positions", "masked_lm_ids")  # (N, P)
IGNORE_INDEX = -100  # torch CrossEntropyLoss default; the original used -1 and `label > 0`
DEFAULT_VOCAB_SIZE = 30522  # bert-large-uncased (REFERENCE.md §3)
GZIP_LEVEL = 4  # h5py's default gzip level, as the original writer used

# What makes a shard: "train"/"test" in the name (as the original loader picks them).
SHARD_SUFFIXES = (".hdf5", ".h5")


def write_shard(path, attrs: dict | None = None, **arrays) -> Path:
    """Write the five datasets to `path` (gzip) atomically; `attrs` become hdf5 file attributes."""
    path = Path(path)
    if set(arrays) != set(FIELDS):
        raise fail(path, ",".join(sorted(set(arrays) ^ set(FIELDS))), f"write_shard needs exactly {list(FIELDS)}")
    cast = {}
    for name, dtype in FIELDS.items():
        a = np.asarray(arrays[name])
        if a.ndim != 2:
            raise fail(path, name, f"expected a 2-D array, got shape {a.shape}")
        if a.size and (a.min() < np.iinfo(dtype).min or a.max() > np.iinfo(dtype).max):
            raise fail(path, name, f"values do not fit {dtype}")
        cast[name] = a.astype(dtype, copy=False)
    _check_shapes(path, {k: v.shape for k, v in cast.items()})
    with atomic_path(path, suffix=".hdf5") as tmp:
        with h5py.File(tmp, "w") as f:
            for name, a in cast.items():
                f.create_dataset(name, data=a, dtype=a.dtype, compression="gzip", compression_opts=GZIP_LEVEL)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
    return path


def read_shard(path) -> dict[str, np.ndarray]:
    """Read the five datasets of one local shard into memory (as the original loader does)."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file", "no such shard file")
    try:
        with h5py.File(path, "r") as f:
            out = {}
            for name in FIELDS:
                if name not in f:
                    raise fail(
                        path,
                        name,
                        f"missing dataset (has {sorted(f.keys())}) — regenerate with python -m bigs.data.samples",
                    )
                out[name] = f[name][()]
    except BigsError:
        raise
    except (OSError, KeyError, ValueError) as exc:  # truncated / not hdf5 / corrupt chunk
        raise fail(path, "file", f"unreadable hdf5 ({exc}) — delete it and fetch or regenerate it") from None
    return out


def sequence_length(uri) -> int:
    """L of a shard (input_ids' second dimension) from its hdf5 header; a gs:// shard is fetched first."""
    import tempfile

    from bigs.data.storage import local_copy

    with tempfile.TemporaryDirectory(prefix="bigs-shard-") as tmp, local_copy(str(uri), tmp) as path:
        try:
            with h5py.File(path, "r") as f:
                return int(f["input_ids"].shape[1])
        except (OSError, KeyError) as exc:
            raise fail(uri, "input_ids", f"cannot read the sequence length ({exc})") from None


def read_attrs(path) -> dict:
    """The file attributes written by bigs.data.samples (settings, seed, k); {} for foreign shards."""
    try:
        with h5py.File(path, "r") as f:
            return {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise fail(path, "file", f"unreadable hdf5 ({exc})") from None


def _check_shapes(path, shapes: dict[str, tuple]) -> tuple[int, int, int]:
    """Check that shapes agree; return (N, L, P)."""
    for name, shape in shapes.items():
        if len(shape) != 2:
            raise fail(path, name, f"expected 2 dimensions (N, L or P), got shape {shape}")
    n, seq_len = shapes["input_ids"]
    preds = shapes["masked_lm_positions"][1]
    for name in SEQ_FIELDS:
        if shapes[name] != (n, seq_len):
            raise fail(path, name, f"shape {shapes[name]} differs from input_ids {(n, seq_len)}")
    for name in PRED_FIELDS:
        if shapes[name] != (n, preds):
            raise fail(path, name, f"shape {shapes[name]}, expected {(n, preds)} (N from input_ids)")
    if preds >= seq_len:
        raise fail(path, "masked_lm_positions", f"P={preds} must be < L={seq_len}")
    return n, seq_len, preds


def validate_shard(
    path, arrays: dict | None = None, *, vocab_size: int = DEFAULT_VOCAB_SIZE, max_seq_length: int | None = None
) -> dict[str, np.ndarray]:
    """Check names, dtypes, shapes and value rules; return the arrays. Raises BigsError naming
    the file and the dataset. `arrays` skips the read when the caller already has them."""
    if arrays is None:
        arrays = read_shard(path)
    for name, dtype in FIELDS.items():
        if name not in arrays:
            raise fail(path, name, "missing dataset")
        if arrays[name].dtype != dtype:
            raise fail(path, name, f"dtype {arrays[name].dtype}, expected {dtype}")
    n, seq_len, _ = _check_shapes(path, {k: arrays[k].shape for k in FIELDS})
    if n == 0:
        raise fail(path, "input_ids", "empty shard (0 instances) — regenerate it")
    if max_seq_length is not None and seq_len != max_seq_length:
        raise fail(path, "input_ids", f"sequence length {seq_len}, expected --max_seq_length {max_seq_length}")
    check_ranges(path, arrays, vocab_size)
    mask, pos, mids = arrays["input_mask"], arrays["masked_lm_positions"], arrays["masked_lm_ids"]
    # input_mask is 1…1 0…0 (real tokens first)
    if (np.diff(mask.astype(np.int16), axis=1) > 0).any():
        raise fail(path, "input_mask", "a 1 follows a 0 (padding must be at the end)")
    real = pos != 0
    # non-zero positions first, then zero padding, strictly ascending
    if (np.diff(real.astype(np.int8), axis=1) > 0).any():
        raise fail(path, "masked_lm_positions", "a position follows 0-padding")
    step = np.diff(pos, axis=1)
    if ((step <= 0) & real[:, 1:]).any():
        row = int(np.argwhere((step <= 0) & real[:, 1:])[0][0])
        raise fail(path, "masked_lm_positions", f"positions not strictly ascending in instance {row}")
    rows = np.nonzero(real)[0]
    if rows.size and (mask[rows, pos[real]] != 1).any():
        raise fail(path, "masked_lm_positions", "a masked position points at padding")
    if (mids[real] == 0).any():
        raise fail(path, "masked_lm_ids", "id 0 ([PAD]) at a masked position")
    if (mids[~real] != 0).any():
        raise fail(path, "masked_lm_ids", "non-zero id where masked_lm_positions is 0-padding")
    return arrays


def check_fits(path, seq_len: int, max_positions: int | None) -> None:
    """A shard the model can read: sequences no longer than its position table (test shards; training
    shards must match --max_seq_length exactly, bigs.data.stream)."""
    if max_positions is not None and seq_len > max_positions:
        raise fail(
            path, "input_ids", f"sequences of length {seq_len}, longer than the model's {max_positions} positions"
        )


def check_ranges(path, arrays: dict, vocab_size: int = DEFAULT_VOCAB_SIZE) -> None:
    """Every value an index: ids < vocab_size, positions < L, mask and segment ids 0/1. The check the
    trainer runs on each shard as it loads it (an out-of-range id is a device-side assert on CUDA)."""
    seq_len = arrays["input_ids"].shape[1]
    for name, hi in (
        ("input_ids", vocab_size),
        ("masked_lm_ids", vocab_size),
        ("input_mask", 2),
        ("segment_ids", 2),
        ("masked_lm_positions", seq_len),
    ):
        a = arrays[name]
        if a.size and (a.min() < 0 or a.max() >= hi):
            bad = (a < 0) | (a >= hi)
            row = int(np.argwhere(bad)[0][0])
            raise fail(path, name, f"value {int(a[bad][0])} out of range [0, {hi}) in instance {row}")


def mlm_labels(input_ids, masked_lm_positions, masked_lm_ids) -> np.ndarray:
    """int64 labels, -100 everywhere except labels[pos] = id for pos != 0 (REFERENCE.md §3).

    Works on one instance ((L,), (P,), (P,)) or a batch ((N, L), (N, P), (N, P))."""
    input_ids = np.asarray(input_ids)
    pos = np.asarray(masked_lm_positions)
    mids = np.asarray(masked_lm_ids)
    labels = np.full(input_ids.shape, IGNORE_INDEX, dtype=np.int64)
    keep = pos != 0  # position 0 is [CLS]: 0 means padding in the original layout
    if input_ids.ndim == 1:
        labels[pos[keep]] = mids[keep]
    else:
        rows = np.nonzero(keep)[0]
        labels[rows, pos[keep]] = mids[keep]
    return labels


def batch_tensors(arrays: dict, idx, fixed_shape: bool = False) -> dict:
    """The model inputs of instances `idx` of a shard's arrays: int64 tensors input_ids,
    attention_mask, token_type_ids (B, L) and labels (B, L) by mlm_labels — the one path from
    shard to batch, for training and evaluation.

    fixed_shape: instead masked_positions (B, P) and labels (B, P) = the (B, L) labels gathered at
    those positions (-100 in padding slots, which point at [CLS]), so a model head gathers exactly P
    rows per sequence and XLA sees no data-dependent shape (bigs/model.py).
    """
    import torch

    ids = arrays["input_ids"][idx]
    pos, labels = (
        arrays["masked_lm_positions"][idx],
        mlm_labels(ids, arrays["masked_lm_positions"][idx], arrays["masked_lm_ids"][idx]),
    )
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
    batch = {
        "input_ids": t(ids),
        "attention_mask": t(arrays["input_mask"][idx]),
        "token_type_ids": t(arrays["segment_ids"][idx]),
    }
    if fixed_shape:
        batch["masked_positions"] = t(pos)
        batch["labels"] = t(np.take_along_axis(labels, pos.astype(np.int64), axis=1))
    else:
        batch["labels"] = t(labels)
    return batch


def _make_shard_dataset():
    import torch

    class ShardDataset(torch.utils.data.Dataset):
        """One local hdf5 shard, held in memory; item = dict of int64 tensors.

        Keys: input_ids, attention_mask, token_type_ids, labels (L,) and the raw
        masked_lm_positions, masked_lm_ids (P,)."""

        def __init__(self, path, vocab_size: int = DEFAULT_VOCAB_SIZE, validate: bool = True):
            self.path = Path(path)
            arrays = read_shard(self.path)
            if validate:
                validate_shard(self.path, arrays, vocab_size=vocab_size)
            else:
                _check_shapes(self.path, {k: arrays[k].shape for k in FIELDS})
            labels = mlm_labels(arrays["input_ids"], arrays["masked_lm_positions"], arrays["masked_lm_ids"])
            # Convert once: torch.from_numpy on int64 copies is cheap to index per item.
            t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
            self.tensors = {
                "input_ids": t(arrays["input_ids"]),
                "attention_mask": t(arrays["input_mask"]),
                "token_type_ids": t(arrays["segment_ids"]),
                "labels": torch.from_numpy(labels),
                "masked_lm_positions": t(arrays["masked_lm_positions"]),
                "masked_lm_ids": t(arrays["masked_lm_ids"]),
            }

        def __len__(self) -> int:
            return self.tensors["input_ids"].shape[0]

        def __getitem__(self, i: int) -> dict:
            return {k: v[i] for k, v in self.tensors.items()}

    ShardDataset.__module__, ShardDataset.__qualname__ = __name__, "ShardDataset"
    return ShardDataset


_LAZY: dict = {}


def __getattr__(name):
    # ShardDataset needs torch; build it on first use so the data CLIs start without importing torch.
    if name == "ShardDataset":
        if name not in _LAZY:
            _LAZY[name] = _make_shard_dataset()
        return _LAZY[name]
    raise AttributeError(name)


def shard_number(name: str) -> int:
    """k in `train_shard_{k}.hdf5` (any trailing number); -1 if none. Used for natural sort."""
    m = re.search(r"(\d+)\D*$", Path(name.rsplit("/", 1)[-1]).stem)
    return int(m.group(1)) if m else -1


def is_shard_name(name: str, split: str) -> bool:
    base = Path(name).name if "://" not in name else name.rsplit("/", 1)[-1]
    return split in base and base.endswith(SHARD_SUFFIXES) and not base.startswith(".")


def list_shards(dataset_path: str | os.PathLike, split: str) -> list[str]:
    """Shard files of `split` ("train" or "test", told by the file name) under a local dir or a
    gs://bucket/prefix, in natural order of k. Raises BigsError when there are none."""
    if split not in ("train", "test"):
        raise fail(dataset_path, "split", f"{split!r} must be 'train' or 'test'")
    dataset_path = str(dataset_path)
    if dataset_path.startswith("gs://"):
        from bigs.data.storage import list_files

        names = [f.uri for f in list_files(dataset_path)]
    else:
        d = Path(dataset_path)
        if not d.is_dir():
            raise fail(
                d,
                "--dataset_path",
                "no such directory — make shards with python -m bigs.data.samples "
                "or fetch them with python -m bigs.data.fetch",
            )
        names = [str(p) for p in d.iterdir() if p.is_file()]
    found = sorted((n for n in names if is_shard_name(n, split)), key=lambda n: (shard_number(n), n))
    if not found:
        raise fail(
            dataset_path,
            "--dataset_path",
            f"no {split} shards (*{split}*.hdf5) — make them with "
            "python -m bigs.data.samples or fetch them with python -m bigs.data.fetch",
        )
    return found
