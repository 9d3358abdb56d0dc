"""ZeRO-1 (Rajbhandari et al. 2020, stage 1): AdamW state sharded over the data-parallel
ranks.

Gradients arrive reduce-scattered per bucket (GradReducer in "reduce_scatter" mode): rank k
holds the summed gradient of elements [k L, (k+1) L) of every bucket's flat buffer. This
optimizer keeps fp32 master weights, m and v for exactly those elements, updates them with
the fused ops.adamw_step (on views of the flat shard buffers, one view per parameter piece,
so each piece gets its parameter's weight decay), then all-gathers the updated shards and
copies them into the parameters. Optimizer memory per rank drops from 12 bytes per parameter
(masters, m, v) to 12 / dp.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _C
from .data_parallel import GradReducer, flat_view

ops = _C.ops


class ShardedAdamW:
    def __init__(self, reducer: GradReducer, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.1, max_grad_norm: float = 0.0):
        if reducer.mode != "reduce_scatter":
            raise ValueError("ShardedAdamW needs a GradReducer in reduce_scatter mode")
        self.reducer, self.group = reducer, reducer.group
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.weight_decay, self.max_grad_norm = float(weight_decay), float(max_grad_norm)
        self.step_count = 0
        n, k = self.group.size, self.group.rank
        self._masters, self._m, self._v, self._gathered = [], [], [], []
        self._pieces: list[tuple[Any, Any, Any, Any, float]] = []  # (master, grad, m, v, wd) views
        for b in reducer.buckets:
            L = b.padded // n
            lo, hi = k * L, (k + 1) * L
            device = b.flat.device
            master = _C.zeros([L], "float32", device)
            m = _C.zeros([L], "float32", device)
            v = _C.zeros([L], "float32", device)
            self._masters.append(master)
            self._m.append(m)
            self._v.append(v)
            self._gathered.append(_C.zeros([b.padded], "float32", device))
            for (_, p), off in zip(b.params, b.offsets):
                a, e = max(lo, off), min(hi, off + p.value.numel())
                if a >= e:
                    continue
                # This rank's piece of p: flat [a, e) = p's elements [a - off, e - off).
                value = p.value if p.value.dtype == _C.DType.float32 else p.value.to(_C.DType.float32)
                master.narrow0(a - lo, e - a).copy_(value.reshape(p.value.numel()).narrow0(a - off, e - a))
                wd = self.weight_decay if p.decay else 0.0
                self._pieces.append((master.narrow0(a - lo, e - a), b.shard.narrow0(a - lo, e - a),
                                     m.narrow0(a - lo, e - a), v.narrow0(a - lo, e - a), wd))

    def local_sq_norm(self) -> float:
        """Sum of squares of this rank's gradient shard (padding is zero)."""
        if not self.reducer.buckets:
            return 0.0
        n = float(np.asarray(ops.grad_norm([b.shard for b in self.reducer.buckets]).numpy()).reshape(-1)[0])
        return n * n

    def step(self, lr: float | None = None, grad_norm: Any = None) -> None:
        """Updates this rank's shard, then all-gathers every bucket's parameters."""
        self.step_count += 1
        if self._pieces:
            ops.adamw_step([x[0] for x in self._pieces], [x[1] for x in self._pieces], [x[2] for x in self._pieces],
                           [x[3] for x in self._pieces], [x[4] for x in self._pieces],
                           lr=self.lr if lr is None else lr, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                           step=self.step_count, max_norm=self.max_grad_norm,
                           grad_norm=grad_norm if self.max_grad_norm > 0 else None)
        works = [self.group.all_gather(g, mst, async_op=True) for g, mst in zip(self._gathered, self._masters)]
        for b, g, w in zip(self.reducer.buckets, self._gathered, works):
            w.wait()
            for (_, p), off in zip(b.params, b.offsets):
                src = flat_view(g, off, p.value.numel(), p.value.shape)
                p.value.copy_(src if p.value.dtype == _C.DType.float32 else src.to(p.value.dtype))
