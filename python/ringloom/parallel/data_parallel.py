"""Data parallel gradient reduction: buckets launched while backward is still running.

The parameters of a rank are laid out in the order their gradients become final (the
layers in reverse, chunk by chunk as the schedule finishes them) and cut into buckets of
about ``bucket_bytes``. After the last micro-batch's weight gradient of a layer, the
executor calls :meth:`GradReducer.layer_done`; once every parameter of a bucket is final the
bucket's flat fp32 buffer (which its gradients view) goes to its collective, issued
asynchronously, so the reduction of late layers overlaps the backward of early ones.
Buckets are issued strictly in index order (all ranks of the group must issue collectives
in the same order). Nothing is communicated for the earlier micro-batches of a step:
gradient accumulation is free.

Two modes:
  "all_reduce"      sum over the group, copied back into each Param.grad (plain DP)
  "reduce_scatter"  ZeRO: each bucket is padded to a multiple of the group size; rank k
                    keeps the reduced segment [k L, (k+1) L) in ``bucket.shard`` (L = padded
                    size / group size) and its own optimizer updates only that segment.

Without ``release_grads`` the flat buffers are persistent and every Param.grad is a view of
its bucket's buffer (``bind_storage_``): backward accumulates straight into the buffer the
collective reduces, so gradients take their memory once and nothing is copied in or out.

``release_grads`` (ZeRO-2 and 3, reduce_scatter mode): a bucket's flat buffer exists only
while its collective runs, and its parameters' gradients are freed as soon as they are
copied into it; :meth:`reset` gives them fresh zeroed memory before the next step. So full
gradients live only between a layer's first backward of the step and its bucket's launch.
``units`` (ZeRO-3): explicit buckets, one per layer, so a bucket is also the unit whose
parameters are gathered together.

The loss is scaled by 1 / (targets in the global batch) before backward, so the sum over
ranks is exactly the gradient of the global mean loss (as one process on the whole batch).

``compression`` (all_reduce mode; compression.py: bf16, topk:RATIO, powersgd:RANK, qsgd:S) replaces
each bucket's fp32 all-reduce by a compressed exchange. Compressed buckets are reduced in
:meth:`finish`, in bucket order, after backward (no overlap: compressing after backward is
the cost these modes pay). ``bytes_last_step`` is the payload this rank handed to the
collectives in the last step (4 bytes per element uncompressed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import _C
from .compression import Compressor, parse_compression

DEFAULT_BUCKET_MB = 25.0


@dataclass
class Bucket:
    params: list[tuple[str, Any]]   # (name, Param)
    offsets: list[int]              # element offset of each param in the flat buffer
    numel: int                      # sum of the params' sizes
    padded: int                     # numel rounded up to a multiple of the group size
    flat: Any                       # fp32 Tensor [padded] (with release_grads: only while reduced)
    shard: Any = None               # ZeRO: fp32 Tensor [padded / group size]
    work: Any = None
    pending: int = 0                # params not yet final this step
    keys: list[int] = field(default_factory=list)


def _key(p: Any) -> int:
    return p.value.storage_id()   # stable while ZeRO-3 releases and rebinds the memory


def flat_view(t: Any, start: int, length: int, shape: Sequence[int]) -> Any:
    """The elements [start, start + length) of a 1-D tensor, viewed as ``shape``."""
    return t.narrow0(start, length).reshape(*shape)


class GradReducer:
    """Bucketed gradient reduction over ``group`` for the parameters ``ordered`` (name,
    Param) given in the order they become final; see the module docstring."""

    def __init__(self, ordered: Sequence[tuple[str, Any]], group: Any, bucket_bytes: float = DEFAULT_BUCKET_MB * 2**20,
                 mode: str = "all_reduce", trace: Any = None, compression: "str | Compressor | None" = None,
                 release_grads: bool = False, units: Sequence[Sequence[tuple[str, Any]]] | None = None):
        if mode not in ("all_reduce", "reduce_scatter"):
            raise ValueError(f"GradReducer: mode must be all_reduce or reduce_scatter, got {mode!r}")
        self.compressor = parse_compression(compression)
        if self.compressor is not None and mode != "all_reduce":
            raise ValueError(f"GradReducer: compression {self.compressor} needs mode all_reduce (not ZeRO's "
                             f"reduce_scatter)")
        if release_grads and mode != "reduce_scatter":
            raise ValueError("GradReducer: release_grads needs mode reduce_scatter (each rank keeps a shard)")
        self.release_grads = bool(release_grads)
        self.bytes_last_step = 0
        if bucket_bytes <= 0:
            raise ValueError(f"GradReducer: bucket size must be positive, got {bucket_bytes} bytes")
        self.group, self.mode, self.trace = group, mode, trace
        n = group.size
        self.buckets: list[Bucket] = []
        self._bucket_of: dict[int, int] = {}
        cur: list[tuple[str, Any]] = []
        size = 0
        limit = max(1, int(bucket_bytes // 4))
        if units is not None:
            for unit in units:
                if unit:
                    self._add(list(unit), n)
        else:
            for name, p in ordered:
                cur.append((name, p))
                size += p.grad.numel()
                if size >= limit:
                    self._add(cur, n)
                    cur, size = [], 0
            if cur:
                self._add(cur, n)
        self._next = 0

    def _add(self, params: list[tuple[str, Any]], n: int) -> None:
        offsets, off = [], 0
        for _, p in params:
            offsets.append(off)
            off += p.grad.numel()
        padded = -(-off // n) * n
        device = params[0][1].grad.device
        flat = None if self.release_grads else _C.zeros([padded], "float32", device)
        if flat is not None:   # the gradients live in the bucket from now on
            for (_, p), o in zip(params, offsets):
                p.grad.bind_storage_(flat_view(flat, o, p.grad.numel(), p.grad.shape))
        b = Bucket(params, offsets, off, padded, flat)
        if self.mode == "reduce_scatter":
            b.shard = _C.zeros([padded // n], "float32", device)
        b.keys = [_key(p) for _, p in params]
        for k in b.keys:
            if k in self._bucket_of:
                raise ValueError("GradReducer: a parameter is listed twice")
            self._bucket_of[k] = len(self.buckets)
        self.buckets.append(b)

    def bucket_index(self, p: Any) -> int | None:
        """The bucket holding Param ``p``, or None when this reducer does not reduce it."""
        return self._bucket_of.get(_key(p))

    # ---------------------------------------------------------------- per step
    def reset(self, step: int = 0) -> None:
        """Before a step; ``step`` (steps taken before it) seeds compressors that draw random
        numbers (QSGD)."""
        if self.compressor is not None:
            self.compressor.begin_step(step)
        for b in self.buckets:
            b.pending, b.work = len(b.params), None
            if self.release_grads:
                for _, p in b.params:
                    if not p.grad.has_memory:
                        p.grad.allocate_storage_()
                        p.grad.zero_()
        self._next = 0
        self.bytes_last_step = 0

    def params_done(self, params: Sequence[Any]) -> None:
        """These Params' gradients are final for this step; issue whatever buckets are ready."""
        for p in params:
            i = self._bucket_of.get(_key(p))
            if i is not None:
                self.buckets[i].pending -= 1
        while self._next < len(self.buckets) and self.buckets[self._next].pending <= 0:
            self._launch(self.buckets[self._next])
            self._next += 1

    def _launch(self, b: Bucket) -> None:
        if self.release_grads:
            b.flat = _C.empty([b.padded], "float32", b.shard.device)
            if b.padded > b.numel:
                b.flat.narrow0(b.numel, b.padded - b.numel).zero_()
            for (_, p), off in zip(b.params, b.offsets):
                flat_view(b.flat, off, p.grad.numel(), p.grad.shape).copy_(p.grad)
                p.grad.release_storage_()
        if self.compressor is not None:
            return   # reduced in finish()
        if self.trace is not None:
            self.trace.instant(f"{self.mode} bucket {self.buckets.index(b)}", "comm")
        self.bytes_last_step += 4 * b.padded
        if self.mode == "all_reduce":
            b.work = self.group.all_reduce(b.flat, op="sum", async_op=True)
        else:
            b.work = self.group.reduce_scatter(b.shard, b.flat, op="sum", async_op=True)

    def finish(self) -> None:
        """Issues the remaining buckets (in order) and waits for all; in all_reduce mode the
        parameters' gradients (views of the buffers) then hold the sums."""
        while self._next < len(self.buckets):
            self._launch(self.buckets[self._next])
            self._next += 1
        for i, b in enumerate(self.buckets):
            span = self.trace.span(f"wait {self.mode}", "comm") if self.trace is not None else None
            if self.compressor is not None:
                layout = [(off, tuple(p.grad.shape)) for (_, p), off in zip(b.params, b.offsets)]
                self.bytes_last_step += self.compressor.reduce(i, b.flat, b.numel, layout, self.group)
            else:
                b.work.wait()
            if span is not None:
                span.close()
            if self.release_grads:
                b.flat = None


def broadcast_parameters(named: Sequence[tuple[str, Any]], group: Any, src: int = 0) -> None:
    """Every rank of ``group`` gets rank ``src``'s parameter values (one broadcast each)."""
    if group is None or group.size == 1:
        return
    for _, p in named:
        group.broadcast(p.value, src)
