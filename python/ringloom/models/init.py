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
from typing import TYPE_CHECKING, Iterator

import numpy as np

from .config import ModelConfig

if TYPE_CHECKING:
    from .model import Model

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


def draw_parameters(config: ModelConfig, seed: int) -> Iterator[tuple[str, tuple[int, ...], np.ndarray]]:
    """(name, shape, fp32 value) of every parameter of the full model, drawn in init order
    from numpy.random.default_rng(seed); one array alive at a time."""
    rng = np.random.default_rng(seed)
    residual_std = STD / math.sqrt(2 * config.n_layer)
    for name, shape, init in param_specs(config):
        if init in ("normal", "residual"):
            std = STD if init == "normal" else residual_std
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        elif init == "ones":
            value = np.ones(shape, np.float32)
        else:
            value = np.zeros(shape, np.float32)
        yield name, shape, value


def init_parameters(model: "Model", seed: int) -> None:
    """Draw every parameter of the full model in order; assign those this model holds."""
    params = dict(model.parameters())
    spec_names = {name for name, _, _ in param_specs(model.config)}
    # The layers and param_specs describe the same layout; a drift between them is a bug.
    extra = [n for n in params if n not in spec_names]
    if extra:
        raise RuntimeError(f"init_parameters: parameters {extra} have no init spec")
    for name, shape, value in draw_parameters(model.config, seed):
        p = params.get(name)
        if p is None:
            continue
        if tuple(p.value.shape) != shape:
            raise RuntimeError(f"init_parameters: {name} has shape {tuple(p.value.shape)}, spec says {shape}")
        model._assign(p, value)
