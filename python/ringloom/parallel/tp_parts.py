"""Building blocks of the tensor-parallel layers (tp_layers.py): parameters, per-slot
saved state, norms and linears that hold parameters, and the tp group's collectives on
sequence-parallel shards."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from .. import _C
from .tp_layout import TPLayout

ops = _C.ops


@dataclass
class TPParam:
    """A parameter: ``name`` (local to the layer), ``value`` (layer dtype), ``grad`` (float32),
    ``decay`` (weight decay applies)."""
    name: str
    value: Any
    grad: Any
    decay: bool


def make_param(name: str, shape: list[int], dtype: Any, device: str, decay: bool) -> TPParam:
    return TPParam(name, _C.zeros(shape, dtype, device), _C.zeros(shape, "float32", device), decay)


class Slots:
    """Per-slot saved state with the checks of layer.h's SlotMap."""

    def __init__(self, layer: str):
        self.layer, self.map = layer, {}

    def check_free(self, slot: int) -> None:
        if slot in self.map:
            raise RuntimeError(f"{self.layer}.forward: slot {slot} still holds activations of an earlier forward; "
                               f"run its backward or release({slot}) first")

    def store(self, slot: int, saved: dict) -> None:
        self.check_free(slot)
        self.map[slot] = ["F", saved]

    def take(self, slot: int, stage: str, what: str) -> dict:
        e = self.map.get(slot)
        if e is None:
            raise RuntimeError(f"{self.layer}.{what}: slot {slot} has no activations (no forward on it, or it was "
                               "already released)")
        if e[0] != stage:
            need = "backward_input first" if stage == "I" else f"backward_weight({slot}) next"
            raise RuntimeError(f"{self.layer}.{what}: slot {slot} is not ready for {what}; call {need}")
        return e[1]

    def input_done(self, slot: int) -> None:
        self.map[slot][0] = "I"


class Norm:
    """LayerNorm (gain, bias) or RMSNorm (gain) over C, replicated on every tp rank."""

    def __init__(self, name: str, kind: str, C: int, eps: float, dtype: Any, device: str):
        self.kind, self.eps = kind, float(eps)
        self.gamma = make_param(f"{name}.weight", [C], dtype, device, False)
        self.beta = make_param(f"{name}.bias", [C], dtype, device, False) if kind == "layernorm" else None

    def params(self) -> list[TPParam]:
        return [self.gamma] + ([self.beta] if self.beta is not None else [])

    def forward(self, x: Any) -> tuple[Any, tuple]:
        if self.beta is not None:
            y, mean, rstd = ops.layernorm_forward(x, self.gamma.value, self.beta.value, self.eps)
            return y, (x, mean, rstd)
        y, rstd = ops.rmsnorm_forward(x, self.gamma.value, self.eps)
        return y, (x, None, rstd)

    def backward_input(self, dy: Any, saved: tuple, grads: list[Any]) -> Any:
        """dx; the gain/bias gradients are added into ``grads`` (zeroed fp32 views)."""
        x, mean, rstd = saved
        if self.beta is not None:
            return ops.layernorm_backward(dy, x, self.gamma.value, mean, rstd, grads[0], grads[1])
        return ops.rmsnorm_backward(dy, x, self.gamma.value, rstd, grads[0])


class Linear:
    """y = x W^T + b, W [out, in]; the bias may be absent."""

    def __init__(self, name: str, inp: int, out: int, bias: bool, dtype: Any, device: str, bias_decay: bool = False):
        self.weight = make_param(f"{name}.weight", [out, inp], dtype, device, True)
        self.bias = make_param(f"{name}.bias", [out], dtype, device, bias_decay) if bias else None

    def params(self) -> list[TPParam]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])


class TPComm:
    """The tp group's collectives on [B, T/R, C] shards and [B, T, C] full tensors."""

    def __init__(self, group: Any, layout: TPLayout):
        self.group, self.R, self.rank = group, layout.tp, layout.rank

    def gather(self, shard: Any, async_op: bool = False) -> Any:
        """[B, T/R, C] -> [B, T, C] (returns the tensor, or a Work whose wait() returns it)."""
        B, Ts, C = shard.shape
        out = _C.empty([B, Ts * self.R, C], shard.dtype, shard.device)
        return self.group.all_gather(out, shard, async_op=async_op)

    def scatter(self, full: Any, async_op: bool = False) -> Any:
        """[B, T, C] partial sums -> this rank's [B, T/R, C] rows of their sum."""
        B, T, C = full.shape
        out = _C.empty([B, T // self.R, C], full.dtype, full.device)
        return self.group.reduce_scatter(out, full, async_op=async_op)

    def replicated_grads(self, sizes: list[int], device: str) -> tuple[Any, list[Any]]:
        """A zeroed fp32 buffer and views of it, one per size, to be summed over the group."""
        flat = _C.zeros([max(1, sum(sizes))], "float32", device)
        views, off = [], 0
        for n in sizes:
            views.append(flat.narrow0(off, n))
            off += n
        return flat, views


@contextmanager
def attention_backend(name: str | None) -> Iterator[None]:
    """The block's attention implementation for the calls inside (None: the process's)."""
    if name is None:
        yield
        return
    before = ops.get_attention_backend()
    ops.set_attention_backend(name)
    try:
        yield
    finally:
        ops.set_attention_backend(before)


def finish_replicated(work: Any, views: list[Any], params: list[TPParam]) -> None:
    work.wait()
    for v, p in zip(views, params):
        ops.add_(p.grad, v)


def check_shard(what: str, x: Any, C: int, R: int, dtype: Any, device: str) -> None:
    if len(x.shape) != 3 or x.shape[2] != C:
        raise ValueError(f"{what}: x must be a sequence-parallel shard [B, T/{R}, {C}], got shape {tuple(x.shape)}")
    if x.dtype != dtype or x.device != device:
        raise TypeError(f"{what}: x ({x.dtype} on {x.device}) must match the layer's dtype and device "
                        f"({dtype} on {device})")


def weight_grad(lin: Linear, dy: Any, x: Any) -> None:
    ops.matmul_backward_weight(dy, x, lin.weight.grad, lin.bias.grad if lin.bias is not None else None, True)
