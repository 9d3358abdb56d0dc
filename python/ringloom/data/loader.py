"""Batches of token windows from memory-mapped shards, identical under any data-parallel layout.

Training windows. A window is T+1 consecutive tokens (inputs = the first T, targets = the
last T). Each epoch e draws, from ``numpy.random.default_rng([seed, e])``:
  1. per shard, an offset o in [0, T) (bounded by the shard's length), and windows start at
     o, o+T, o+2T, ... (consecutive windows share one token: the last target of one is the
     first input of the next), so successive epochs see the text cut at different places;
  2. a permutation of all windows of all shards.
The windows of all epochs, in order, form one stream; global batch k is stream windows
[k*B, (k+1)*B). That depends only on (data, seed, T, B) — never on the process layout.

Distributed sampling. A loader for (rank r, world w) returns rows [r*B/w, (r+1)*B/w) of that
same global batch, so dp=1, 2, 3, ... train on exactly the same data and a dp run can be
compared step by step with a single-process one. Every rank computes the (cheap) batch plan
and reads only its own rows.

Resume. ``state_dict()`` is the stream position (epoch, index); restoring it continues with
the very next batch.

Validation windows are fixed: non-overlapping windows spread evenly over the val shard(s).
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence, Union

import numpy as np

from .shards import read_shard

ShardLike = Union[str, os.PathLike, np.ndarray]


def _open_shards(shards: ShardLike | Sequence[ShardLike]) -> tuple[list[np.ndarray], list[str]]:
    if isinstance(shards, (str, os.PathLike, np.ndarray)):
        shards = [shards]
    arrays, names = [], []
    for i, s in enumerate(shards):
        if isinstance(s, np.ndarray):
            if s.ndim != 1:
                raise ValueError(f"token array {i} must be 1-D, got shape {s.shape}")
            arrays.append(s)
            names.append(f"token array {i}")
        else:
            arrays.append(read_shard(os.fspath(s)))
            names.append(os.fspath(s))
    if not arrays:
        raise ValueError("no token shards given")
    return arrays, names


def _check_layout(batch_size: int, rank: int, world: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of size {world}")
    if batch_size % world:
        raise ValueError(f"global batch size {batch_size} is not divisible by the data-parallel "
                         f"world size {world}")
    return batch_size // world


def _too_short(names: Sequence[str], arrays: Sequence[np.ndarray], seq_len: int) -> ValueError:
    sizes = ", ".join(f"{n}: {len(a)} tokens" for n, a in zip(names, arrays))
    return ValueError(f"token data too short for seq_len {seq_len}: a window needs "
                      f"seq_len + 1 = {seq_len + 1} tokens ({sizes})")


def _gather(arrays: Sequence[np.ndarray], shard_idx: np.ndarray, starts: np.ndarray,
            seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows -> (inputs, targets), int32 [len(starts), T] each."""
    rows = np.empty((len(starts), seq_len + 1), dtype=np.int32)
    for j, (s, o) in enumerate(zip(shard_idx.tolist(), starts.tolist())):
        rows[j] = arrays[s][o:o + seq_len + 1]
    return rows[:, :-1], rows[:, 1:]


def local_rows(batch_size: int, rank: int, world: int) -> slice:
    """The rows of a global batch that data-parallel rank ``rank`` of ``world`` trains on."""
    b = _check_layout(batch_size, rank, world)
    return slice(rank * b, (rank + 1) * b)


