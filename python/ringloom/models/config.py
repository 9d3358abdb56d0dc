"""Model configurations and the named presets.

Two architectures share one decoder stack (csrc/layers/transformer_block.h):

- ``gpt2``: LayerNorm, GELU MLP (hidden 4C), learned positions, tied embeddings, biases.
- ``llama``: RMSNorm, SwiGLU MLP, rotary positions, grouped-query attention, no biases.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ARCHS = ("gpt2", "llama")


@dataclass
class ModelConfig:
    """Shape of a model. ``n_kv_head=None`` means ``n_head`` (no GQA); ``ffn_hidden=None``
    means 4 * n_embd for GPT-2 and LLaMA's 8/3 * n_embd rounded up to a multiple of 64."""

    arch: str = "gpt2"
    vocab_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None
    n_embd: int = 128
    ffn_hidden: int | None = None
    max_seq_len: int = 256
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    tie_embeddings: bool = True
    bias: bool = True

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"ModelConfig: arch must be one of {ARCHS}, got {self.arch!r}")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.ffn_hidden is None:
            if self.arch == "gpt2":
                self.ffn_hidden = 4 * self.n_embd
            else:
                self.ffn_hidden = -(-(8 * self.n_embd // 3) // 64) * 64
        for f in ("vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "ffn_hidden", "max_seq_len"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelConfig: {f} must be a positive integer, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"ModelConfig: n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"ModelConfig: n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if self.arch == "llama" and self.head_dim % 2:
            raise ValueError(f"ModelConfig: RoPE needs an even head dim, got n_embd/n_head = {self.head_dim}")
        for f in ("norm_eps", "rope_base"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"ModelConfig: {f} must be a finite positive number, got {v!r}")
        for f in ("tie_embeddings", "bias"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"ModelConfig: {f} must be true or false, got {getattr(self, f)!r}")

    # Derived from arch.
    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def norm(self) -> str:
        return "layernorm" if self.arch == "gpt2" else "rmsnorm"

    @property
    def mlp(self) -> str:
        return "gelu" if self.arch == "gpt2" else "swiglu"

    @property
    def learned_positions(self) -> bool:
        return self.arch == "gpt2"

    @property
    def rope(self) -> bool:
        return self.arch == "llama"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {unknown}")
        return cls(**d)


_GPT2 = dict(arch="gpt2", norm_eps=1e-5, tie_embeddings=True, bias=True)
_LLAMA = dict(arch="llama", norm_eps=1e-5, tie_embeddings=False, bias=False)

# Keyword arguments, so that get_preset's overrides re-derive n_kv_head / ffn_hidden.
_PRESET_ARGS: dict[str, dict[str, Any]] = {
    "tiny": dict(_GPT2, vocab_size=256, n_layer=4, n_head=4, n_embd=128, max_seq_len=256),
    "llama-tiny": dict(_LLAMA, vocab_size=256, n_layer=4, n_head=4, n_kv_head=2, n_embd=128, ffn_hidden=384,
                       max_seq_len=256, rope_base=10000.0),
    "gpt2-124m": dict(_GPT2, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, max_seq_len=1024),
    "gpt2-350m": dict(_GPT2, vocab_size=50304, n_layer=24, n_head=16, n_embd=1024, max_seq_len=1024),
    # Llama 3.2 1B's shape (tied embeddings, rope theta 500000) at a 2048 context.
    "llama-1b": dict(_LLAMA, vocab_size=128256, n_layer=16, n_head=32, n_kv_head=8, n_embd=2048, ffn_hidden=8192,
                     max_seq_len=2048, rope_base=500000.0, tie_embeddings=True),
}

PRESETS: dict[str, ModelConfig] = {name: ModelConfig(**args) for name, args in _PRESET_ARGS.items()}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The preset ``name`` with fields replaced by ``overrides`` (derived fields follow:
    get_preset("tiny", n_embd=32) has ffn_hidden 128)."""
    if name not in _PRESET_ARGS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(_PRESET_ARGS)}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"get_preset: unknown config fields {bad}; valid fields: {', '.join(sorted(known))}")
    return ModelConfig(**{**_PRESET_ARGS[name], **overrides})
