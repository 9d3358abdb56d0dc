"""GPT-2 initialisation (Radford et al. 2019, as in the released code and nanoGPT):
matrices and embeddings ~ N(0, 0.02); the two projections that write into the residual
stream (attn.proj, mlp.proj) ~ N(0, 0.02 / sqrt(2 n_layer)), so the residual's variance
does not grow with depth; biases 0; norm gains 1.

Weights are drawn on the host from numpy.random.default_rng(seed), one parameter after
another in the order of param_specs(config), for the whole model even when a model holds
only some layers (a pipeline stage): every device, dtype and pipeline split gets the same
weights.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from .config import ModelConfig

STD = 0.02


def param_specs(config: ModelConfig) -> list[tuple[str, tuple[int, ...], str]]:
    """[(name, shape, init)] for every parameter of the full model, in init order; init is
    "normal", "residual" (the scaled normal), "zeros" or "ones"."""
    C, V, F = config.n_embd, config.vocab_size, config.ffn_hidden
    D = config.head_dim
    ln = config.norm == "layernorm"
    specs: list[tuple[str, tuple[int, ...], str]] = [("embedding.wte.weight", (V, C), "normal")]
    if config.learned_positions:
        specs.append(("embedding.wpe.weight", (config.max_seq_len, C), "normal"))

    def norm(prefix: str) -> None:
        specs.append((f"{prefix}.weight", (C,), "ones"))
        if ln:
            specs.append((f"{prefix}.bias", (C,), "zeros"))

    def linear(prefix: str, out: int, inp: int, init: str) -> None:
        specs.append((f"{prefix}.weight", (out, inp), init))
        if config.bias:
            specs.append((f"{prefix}.bias", (out,), "zeros"))

    fc_out = 2 * F if config.mlp == "swiglu" else F
    for i in range(config.n_layer):
        b = f"blocks.{i}"
        norm(f"{b}.ln1")
        linear(f"{b}.attn.qkv", (config.n_head + 2 * config.n_kv_head) * D, C, "normal")
        linear(f"{b}.attn.proj", C, config.n_head * D, "residual")
        norm(f"{b}.ln2")
        linear(f"{b}.mlp.fc", fc_out, C, "normal")
        linear(f"{b}.mlp.proj", C, F, "residual")
    norm("head.norm")
    if not config.tie_embeddings:
        specs.append(("head.out.weight", (V, C), "normal"))
    return specs


def initial_values(config: ModelConfig, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """(name, fp32 value) of every parameter of the full model, drawn in param_specs order."""
    rng = np.random.default_rng(seed)
    residual_std = STD / math.sqrt(2 * config.n_layer)
    for name, shape, init in param_specs(config):
        if init in ("normal", "residual"):
            std = STD if init == "normal" else residual_std
            yield name, rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        elif init == "ones":
            yield name, np.ones(shape, np.float32)
        else:
            yield name, np.zeros(shape, np.float32)