def split_micro_batches(inputs: np.ndarray, targets: np.ndarray, n: int
                        ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a [b, T] batch into ``n`` micro-batches of b/n rows (views, in order)."""
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {inputs.shape} and targets {targets.shape} differ in shape")
    b = inputs.shape[0]
    if n < 1 or b % n:
        raise ValueError(f"a batch of {b} rows cannot be split into {n} equal micro-batches")
    m = b // n
    return [(inputs[i * m:(i + 1) * m], targets[i * m:(i + 1) * m]) for i in range(n)]


class TokenLoader:
    """Random training windows; see the module docstring for the sampling rule.

    batch_size is the GLOBAL batch B; ``next_batch()`` returns this rank's B/world rows as
    (inputs int32 [B/world, T], targets int32 [B/world, T]), targets = inputs shifted by one.
    """

    def __init__(self, shards: ShardLike | Sequence[ShardLike], batch_size: int, seq_len: int,
                 seed: int = 0, rank: int = 0, world: int = 1):
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.local_batch = _check_layout(batch_size, rank, world)
        self.arrays, self.names = _open_shards(shards)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, int(seed)
        self.rank, self.world = rank, world
        self._lengths = [len(a) for a in self.arrays]
        if all(n < seq_len + 1 for n in self._lengths):
            raise _too_short(self.names, self.arrays, seq_len)
        self.epoch, self.index = 0, 0
        self._plan_epoch = -1

    # ---- the stream ---------------------------------------------------------------------
    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, start) of every window of ``epoch``, in stream order."""
        if self._plan_epoch == epoch:
            return self._shard_of, self._start_of
        T = self.seq_len
        g = np.random.default_rng([self.seed, epoch])
        offsets, counts = [], []
        for n in self._lengths:
            # windows at o + kT need o + kT + T + 1 <= n; keep o < T and leave >= 1 window
            max_off = min(T - 1, n - T - 1)
            o = int(g.integers(0, max_off + 1)) if max_off >= 0 else 0
            offsets.append(o)
            counts.append(max(0, (n - 1 - o) // T))
        perm = g.permutation(sum(counts))
        bounds = np.cumsum(counts)
        shard = np.searchsorted(bounds, perm, side="right")
        local = perm - (bounds - np.asarray(counts))[shard]
        self._shard_of = shard
        self._start_of = np.asarray(offsets)[shard] + local * T
        self._plan_epoch = epoch
        return self._shard_of, self._start_of

    def _take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``count`` windows of the stream; advances the position."""
        shards, starts = [], []
        while count:
            shard_of, start_of = self._plan(self.epoch)
            k = min(count, len(start_of) - self.index)
            shards.append(shard_of[self.index:self.index + k])
            starts.append(start_of[self.index:self.index + k])
            self.index += k
            count -= k
            if self.index == len(start_of):
                self.epoch, self.index = self.epoch + 1, 0
        return np.concatenate(shards), np.concatenate(starts)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        shard_idx, starts = self._take(self.batch_size)
        mine = local_rows(self.batch_size, self.rank, self.world)
        return _gather(self.arrays, shard_idx[mine], starts[mine], self.seq_len)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.next_batch()

    @property
    def windows_per_epoch(self) -> int:
        return len(self._plan(self.epoch)[1])

    # ---- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed,
                "seq_len": self.seq_len, "num_tokens": list(self._lengths)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position. The data, seed and seq_len must be the ones the
        state was saved with (ValueError otherwise); batch size and layout may differ."""
        for key, mine in (("seed", self.seed), ("seq_len", self.seq_len),
                          ("num_tokens", list(self._lengths))):
            theirs = state.get(key)
            if isinstance(theirs, np.ndarray):
                theirs = theirs.tolist()
            if theirs != mine:
                raise ValueError(f"cannot resume the data loader: saved {key} {theirs} differs "
                                 f"from this loader's {mine}")
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or not 0 <= index < len(self._plan(epoch)[1]):
            raise ValueError(f"cannot resume the data loader: position (epoch {epoch}, index "
                             f"{index}) is outside the data")
        self.epoch, self.index = epoch, index


class ValLoader:
    """Fixed evaluation windows: the same batches on every call, in the same order.

    Non-overlapping windows (stride T) are laid over the val shard(s); ``num_batches`` global
    batches of B windows are spread evenly over them. With fewer than num_batches * B windows
    the count drops to what fits (at least one batch; windows repeat only if the data holds
    fewer than B). Iterating yields this rank's rows (inputs, targets), int32 [B/world, T].
    """

    def __init__(self, shards: ShardLike | Sequence[ShardLike], batch_size: int, seq_len: int,
                 num_batches: int, rank: int = 0, world: int = 1):
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        if num_batches < 1:
            raise ValueError(f"num_batches must be positive, got {num_batches}")
        self.local_batch = _check_layout(batch_size, rank, world)
        self.arrays, self.names = _open_shards(shards)
        self.batch_size, self.seq_len, self.rank, self.world = batch_size, seq_len, rank, world
        counts = [max(0, (len(a) - 1) // seq_len) for a in self.arrays]
        total = sum(counts)
        if total == 0:
            raise _too_short(self.names, self.arrays, seq_len)
        self.num_batches = min(num_batches, max(1, total // batch_size))
        needed = self.num_batches * batch_size
        window = (np.arange(needed) * total) // needed
        bounds = np.cumsum(counts)
        self._shard_of = np.searchsorted(bounds, window, side="right")
        self._start_of = (window - (bounds - np.asarray(counts))[self._shard_of]) * seq_len

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        B = self.batch_size
        mine = local_rows(B, self.rank, self.world)
        for k in range(self.num_batches):
            shard = self._shard_of[k * B:(k + 1) * B][mine]
            start = self._start_of[k * B:(k + 1) * B][mine]
            yield _gather(self.arrays, shard, start, self.seq_len)
