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

    # ---------------------------------------------------------------- checkpoints
    def _gather(self, shards: list[Any]) -> list[np.ndarray]:
        """Every bucket's [padded] buffer from the ranks' [L] shards, as host arrays."""
        outs = [_C.zeros([b.padded], "float32", b.flat.device) for b in self.reducer.buckets]
        works = [self.group.all_gather(o, s, async_op=True) for o, s in zip(outs, shards)]
        for w in works:
            w.wait()
        return [np.array(o.cpu().numpy(), copy=True) for o in outs]

    def _mixed(self) -> bool:
        return any(p.value.dtype != _C.DType.float32 for b in self.reducer.buckets for _, p in b.params)

    def state_dict(self) -> dict[str, Any]:
        """The whole, unsharded state by parameter name, as AdamW.state_dict() has it (m.<name>,
        v.<name>, master.<name> when the parameters are not fp32, "step"), so a checkpoint
        does not depend on the dp size. A collective: every rank of the group calls it."""
        state: dict[str, Any] = {"step": self.step_count}
        kinds = [("m", self._m), ("v", self._v)] + ([("master", self._masters)] if self._mixed() else [])
        for kind, shards in kinds:
            for b, flat in zip(self.reducer.buckets, self._gather(shards)):
                for (name, p), off in zip(b.params, b.offsets):
                    state[f"{kind}.{name}"] = flat[off:off + p.value.numel()].reshape(tuple(p.value.shape))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take this rank's shard of a state_dict() (saved under any dp size). Load the model
        weights first: without master.<name> entries the masters are refreshed from them."""
        n, k = self.group.size, self.group.rank
        for b, master, m, v in zip(self.reducer.buckets, self._masters, self._m, self._v):
            L = b.padded // n
            lo, hi = k * L, (k + 1) * L
            for (name, p), off in zip(b.params, b.offsets):
                a, e = max(lo, off), min(hi, off + p.value.numel())
                if a >= e:
                    continue
                for key, dst in ((f"m.{name}", m), (f"v.{name}", v), (f"master.{name}", master)):
                    if key in state:
                        src = np.ascontiguousarray(np.asarray(state[key], np.float32).reshape(-1)[a - off:e - off])
                    elif key.startswith("master."):
                        value = p.value if p.value.dtype == _C.DType.float32 else p.value.to(_C.DType.float32)
                        dst.narrow0(a - lo, e - a).copy_(value.reshape(p.value.numel()).narrow0(a - off, e - a))
                        continue
                    else:
                        raise ValueError(f"ShardedAdamW.load_state_dict: missing {key}")
                    t = _C.from_numpy(src)
                    dst.narrow0(a - lo, e - a).copy_(t.to(dst.device))
        self.step_count = int(state["step"])
