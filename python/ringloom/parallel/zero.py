"""ZeRO-1 (Rajbhandari et al. 2020, stage 1): AdamW state sharded over the data-parallel
ranks.

Gradients arrive reduce-scattered per bucket (GradReducer in "reduce_scatter" mode): rank k
holds the summed gradient of elements [k L, (k+1) L) of every bucket's flat buffer. This
optimizer keeps fp32 master weights, m and v for exactly those elements, updates them with
the fused ops.adamw_step (on views of the flat shard buffers, one view per parameter piece,
so each piece gets its parameter's weight decay), then all-gathers the updated shards and
copies them into the parameters. Optimizer memory per rank drops from 12 bytes per parameter
(masters, m, v) to 12 / dp.

The same optimizer serves the higher stages (``stage``):
  2  the reducer frees the full gradients once a bucket is reduced (GradReducer
     release_grads): gradient memory between steps drops from 4 bytes per parameter to 4 / dp.
  3  the parameters are sharded too: after the update nothing is gathered; this rank keeps
     its shard in the compute dtype (``compute_shards``: the masters themselves in fp32, a
     bf16 copy otherwise) and parallel/zero3.py all-gathers a layer's parameters just before
     the layer runs and frees them after.
The full-size buffer the updated shards are gathered into (stages 1 and 2) exists only
during :meth:`step`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _C
from ..tensor import host_copy
from .data_parallel import GradReducer, flat_view

ops = _C.ops


class ShardedAdamW:
    def __init__(self, reducer: GradReducer, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.1, max_grad_norm: float = 0.0, stage: int = 1):
        if reducer.mode != "reduce_scatter":
            raise ValueError("ShardedAdamW needs a GradReducer in reduce_scatter mode")
        if stage not in (1, 2, 3):
            raise ValueError(f"ShardedAdamW: stage must be 1, 2 or 3, got {stage!r}")
        self.stage = int(stage)
        self.reducer, self.group = reducer, reducer.group
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.weight_decay, self.max_grad_norm = float(weight_decay), float(max_grad_norm)
        self.step_count = 0
        n, k = self.group.size, self.group.rank
        self._masters, self._m, self._v = [], [], []
        self._pieces: list[tuple[Any, Any, Any, Any, float]] = []  # (master, grad, m, v, wd) views
        for b in reducer.buckets:
            L = b.padded // n
            lo, hi = k * L, (k + 1) * L
            device = b.shard.device
            master = _C.zeros([L], "float32", device)
            m = _C.zeros([L], "float32", device)
            v = _C.zeros([L], "float32", device)
            self._masters.append(master)
            self._m.append(m)
            self._v.append(v)
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
        # Stage 3: this rank's shard of each bucket in the parameters' dtype, what the
        # per-layer all-gathers send.
        self.compute_shards = []
        if self.stage == 3:
            for b, master in zip(reducer.buckets, self._masters):
                dtype = b.params[0][1].value.dtype
                self.compute_shards.append(master if dtype == _C.DType.float32 else master.to(dtype))

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
        if self.stage == 3:
            self.refresh_compute_shards()
            return
        gathered = [_C.empty([b.padded], "float32", b.shard.device) for b in self.reducer.buckets]
        works = [self.group.all_gather(g, mst, async_op=True) for g, mst in zip(gathered, self._masters)]
        for b, g, w in zip(self.reducer.buckets, gathered, works):
            w.wait()
            for (_, p), off in zip(b.params, b.offsets):
                src = flat_view(g, off, p.value.numel(), p.value.shape)
                p.value.copy_(src if p.value.dtype == _C.DType.float32 else src.to(p.value.dtype))

    def refresh_compute_shards(self) -> None:
        """Stage 3: the compute-dtype shards follow the fp32 masters."""
        for cs, master in zip(self.compute_shards, self._masters):
            if cs is not master:
                cs.copy_(master.to(cs.dtype))

    # ---------------------------------------------------------------- checkpoints
    def _gather(self, shards: list[Any]) -> list[np.ndarray]:
        """Every bucket's [padded] buffer from the ranks' [L] shards, as host arrays."""
        outs = [_C.zeros([b.padded], "float32", b.shard.device) for b in self.reducer.buckets]
        works = [self.group.all_gather(o, s, async_op=True) for o, s in zip(outs, shards)]
        for w in works:
            w.wait()
        return [host_copy(o) for o in outs]

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
        weights first: without master.<name> entries the masters are refreshed from them
        (under stage 3 the parameters must be gathered meanwhile: ParameterGather.gathered_all)."""
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
        self.refresh_compute_shards()


def memory_per_rank(named: list[tuple[str, Any]], optimizers: list[Any], reducers: list[GradReducer]) -> dict[str, int]:
    """Bytes this rank holds now, from the live buffers: parameters with memory (a ZeRO-3
    parameter between uses has none; its compute-dtype shard counts instead), gradients
    (each storage once: views of a bucket's flat buffer are that buffer), and optimizer state
    (fp32 masters, m, v). For the bytes-per-parameter comparison of the ZeRO stages."""
    seen: set[int] = set()

    def size(t: Any) -> int:
        if t is None or not t.has_memory or t.storage_id() in seen:
            return 0
        seen.add(t.storage_id())
        return int(t.nbytes)

    # The reducers' flat buckets (persistent for plain DP and ZeRO-1, where the gradients are
    # views of them) and ZeRO's shards; then the gradients with memory of their own.
    spans = [(b.flat.data_ptr(), b.flat.data_ptr() + b.flat.nbytes) for r in reducers for b in r.buckets
             if b.flat is not None and b.flat.has_memory]

    def in_bucket(t: Any) -> bool:
        return t is not None and t.has_memory and any(lo <= t.data_ptr() < hi for lo, hi in spans)

    grads = sum(size(b.shard) + size(b.flat) for r in reducers for b in r.buckets)
    grads += sum(size(p.grad) for _, p in named if not in_bucket(p.grad))
    params = sum(size(p.value) for _, p in named)
    state = 0
    for o in optimizers:
        for lst in (getattr(o, "_masters", []), getattr(o, "_m", []), getattr(o, "_v", [])):
            state += sum(size(t) for t in lst)
    # ZeRO-3's compute-dtype shards are the parameters' memory between uses (where they are
    # tensors of their own: in fp32 they are the masters, counted above).
    params += sum(size(t) for o in optimizers for t in getattr(o, "compute_shards", []))
    out = {"params": params, "grads": grads, "optimizer": state}
    out["total"] = out["params"] + out["grads"] + out["optimizer"]
    return out
