"""Model: the embedding, the decoder blocks and the LM head, composed in Python.

Each call below is a handful of calls into C++ per layer (O(layers) Python work per step).
The layers keep their activations per micro-batch ``slot`` (csrc/layers/layer.h): a
pipeline stage is a Model built with part of the layers (build_model(blocks=...,
embedding=..., head=...)) and driven with stage_forward / stage_backward_input /
stage_backward_weight, one slot per micro-batch in flight.

Parameter names (one per logical parameter; a tied weight is listed once, as
``embedding.wte.weight``):

  embedding.wte.weight [V, C], embedding.wpe.weight [max_seq_len, C] (GPT-2)
  blocks.{i}.ln1.weight, .ln1.bias, .attn.qkv.weight [(Hq+2Hkv)D, C], .attn.qkv.bias,
      .attn.proj.weight [C, C], .attn.proj.bias, .ln2.*, .mlp.fc.weight [F or 2F, C],
      .mlp.fc.bias, .mlp.proj.weight [C, F], .mlp.proj.bias   (biases only with bias=True,
      norm biases only for LayerNorm)
  head.norm.weight, head.norm.bias (LayerNorm), head.out.weight [V, C] (untied only)
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable

import numpy as np

from .. import _C
from .. import nn
from ..tensor import host_copy
from ..tensor import tensor as _tensor
from .config import RECOMPUTE, ModelConfig
from .init import initial_values, param_specs

_NO_HOOK = contextlib.nullcontext()


def _norm_device(device: str) -> str:
    device = str(device)
    return "cuda:0" if device == "cuda" else device


def _resolve_dtype(device: str, dtype: Any) -> Any:
    if dtype is None:
        return _C.DType.float32 if device == "cpu" else _C.DType.bfloat16
    if isinstance(dtype, str):
        if dtype not in _C.DType.__members__:
            raise ValueError(f"build_model: unknown dtype {dtype!r}; use float32 or bfloat16")
        dtype = _C.DType.__members__[dtype]
    if dtype not in (_C.DType.float32, _C.DType.bfloat16):
        raise ValueError(f"build_model: parameters must be float32 or bfloat16, got {dtype}")
    if device == "cpu" and dtype != _C.DType.float32:
        raise ValueError(f"build_model: the CPU layers compute in float32, got dtype {dtype}")
    return dtype


class Model:
    """A GPT-2 or LLaMA decoder. Build it with :func:`build_model`.

    Attributes: ``config``, ``device`` ("cpu" or "cuda:N"), ``dtype`` (parameter dtype),
    ``embedding`` (Embedding or None), ``blocks`` (list of TransformerBlock),
    ``block_ids`` (the global indices of ``blocks``), ``head`` (LMHead or None).
    A model built with all three parts is complete; a pipeline stage may hold a subset.
    """

    def __init__(self, config: ModelConfig, device: str, dtype: Any, embedding, blocks, block_ids, head):
        self.config = config
        self.device = device
        self.dtype = dtype
        self.embedding = embedding
        self.blocks = list(blocks)
        self.block_ids = list(block_ids)
        self.head = head
        self._params = self._collect_params()
        # Called around every layer call of the stage_* methods (and by engines that drive
        # the layers directly): use(model, index in layers(), direction) -> context manager.
        # ZeRO-3 gathers a layer's parameters there (parallel/zero3.py); None: nothing to do.
        self.layer_hooks: Any = None
        # Who needs the gradients to stay where they are (a CapturedStep: its graph holds
        # their addresses); release_grads refuses while set.
        self.grads_pinned_by: str | None = None

    # ---------------------------------------------------------------- attention backend

    @property
    def attention(self) -> str | None:
        """The attention implementation this model's blocks use on a GPU: "ours" (our flash
        kernels), "cudnn" (cuDNN's fused SDPA), "auto" (per shape and direction the one measured
        fastest, ops/attention_auto_table.h), or None for the process-wide setting
        (ringloom._C.ops.set_attention_backend, env RINGLOOM_ATTENTION). The CPU ignores it."""
        return self.blocks[0].attention_backend if self.blocks else None

    @attention.setter
    def attention(self, name: str | None) -> None:
        if name is not None and name not in ("ours", "cudnn", "auto"):
            raise ValueError(f"Model.attention must be 'ours', 'cudnn', 'auto' or None, got {name!r}")
        for b in self.blocks:
            b.attention_backend = name

    @property
    def deterministic_attention(self) -> bool:
        """Whether the attention backward is bitwise reproducible run to run: on a GPU our
        kernels then compute dq in a separate pass instead of with fp32 atomics (slower; the
        auto backend runs our backward, the cudnn backend refuses it). The CPU always is."""
        return bool(self.blocks[0].deterministic_attention) if self.blocks else False

    @deterministic_attention.setter
    def deterministic_attention(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise TypeError(f"Model.deterministic_attention must be a bool, got {on!r}")
        for b in self.blocks:
            b.deterministic_attention = on

    @property
    def recompute(self) -> str:
        """Activation recomputation of the blocks: "none", "selective" or "full"
        (ModelConfig.recompute; csrc/layers/transformer_block.h). Setting it applies to the
        next forward; gradients do not depend on it."""
        return self.blocks[0].recompute if self.blocks else self.config.recompute

    @recompute.setter
    def recompute(self, mode: str) -> None:
        if mode not in RECOMPUTE:
            raise ValueError(f"Model.recompute must be one of {RECOMPUTE}, got {mode!r}")
        for b in self.blocks:
            b.recompute = mode

    # ---------------------------------------------------------------- parameters

    def _collect_params(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self.embedding is not None:
            out += [(f"embedding.{p.name}", p) for p in self.embedding.params()]
        for i, b in zip(self.block_ids, self.blocks):
            out += [(f"blocks.{i}.{p.name}", p) for p in b.params()]
        if self.head is not None:
            for p in self.head.params():
                name = f"head.{p.name}"
                # A head that holds its own copy of a tied weight (pipeline: embedding on
                # another stage) lists it under the weight's one logical name.
                if p.name == "out.weight" and self.config.tie_embeddings:
                    name = "embedding.wte.weight"
                out.append((name, p))
        return out

    def parameters(self) -> list[tuple[str, Any]]:
        """[(name, Param)] in a fixed order; Param has .name (local), .value (parameter
        dtype), .grad (float32, same shape), .decay (weight decay applies)."""
        return list(self._params)

    def norm_grads(self) -> list[tuple[str, Any]]:
        """(name, gradient tensor) whose squares this model adds to a global gradient norm:
        every gradient here; a tensor-parallel model lists only the elements it owns."""
        return [(name, p.grad) for name, p in self._params]

    def activation_shape(self, batch: int, seq_len: int) -> list[int]:
        """Shape of the activations a pipeline stage of this model sends to the next one."""
        return [batch, seq_len, self.config.n_embd]

    def num_parameters(self) -> int:
        return int(sum(p.value.numel() for _, p in self._params))

    def zero_grad(self) -> None:
        for layer in self.layers():
            layer.zero_grad()  # also cancels a pending replace_grads_next

    def release_grads(self) -> None:
        """Free the gradients' memory until the next backward (or zero_grad) gives it back,
        as torch's zero_grad(set_to_none=True): between an optimizer step and the next
        backward the activations reuse those bytes, so a step's peak holds the gradients
        written so far, not all of them. Meanwhile each .grad has no memory
        (``p.grad.has_memory`` is False) and an op given one raises."""
        if self.grads_pinned_by is not None:
            raise RuntimeError(f"Model.release_grads: the gradients must stay allocated for {self.grads_pinned_by}")
        for layer in self.layers():
            layer.release_grads()

    def replace_grads_next(self) -> None:
        """The next backward's gradients replace .grad instead of adding to it: zero_grad()
        without its pass over the gradients the weight GEMMs can overwrite (blocks and head)."""
        for layer in self.layers():
            layer.replace_grads_next()

    def state_dict(self) -> dict[str, np.ndarray]:
        """{name: float32 NumPy copy of the parameter}."""
        return {name: host_copy(p.value) for name, p in self._params}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy every parameter from ``state`` (arrays of any float dtype). The names must
        match exactly and the shapes agree; otherwise ValueError lists what is wrong."""
        want = {name: tuple(p.value.shape) for name, p in self._params}
        missing = [n for n in want if n not in state]
        unexpected = [n for n in state if n not in want]
        mismatched = [f"{n}: expected {want[n]}, got {tuple(np.shape(state[n]))}" for n in want
                      if n in state and tuple(np.shape(state[n])) != want[n]]
        if missing or unexpected or mismatched:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            if mismatched:
                parts.append(f"shape mismatches [{'; '.join(mismatched)}]")
            raise ValueError("load_state_dict: " + ", ".join(parts))
        for name, p in self._params:
            self._assign(p, state[name])

    def _initialize(self, seed: int) -> None:
        """Draw every parameter of the full model in order (models/init.py); keep those this
        model holds."""
        params = dict(self._params)
        # The layers and param_specs describe the same layout; a drift between them is a bug.
        extra = [n for n in params if n not in {name for name, _, _ in param_specs(self.config)}]
        if extra:
            raise RuntimeError(f"build_model: parameters {extra} have no init spec")
        for name, value in initial_values(self.config, seed):
            p = params.get(name)
            if p is None:
                continue
            if tuple(p.value.shape) != value.shape:
                raise RuntimeError(f"build_model: {name} has shape {tuple(p.value.shape)}, spec says {value.shape}")
            self._assign(p, value)

    def _assign(self, p, array) -> None:
        t = _tensor(np.ascontiguousarray(np.asarray(array, dtype=np.float32)), dtype=_C.DType.float32)
        if self.dtype != _C.DType.float32:
            t = t.to(self.dtype)
        if self.device != "cpu":
            t = t.to(self.device)
        p.value.copy_(t)

    # ---------------------------------------------------------------- inputs

    def _tokens(self, x, what: str, ignore_index: int | None = None):
        """ids/targets -> int32 [B, T] Tensor on the model's device, validated."""
        V = self.config.vocab_size
        if isinstance(x, _C.Tensor):
            if x.dtype != _C.DType.int32:
                raise TypeError(f"{what} must be int32, got {x.dtype} tensor of shape {tuple(x.shape)}")
            if x.ndim != 2:
                raise ValueError(f"{what} must be [B, T], got shape {tuple(x.shape)}")
            return x.to(self.device)
        a = np.asarray(x)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{what} must be integers, got {a.dtype} array of shape {a.shape}")
        if a.ndim != 2:
            raise ValueError(f"{what} must be [B, T], got shape {a.shape}")
        if a.size:
            ok = (a >= 0) & (a < V)
            if ignore_index is not None:
                ok |= a == ignore_index
            if not ok.all():
                bad = a[~ok].flat[0]
                where = tuple(int(i) for i in np.argwhere(~ok)[0])
                raise ValueError(f"{what}: token id {int(bad)} at {where} is outside the vocabulary [0, {V})")
        t = _tensor(np.ascontiguousarray(a, dtype=np.int32), dtype=_C.DType.int32)
        return t.to(self.device)

    def _inputs(self, ids, targets, ignore_index: int):
        ids_t = self._tokens(ids, "ids")
        tgt_t = self._tokens(targets, "targets", ignore_index)
        if tuple(tgt_t.shape) != tuple(ids_t.shape):
            raise ValueError(f"targets shape {tuple(tgt_t.shape)} must equal ids shape {tuple(ids_t.shape)}")
        T = ids_t.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds the model's max_seq_len of {self.config.max_seq_len}")
        host = np.asarray(tgt_t.cpu())
        count = int(np.count_nonzero(host != ignore_index))
        return ids_t, tgt_t, count

    def _require_complete(self, what: str) -> None:
        if self.embedding is None or self.head is None or len(self.blocks) != self.config.n_layer:
            raise RuntimeError(f"Model.{what}: this model holds only part of the layers (a pipeline stage); "
                               "drive its embedding/blocks/head directly")

    # ---------------------------------------------------------------- compute

    def forward_backward(self, ids, targets, slot: int = 0, grad_scale: float | None = None,
                         ignore_index: int = -100, accumulate: bool = True, read_loss: bool = True) -> Any:
        """Forward and full backward of one micro-batch; gradients accumulate into the
        parameters' .grad. ids, targets: int [B, T] (NumPy or int32 Tensor). Returns the
        mean loss over targets != ignore_index (0.0 if none). The gradient is that of
        grad_scale * sum(per-position losses); grad_scale defaults to 1 / (counted targets),
        i.e. the gradient of the mean; pass 1 / (total over micro-batches) to accumulate.

        accumulate=False: this micro-batch's gradients replace what .grad holds, the same
        as zero_grad() first, but the blocks and the head write their gradients in place
        (the weight GEMMs overwrite) instead of a separate pass zeroing them. If the call
        raises, the gradients are left zeroed.

        read_loss=False: returns a PendingLoss instead, whose float() reads the loss; on a
        GPU the call then returns without waiting for the device, so the optimizer step can
        be queued behind the backward before the loss is read (as torch's loss.item()
        after opt.step())."""
        self._require_complete("forward_backward")
        ids_t, tgt_t, count = self._inputs(ids, targets, ignore_index)
        if grad_scale is None:
            grad_scale = 1.0 / max(count, 1)
        if not accumulate:
            self.replace_grads_next()
        try:
            x = self.embedding.forward(slot, ids_t)
            for b in self.blocks:
                x = b.forward(slot, x)
            losses = self.head.forward_loss(slot, x, tgt_t, float(grad_scale), ignore_index)
            dx = self.head.backward(slot, None)
            for b in reversed(self.blocks):
                dx = b.backward(slot, dx)
            self.embedding.backward(slot, dx)
        except BaseException:
            self.release(slot)  # leave no half-used slot behind
            if not accumulate:
                self.zero_grad()  # not half replaced (and no layer still set to replace)
            raise
        pending = PendingLoss(losses, count)
        return float(pending) if read_loss else pending

    def loss(self, ids, targets, ignore_index: int = -100) -> float:
        """Mean loss over targets != ignore_index, forward only (nothing saved)."""
        self._require_complete("loss")
        ids_t, tgt_t, count = self._inputs(ids, targets, ignore_index)
        x = self.embedding.infer(ids_t)
        for b in self.blocks:
            x = b.infer(x)
        return self.mean_loss(self.head.loss(x, tgt_t, ignore_index), count)

    def logits(self, ids):
        """Logits [B, T, V] of every position (a Tensor in the parameter dtype on the model's
        device; np.asarray works on the CPU). Nothing is saved."""
        self._require_complete("logits")
        ids_t = self._tokens(ids, "ids")
        if ids_t.shape[1] > self.config.max_seq_len:
            raise ValueError(f"sequence length {ids_t.shape[1]} exceeds the model's max_seq_len of "
                             f"{self.config.max_seq_len}")
        x = self.embedding.infer(ids_t)
        for b in self.blocks:
            x = b.infer(x)
        return self.head.logits(x)

    # ---------------------------------------------------------------- pipeline stages

    def stage_forward(self, slot: int, x, targets=None, grad_scale: float = 1.0, ignore_index: int = -100):
        """Forward of this model's share of the layers for micro-batch ``slot``.

        x: token ids [B, T] when the stage has the embedding, else activations [B, T, C]
        (a Tensor the layers keep a reference to until backward; do not reuse its memory).
        Returns activations [B, T, C] for the next stage, or, when the stage has the head,
        per-position losses [B, T] (float32; targets required; the gradient of
        grad_scale * sum(losses) is saved for the backward).
        """
        if self.head is not None and targets is None:
            raise ValueError("stage_forward: this stage has the LM head; targets are required")
        try:
            i = 0
            if self.embedding is not None:
                with self.using(0, +1):
                    x = self.embedding.forward(slot, self._tokens(x, "ids"))
                i = 1
            for b in self.blocks:
                with self.using(i, +1):
                    x = b.forward(slot, x)
                i += 1
            if self.head is None:
                return x
            with self.using(i, +1):
                return self.head.forward_loss(slot, x, self._tokens(targets, "targets", ignore_index),
                                              float(grad_scale), ignore_index)
        except BaseException:
            self.release(slot)
            raise

    def stage_infer(self, x, targets=None, ignore_index: int = -100):
        """Forward of this model's share of the layers with nothing saved (evaluation).

        x: token ids [B, T] when the stage has the embedding, else activations [B, T, C].
        Returns activations [B, T, C] for the next stage, or, when the stage has the head,
        per-position losses [B, T] (float32; 0 where targets == ignore_index; targets
        required). Model.loss_sum adds them up on the host.
        """
        if self.head is not None and targets is None:
            raise ValueError("stage_infer: this stage has the LM head; targets are required")
        i = 0
        if self.embedding is not None:
            with self.using(0, +1):
                x = self.embedding.infer(self._tokens(x, "ids"))
            i = 1
        for b in self.blocks:
            with self.using(i, +1):
                x = b.infer(x)
            i += 1
        if self.head is None:
            return x
        with self.using(i, +1):
            return self.head.loss(x, self._tokens(targets, "targets", ignore_index), ignore_index)

    def stage_backward_input(self, slot: int, dy=None):
        """Input-gradient half for ``slot``: dy [B, T, C] from the next stage (None when this
        stage has the head). Returns dx [B, T, C] for the previous stage, or None when this
        stage has the embedding. Parameter gradients are untouched until stage_backward_weight."""
        if self.head is not None and dy is not None:
            raise ValueError("stage_backward_input: this stage has the LM head; its gradient comes from "
                             "stage_forward's targets, pass dy=None")
        if self.head is None and dy is None:
            raise ValueError("stage_backward_input: dy from the next stage is required")
        layers = self.layers()
        for i in range(len(layers) - 1, -1, -1):
            with self.using(i, -1):
                dy = layers[i].backward_input(slot, dy)
        return None if self.embedding is not None else dy

    def stage_backward_weight(self, slot: int) -> None:
        """Weight-gradient half for ``slot`` (accumulates into .grad, frees the slot)."""
        for layer in reversed(self.layers()):
            layer.backward_weight(slot)

    def using(self, index: int, direction: int):
        """Context around a call of layer ``index`` of layers() (direction +1 in a forward,
        -1 in a backward): the layer_hooks' context, or a no-op."""
        if self.layer_hooks is None:
            return _NO_HOOK
        return self.layer_hooks.use(self, index, direction)

    def release(self, slot: int) -> None:
        """Drop the activations of ``slot`` in every layer (after a failed or abandoned step)."""
        for layer in self.layers():
            layer.release(slot)

    def layers(self) -> list[Any]:
        """The layers in forward order: [embedding?, *blocks, head?]."""
        return ([self.embedding] if self.embedding is not None else []) + self.blocks + (
            [self.head] if self.head is not None else [])

    @staticmethod
    def loss_sum(losses) -> float:
        """The float64 sum of per-position losses (a Tensor on any device), on the host."""
        return float(np.asarray(losses.to("cpu"), dtype=np.float64).sum())

    @staticmethod
    def mean_loss(losses, count: int) -> float:
        """loss_sum(losses) / count; 0.0 when no target counted."""
        return Model.loss_sum(losses) / count if count else 0.0

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({c.arch}, {c.n_layer} layers, {c.n_embd} wide, {self.num_parameters():,} parameters, "
                f"{self.dtype} on {self.device})")


