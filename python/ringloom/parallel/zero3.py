"""ZeRO-3 (Rajbhandari et al. 2020, stage 3; FSDP, Zhao et al. 2023): parameters sharded
over the data-parallel ranks and all-gathered per layer just before the layer runs.

Each layer's sharded parameters form one bucket of the ZeRO GradReducer (``units``), so
one unit is gathered, used, freed and reduce-scattered together. Between uses a parameter
has no memory (core/storage_swap.h); :meth:`ParameterGather.use` (installed as the chunk
models' ``layer_hooks``, so every layer call of Model.stage_* and of the engine goes
through it) all-gathers the unit's compute-dtype shards (ShardedAdamW.compute_shards) into
one buffer, points each parameter's storage at its piece, starts the all-gather of the
next layer in the direction of travel (forward: the next block, backward: the previous
one) so that it overlaps this layer's compute, and frees the unit when the layer returns.
A tied head without the embedding beside it needs the embedding matrix too: the head's
calls gather the embedding's unit as well.

Collectives are issued in the same order on every rank of the dp group because every rank
runs the same action list. Each micro-batch's forward and backward gathers its layers
again (no parameter stays gathered between layer calls): with M micro-batches a step
all-gathers each parameter 2M times.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from .. import _C
from .data_parallel import GradReducer, flat_view
from .zero import ShardedAdamW


class ParameterGather:
    def __init__(self, sharded: ShardedAdamW, chunks: Sequence[Any], layer_units: Sequence[Sequence[list[int]]]):
        """``layer_units[c][li]``: the reducer buckets layer ``li`` of chunk model ``c`` needs."""
        self.sharded, self.reducer = sharded, sharded.reducer
        self.group = self.reducer.group
        self.chunks = list(chunks)
        self.layer_units = [list(map(list, u)) for u in layer_units]
        self._model_index = {id(m): c for c, m in enumerate(self.chunks)}
        n = len(self.reducer.buckets)
        self._buf: list[Any] = [None] * n      # gathered [padded] buffer of a unit, None when freed
        self._work: list[Any] = [None] * n     # all-gather in flight
        for b in self.reducer.buckets:
            for _, p in b.params:
                p.value.release_storage_()
        for m in self.chunks:
            m.layer_hooks = self

    # ---------------------------------------------------------------- one unit
    def _start(self, i: int) -> None:
        if self._buf[i] is not None or self._work[i] is not None:
            return
        shard = self.sharded.compute_shards[i]
        b = self.reducer.buckets[i]
        buf = _C.empty([b.padded], shard.dtype, shard.device)
        self._work[i] = (buf, self.group.all_gather(buf, shard, async_op=True))

    def _acquire(self, i: int) -> None:
        self._start(i)
        if self._work[i] is not None:
            buf, work = self._work[i]
            work.wait()
            self._work[i] = None
            b = self.reducer.buckets[i]
            for (_, p), off in zip(b.params, b.offsets):
                p.value.bind_storage_(flat_view(buf, off, p.value.numel(), p.value.shape))
            self._buf[i] = buf

    def _free(self, i: int) -> None:
        if self._buf[i] is None:
            return
        for _, p in self.reducer.buckets[i].params:
            p.value.release_storage_()
        self._buf[i] = None

    # ---------------------------------------------------------------- per layer call
    @contextlib.contextmanager
    def use(self, model: Any, index: int, direction: int) -> Iterator[None]:
        units = self.layer_units[self._model_index[id(model)]]
        for i in units[index]:
            self._acquire(i)
        nxt = index + direction
        if 0 <= nxt < len(units):
            for i in units[nxt]:
                self._start(i)
        try:
            yield
        finally:
            for i in units[index]:
                self._free(i)

    @contextlib.contextmanager
    def gathered_all(self) -> Iterator[None]:
        """Every unit gathered (checkpoints, evaluation of the whole stage); a collective."""
        for i in range(len(self._buf)):
            self._acquire(i)
        try:
            yield
        finally:
            for i in range(len(self._buf)):
                self._free(i)

    def check_idle(self) -> None:
        """After a step: nothing gathered and nothing in flight (a stale gathered copy would
        miss the update)."""
        left = [i for i in range(len(self._buf)) if self._buf[i] is not None or self._work[i] is not None]
        if left:
            raise RuntimeError(f"ParameterGather: units {left} still gathered after the step")


def layer_units(chunks: Sequence[Any], reducer: GradReducer, tied_head_needs_embedding: bool) -> list[list[list[int]]]:
    """Per chunk model, per layer of layers(): the indices of the reducer buckets holding
    that layer's parameters (plus the embedding's for a tied head on the same model)."""
    out = []
    for m in chunks:
        per_layer = []
        for layer in m.layers():
            idx = sorted({reducer.bucket_index(q) for q in layer.params()} - {None})
            per_layer.append(idx)
        if tied_head_needs_embedding and m.head is not None and m.embedding is not None:
            per_layer[-1] = sorted(set(per_layer[-1]) | set(per_layer[0]))
        out.append(per_layer)
    return out
