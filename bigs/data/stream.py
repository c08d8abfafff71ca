"""The training data stream: this rank's micro-batches over hdf5 shards (bigs/data/format.py),
resumable from (epoch, shard, offset); gs:// shards are fetched, used and deleted.

    stream = TrainStream(shards, per_device=8, rank=0, world=1, seed=42)
    for batch in stream: ...          # dict of int64 tensors (bigs.data.format.batch_tensors)
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bigs.data.format import DEFAULT_VOCAB_SIZE, batch_tensors, check_ranges, read_shard
from bigs.errors import BigsError


class TrainStream:
    """This rank's micro-batches, resumable from (epoch, shard, offset).

    Shard order is a seeded permutation per epoch; within a shard a seeded permutation cut into
    global batches of `per_device * world * accumulation` samples (drop_last), each split into
    `accumulation` global micro-batches of which rank r takes slice r. So every sample is seen by
    one rank only, and a run's data is the same for any split of the same global batch over devices
    and accumulation steps. The stream ends after `max_visits` shard visits (epoch × shards + shard
    index), the original's --max_train_shards (REFERENCE.md §5d); None = endless.
    Every shard's ids and positions are range-checked as it is loaded (ids < vocab_size, positions <
    L): a bad one stops the run with exit 2 naming the file and field, before any step on it (an
    out-of-range id would otherwise be an IndexError on CPU and a device-side assert that kills the
    CUDA context).
    with_position: each batch also carries "position", the stream's (epoch, shard, offset) after it
    (a tuple, left on the host by a device loader): what a checkpoint must record when that loader
    reads batches ahead ([xla]).
    """

    def __init__(
        self,
        shards,
        *,
        per_device: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        accumulation: int = 1,
        position=None,
        fixed_shape: bool = False,
        max_seq_length: int | None = None,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        max_visits: int | None = None,
        cache_dir=None,
        with_position: bool = False,
    ):
        self.shards, self.per_device, self.rank, self.world, self.seed = shards, per_device, rank, world, seed
        self.accumulation, self.max_visits = accumulation, max_visits
        self.fixed_shape, self.max_seq_length, self.vocab_size = fixed_shape, max_seq_length, vocab_size
        self.cache_dir, self.with_position = cache_dir, with_position
        self.epoch, self.shard_i, self.offset = position or (0, 0, 0)
        self.pool = ThreadPoolExecutor(max_workers=1)  # prefetches the next shard
        self._next = None

    def position(self) -> tuple[int, int, int]:
        return self.epoch, self.shard_i, self.offset

    def _order(self, epoch):
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))

    def _load(self, epoch, shard_i):
        from bigs.data.storage import local_copy

        path = self.shards[self._order(epoch)[shard_i]]
        with local_copy(path, self.cache_dir) as local:  # gs://: download, read, delete (small TPU-VM disks)
            arrays = read_shard(local)
        L = arrays["input_ids"].shape[1]
        if self.max_seq_length is not None and L != self.max_seq_length:
            raise BigsError(
                f"{path}: input_ids: sequences of length {L}, but --max_seq_length is "
                f"{self.max_seq_length} (the model's max_position_embeddings); train with "
                f"--max_seq_length {L} or rebuild the samples"
            )
        check_ranges(path, arrays, self.vocab_size)
        return path, arrays

    @staticmethod
    def regroup(position, old_group: int, new_group: int, where: str):
        """A saved (epoch, shard, offset) for a stream of another global micro-batch (per-device batch
        × devices: the unit `offset` counts): the same point of the data, counted in `new_group`s. A
        point that is not a whole number of them (the global batch changed) is refused, naming `where`."""
        epoch, shard_i, offset = position
        samples = offset * old_group
        if samples % new_group:
            raise BigsError(
                f"{where}: data_position: {samples} samples into the shard, not a whole number of global "
                f"micro-batches of {new_group} (per-device batch × devices); resume with the global batch it was "
                "saved with"
            )
        return epoch, shard_i, samples // new_group

    def visits(self) -> int:
        """Shards started before the current one (the original's shard counter)."""
        return self.epoch * len(self.shards) + self.shard_i

    def _advance(self, epoch, shard_i):
        shard_i += 1
        if shard_i == len(self.shards):
            return epoch + 1, 0
        return epoch, shard_i

    def _prefetch_next(self) -> None:
        """Start loading the shard after the current one, unless the visit limit ends the stream first."""
        nxt = self._advance(self.epoch, self.shard_i)
        if self.max_visits is None or nxt[0] * len(self.shards) + nxt[1] < self.max_visits:
            self._next = self.pool.submit(self._load, *nxt)
        else:
            self._next = None

    def __iter__(self):
        G = self.per_device * self.world  # one global micro-batch; `offset` counts them within a shard
        A = self.accumulation
        batches_this_epoch = int(self.shard_i > 0 or self.offset > 0)  # resumed mid-epoch: it had batches
        while self.max_visits is None or self.visits() < self.max_visits:
            if self._next is None:
                self._next = self.pool.submit(self._load, self.epoch, self.shard_i)
            path, arrays = self._next.result()
            self._prefetch_next()
            n = len(arrays["input_ids"])
            perm = np.random.default_rng([self.seed, self.epoch, self.shard_i]).permutation(n)
            if n < G * A:
                print(f"warning: {path}: {n} instances < global batch {G * A}; shard skipped", file=sys.stderr)
            while (self.offset // A + 1) * G * A <= n:  # the whole global batch fits (drop_last)
                lo = self.offset * G + self.rank * self.per_device
                self.offset += 1
                batches_this_epoch += 1
                batch = batch_tensors(arrays, np.sort(perm[lo : lo + self.per_device]), self.fixed_shape)
                if self.with_position:  # a plain tuple: a device loader moves tensors only
                    batch["position"] = self.position()
                yield batch
            self.epoch, self.shard_i = self._advance(self.epoch, self.shard_i)
            self.offset = 0
            if self.shard_i == 0:  # an epoch ended
                if batches_this_epoch == 0:
                    raise BigsError(
                        f"{path}: input_ids: every train shard has fewer instances than one global "
                        f"batch ({G * A} = per-device batch × devices × accumulation); lower "
                        "--per_device_train_batch_size or --global_batch_size, or make bigger shards"
                    )
                batches_this_epoch = 0
