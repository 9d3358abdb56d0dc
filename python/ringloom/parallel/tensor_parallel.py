"""Tensor-parallel models: a :class:`~ringloom.models.Model` whose layers are split over a
tp group (tp_layers.py, split described in tp_layout.py).

    tp = mesh.tp_group                                   # or any ProcessGroup
    model = build_tp_model(config, tp, device="cpu", seed=0)
    loss = model.forward_backward(ids, targets)          # every tp rank passes the same rows

Every tp rank of a group sees the same token ids and targets and returns the same loss.
Weights are drawn exactly as build_model draws them (models/init.py) and cut into this
rank's piece, so a tp model starts from the same point as one process. ``state_dict`` /
``load_state_dict`` speak the full, layout-free names and shapes (collectives over the tp
group: every tp rank must call them); :func:`gather_full` does the same for anything
shaped like the parameters (gradients, AdamW moments).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..models import ModelConfig, param_specs
from ..models.init import initial_values
from ..models.model import Model, _norm_device, _resolve_dtype
from .tp_layers import TPBlock, TPEmbedding, TPHead
from .tp_layout import QKV, TPLayout, check_tp


def _full_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    return {name: tuple(shape) for name, shape, _ in param_specs(config)}


def gather_full(group: Any, layout: TPLayout, arrays: dict[str, np.ndarray],
                param_of: Any = None) -> dict[str, np.ndarray]:
    """Every tp rank's pieces -> full fp32 arrays, on every rank (one all-gather).

    ``arrays``: this rank's pieces by key; ``param_of(key)`` names the parameter whose
    split the key follows (default: the key itself; e.g. "m.blocks.0.attn.qkv.weight" ->
    "blocks.0.attn.qkv.weight" for AdamW moments). Every rank must pass the same keys."""
    param_of = param_of or (lambda k: k)
    shapes = _full_shapes(layout.config)
    keys = list(arrays)
    sizes = [[int(np.prod(layout.local_shape(param_of(k), shapes[param_of(k)], r))) for k in keys]
             for r in range(layout.tp)]
    width = max(sum(s) for s in sizes)
    mine = np.zeros(width, np.float32)
    off = 0
    for k in keys:
        a = np.asarray(arrays[k], np.float32).reshape(-1)
        mine[off:off + a.size] = a
        off += a.size
    every = np.empty((layout.tp, width), np.float32)
    group.all_gather(every, mine)
    out = {}
    offs = [0] * layout.tp
    for i, k in enumerate(keys):
        name = param_of(k)
        pieces = []
        for r in range(layout.tp):
            shape = layout.local_shape(name, shapes[name], r)
            pieces.append(every[r, offs[r]:offs[r] + sizes[r][i]].reshape(shape))
            offs[r] += sizes[r][i]
        out[k] = layout.unshard(name, pieces, shapes[name])
    return out


class TPModel(Model):
    """A Model split over a tp group. Attributes beyond Model's: ``layout`` (TPLayout),
    ``tp_group``. Activations between layers are sequence-parallel shards [B, T/tp, C]."""

    def __init__(self, config: ModelConfig, device: str, dtype: Any, embedding, blocks, block_ids, head,
                 layout: TPLayout, group: Any):
        self.layout, self.tp_group = layout, group
        super().__init__(config, device, dtype, embedding, blocks, block_ids, head)

    def local_state_dict(self) -> dict[str, np.ndarray]:
        """This rank's pieces (fp32 NumPy copies), by full-model name."""
        return Model.state_dict(self)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Full fp32 parameters by name, on every tp rank (a collective over the tp group)."""
        return gather_full(self.tp_group, self.layout, self.local_state_dict())

    def grads(self) -> dict[str, np.ndarray]:
        """Full fp32 gradients by name, on every tp rank (a collective over the tp group)."""
        local = {n: np.array((p.grad if p.grad.device == "cpu" else p.grad.cpu()).numpy(), np.float32)
                 for n, p in self._params}
        return gather_full(self.tp_group, self.layout, local)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Full arrays by name (as state_dict returns them); each rank keeps its piece."""
        shapes = _full_shapes(self.config)
        want = {name: shapes[name] for name, _ in self._params}
        missing = [n for n in want if n not in state]
        unexpected = [n for n in state if n not in want]
        mismatched = [f"{n}: expected {want[n]}, got {tuple(np.shape(state[n]))}" for n in want
                      if n in state and tuple(np.shape(state[n])) != want[n]]
        if missing or unexpected or mismatched:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}, "
                             f"shape mismatches {mismatched}")
        for name, p in self._params:
            self._assign(p, self.layout.shard(name, np.asarray(state[name], np.float32)))

    def activation_shape(self, batch: int, seq_len: int) -> list[int]:
        """Shape of the activations this model passes between pipeline stages."""
        return [batch, seq_len // self.layout.tp, self.config.n_embd]

    def norm_grads(self) -> list[tuple[str, Any]]:
        """(name, gradient tensor or row view) whose squares this rank adds to the global
        gradient norm: its slices of split parameters, replicated ones on tp rank 0 only,
        replicated kv rows on the first of their sharers only."""
        L = self.layout
        out = []
        for name, p in self._params:
            if L.replicated(name):
                if L.rank == 0:
                    out.append((name, p.grad))
            elif L.kind(name) == QKV and L.kv_replicated and L.kv_sharers()[0] != L.rank:
                out.append((name, p.grad.narrow0(0, L.heads * self.config.head_dim)))
            else:
                out.append((name, p.grad))
        return out

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", tp rank {self.layout.rank} of {self.layout.tp})"


def kv_group_for(group: Any, layout: TPLayout) -> Any:
    """The sub-group of ``group`` sharing this rank's replicated kv heads (None when the kv
    heads are split). Collective over each sharer set; every rank of ``group`` calls it."""
    if not layout.kv_replicated:
        return None
    mine = None
    n = layout.tp // layout.config.n_kv_head
    for first in range(0, layout.tp, n):
        ranks = list(range(first, first + n))
        if layout.rank in ranks:
            mine = group.new_group([group.members[r] for r in ranks])
    return mine


def build_tp_model(config: ModelConfig, group: Any, device: str = "cpu", dtype: Any = None, seed: int = 0, *,
                   blocks: Iterable[int] | None = None, embedding: bool = True, head: bool = True,
                   kv_group: Any = None) -> TPModel:
    """A model split over the ranks of ``group`` (a ProcessGroup; this process is its rank
    ``group.rank``), initialised like build_model(config, seed=seed). ``blocks``,
    ``embedding``, ``head`` select a pipeline stage's share as in build_model. ``kv_group``:
    from kv_group_for, when there are fewer kv heads than tp ranks (made here if None)."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"build_tp_model: config must be a ModelConfig, got {type(config).__name__}")
    check_tp(config, group.size)
    layout = TPLayout(config, group.size, group.rank)
    device = _norm_device(device)
    dtype = _resolve_dtype(device, dtype)
    block_ids = list(range(config.n_layer)) if blocks is None else list(blocks)
    for i in block_ids:
        if not 0 <= i < config.n_layer:
            raise ValueError(f"build_tp_model: block index {i} out of range [0, {config.n_layer})")
    if layout.kv_replicated and kv_group is None:
        kv_group = kv_group_for(group, layout)
    emb = TPEmbedding(layout, group, dtype, device) if embedding else None
    blks = [TPBlock(layout, group, dtype, device, kv_group) for _ in block_ids]
    hd = None
    if head:
        hd = TPHead(layout, group, dtype, device, tied=emb if config.tie_embeddings and emb is not None else None)
    model = TPModel(config, device, dtype, emb, blks, block_ids, hd, layout, group)
    params = dict(model.parameters())
    for name, value in initial_values(config, seed):
        p = params.get(name)
        if p is not None:
            model._assign(p, layout.shard(name, value))
    return model