class PendingLoss:
    """The mean loss of a forward_backward(read_loss=False), kept on the device until
    float() (or .item()) reads it: the per-position losses and the count of targets."""

    __slots__ = ("losses", "count")

    def __init__(self, losses: Any, count: int):
        self.losses, self.count = losses, count

    def __float__(self) -> float:
        return Model.mean_loss(self.losses, self.count)

    item = __float__

    def __repr__(self) -> str:
        return f"PendingLoss({self.count} targets)"


def build_model(config: ModelConfig, device: str = "cpu", dtype: Any = None, seed: int = 0, *,
                blocks: Iterable[int] | None = None, embedding: bool = True, head: bool = True,
                attention: str | None = None, deterministic_attention: bool = False) -> Model:
    """Build and initialise a model (GPT-2 initialisation, drawn on the host from
    numpy.random.default_rng(seed) in a fixed order, so every device, dtype and pipeline
    split gets the same weights).

    dtype: None means float32 on the CPU and bfloat16 on a GPU. ``blocks`` (global block
    indices), ``embedding`` and ``head`` select a pipeline stage's share of the layers; a
    tied head without the embedding holds its own copy of wte (named embedding.wte.weight).
    ``attention``: the GPU attention implementation (Model.attention; None: process-wide).
    ``deterministic_attention``: a bitwise reproducible attention backward
    (Model.deterministic_attention).
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"build_model: config must be a ModelConfig, got {type(config).__name__}")
    device = _norm_device(device)
    dtype = _resolve_dtype(device, dtype)
    block_ids = list(range(config.n_layer)) if blocks is None else list(blocks)
    for i in block_ids:
        if not 0 <= i < config.n_layer:
            raise ValueError(f"build_model: block index {i} out of range [0, {config.n_layer})")

    emb = None
    if embedding:
        emb = nn.Embedding(config.vocab_size, config.n_embd, config.max_seq_len, config.learned_positions,
                                dtype, device)
    bcfg = nn.BlockConfig(n_embd=config.n_embd, n_head=config.n_head, n_kv_head=config.n_kv_head,
                               ffn_hidden=config.ffn_hidden, norm=config.norm, mlp=config.mlp, bias=config.bias,
                               rope=config.rope, rope_base=config.rope_base, norm_eps=config.norm_eps)
    blks = [nn.TransformerBlock(bcfg, dtype, device) for _ in block_ids]
    hd = None
    if head:
        if config.tie_embeddings and emb is not None:
            hd = nn.LMHead(emb, config.norm, config.norm_eps)
        else:
            hd = nn.LMHead(config.n_embd, config.vocab_size, config.norm, config.norm_eps, dtype, device)
    model = Model(config, device, dtype, emb, blks, block_ids, hd)
    model.attention = attention
    model.deterministic_attention = deterministic_attention
    model.recompute = config.recompute
    model._initialize(seed)
    return model
