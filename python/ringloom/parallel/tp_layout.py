"""How tensor parallelism splits a model's parameters over the ranks of a tp group.

Megatron-style (Shoeybi et al. 2019): in a block, the QKV and MLP-up/gate projections are
column-parallel (rank r holds the output rows of its heads / its slice of the hidden
width), the attention-output and MLP-down projections are row-parallel (rank r holds the
matching input columns), so each half of a block needs one collective in and one out. The
embedding and the LM head are vocabulary-parallel (rank r holds rows [start_r, end_r) of
the vocabulary). Norm gains, position embeddings and the biases of the row-parallel
projections are replicated.

Per rank, with R = tp:
  query heads   n_head / R                       (must divide)
  kv heads      n_kv_head / R when R divides it; otherwise 1, replicated on the
                R / n_kv_head ranks whose query heads read it (R must be a multiple of
                n_kv_head then)
  hidden        ffn_hidden / R                   (must divide)
  vocabulary    V / R rounded, the first V % R ranks one row more

Parameter names stay those of the full model (models/model.py); :meth:`TPLayout.shard`
cuts a full array into rank r's piece and :meth:`TPLayout.unshard` puts the R pieces back
together, for weights and for anything shaped like them (AdamW moments): checkpoints and
exported weights are in the full, layout-free form.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models import ModelConfig

REPLICATED, ROWS, COLS, QKV, GATE_UP, VOCAB = "replicated", "rows", "cols", "qkv", "gate_up", "vocab"


def check_tp(config: ModelConfig, tp: int, seq_len: int | None = None) -> None:
    """ValueError naming the first field that a tp-way split cannot divide."""
    if tp < 1:
        raise ValueError(f"tensor parallel: tp must be >= 1, got {tp}")
    if tp == 1:
        return
    if config.n_head % tp:
        raise ValueError(f"tensor parallel: n_head ({config.n_head}) is not a multiple of tp ({tp}); attention "
                         f"heads are split evenly over the tp ranks (uneven head splits are not supported)")
    kv = config.n_kv_head
    if kv % tp and tp % kv:
        raise ValueError(f"tensor parallel: n_kv_head ({kv}) and tp ({tp}): the kv heads are split when tp divides "
                         f"them and replicated when they divide tp; neither holds")
    if config.ffn_hidden % tp:
        raise ValueError(f"tensor parallel: ffn_hidden ({config.ffn_hidden}) is not a multiple of tp ({tp})")
    if config.vocab_size < tp:
        raise ValueError(f"tensor parallel: vocab_size ({config.vocab_size}) is smaller than tp ({tp})")
    if seq_len is not None and seq_len % tp:
        raise ValueError(f"tensor parallel: the sequence length ({seq_len}) is not a multiple of tp ({tp}); sequence "
                         "parallelism splits the tokens of each micro-batch evenly over the tp ranks")


@dataclass(frozen=True)
class TPLayout:
    config: ModelConfig
    tp: int
    rank: int

    def __post_init__(self) -> None:
        check_tp(self.config, self.tp)
        if not 0 <= self.rank < self.tp:
            raise ValueError(f"TPLayout: rank {self.rank} outside tp={self.tp}")

    # ---------------------------------------------------------------- per-rank sizes
    @property
    def heads(self) -> int:
        return self.config.n_head // self.tp

    @property
    def kv_replicated(self) -> bool:
        return self.config.n_kv_head % self.tp != 0

    @property
    def kv_heads(self) -> int:
        return 1 if self.kv_replicated else self.config.n_kv_head // self.tp

    def kv_head_start(self, rank: int | None = None) -> int:
        r = self.rank if rank is None else rank
        if self.kv_replicated:
            return r // (self.tp // self.config.n_kv_head)
        return r * self.kv_heads

    def kv_sharers(self, rank: int | None = None) -> list[int]:
        """tp ranks holding the same kv heads as ``rank`` (itself only when split)."""
        r = self.rank if rank is None else rank
        if not self.kv_replicated:
            return [r]
        n = self.tp // self.config.n_kv_head
        first = (r // n) * n
        return list(range(first, first + n))

    @property
    def hidden(self) -> int:
        return self.config.ffn_hidden // self.tp

    def vocab_range(self, rank: int | None = None) -> tuple[int, int]:
        r = self.rank if rank is None else rank
        V, R = self.config.vocab_size, self.tp
        base, extra = divmod(V, R)
        start = r * base + min(r, extra)
        return start, start + base + (1 if r < extra else 0)

    # ---------------------------------------------------------------- parameter kinds
    def kind(self, name: str) -> str:
        """How the parameter ``name`` (full-model name) is split."""
        if name in ("embedding.wte.weight", "head.out.weight"):
            return VOCAB
        if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
            return QKV
        if name.endswith("mlp.fc.weight") or name.endswith("mlp.fc.bias"):
            return GATE_UP if self.config.mlp == "swiglu" else ROWS
        if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
            return COLS
        return REPLICATED

    def _qkv_rows(self, rank: int) -> np.ndarray:
        D, Hq = self.config.head_dim, self.config.n_head
        Hkv = self.config.n_kv_head
        q = np.arange(rank * self.heads * D, (rank + 1) * self.heads * D)
        k0 = self.kv_head_start(rank)
        k = Hq * D + np.arange(k0 * D, (k0 + self.kv_heads) * D)
        v = (Hq + Hkv) * D + np.arange(k0 * D, (k0 + self.kv_heads) * D)
        return np.concatenate([q, k, v])

    def _index(self, name: str, rank: int) -> tuple[int, np.ndarray] | None:
        """(axis, indices along it) of rank's piece; None when replicated."""
        kind = self.kind(name)
        if kind == REPLICATED:
            return None
        if kind == VOCAB:
            a, b = self.vocab_range(rank)
            return 0, np.arange(a, b)
        if kind == QKV:
            return 0, self._qkv_rows(rank)
        F, f = self.config.ffn_hidden, self.hidden
        if kind == ROWS:
            return 0, np.arange(rank * f, (rank + 1) * f)
        if kind == GATE_UP:  # packed [gate | up]: rank r keeps [gate_r | up_r]
            return 0, np.concatenate([np.arange(rank * f, (rank + 1) * f), F + np.arange(rank * f, (rank + 1) * f)])
        width = self.heads * self.config.head_dim if "attn" in name else f
        return 1, np.arange(rank * width, (rank + 1) * width)

    def shard(self, name: str, full: np.ndarray, rank: int | None = None) -> np.ndarray:
        """Rank's piece of the full array ``full`` of parameter ``name``."""
        r = self.rank if rank is None else rank
        ix = self._index(name, r)
        if ix is None:
            return np.ascontiguousarray(full)
        axis, idx = ix
        return np.ascontiguousarray(np.take(full, idx, axis=axis))

    def local_shape(self, name: str, full_shape: tuple[int, ...], rank: int | None = None) -> tuple[int, ...]:
        r = self.rank if rank is None else rank
        ix = self._index(name, r)
        if ix is None:
            return tuple(full_shape)
        axis, idx = ix
        shape = list(full_shape)
        shape[axis] = len(idx)
        return tuple(shape)

    def unshard(self, name: str, pieces: list[np.ndarray], full_shape: tuple[int, ...]) -> np.ndarray:
        """The full array from every rank's piece (pieces[r] from tp rank r)."""
        if self._index(name, 0) is None:
            return np.asarray(pieces[0])
        out = np.empty(full_shape, np.asarray(pieces[0]).dtype)
        for r, piece in enumerate(pieces):
            axis, idx = self._index(name, r)
            if axis == 0:
                out[idx] = piece
            else:
                out[:, idx] = piece
        return out

    def replicated(self, name: str) -> bool:
        return self.kind(name) == REPLICATED

    def __repr__(self) -> str:
        return f"TPLayout(tp={self.tp}, rank={self.rank})"
