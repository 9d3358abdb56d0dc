"""AdamW over a model's parameters, on top of the fused multi-tensor op.

Master weights and moments are fp32. On the CPU the layers' fp32 parameters are the
masters themselves. When a layer computes in bf16 (GPU), the optimizer keeps an fp32
master copy and writes the updated bf16 compute copy in the same pass (ops.adamw_step's
`compute` list). Gradient-norm clipping is folded into the step: the norm is computed on
the device and read there, so a step needs no host synchronisation.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from .. import _C
from ..tensor import host_copy

ops = _C.ops


class AdamW:
    def __init__(self, params: Iterable[tuple[str, Any]], lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.1, max_grad_norm: float = 0.0):
        self.named = list(params)
        if not self.named:
            raise ValueError("AdamW: no parameters to optimise")
        names = [n for n, _ in self.named]
        if len(set(names)) != len(names):
            raise ValueError("AdamW: duplicate parameter names")
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.max_grad_norm = float(max_grad_norm)
        self.step_count = 0
        self._values = [p.value for _, p in self.named]
        self._grads = [p.grad for _, p in self.named]
        mixed = any(v.dtype != _C.DType.float32 for v in self._values)
        # fp32 masters: the parameters themselves, or copies when the model computes in bf16.
        self._masters = [v.to(_C.DType.float32) if mixed else v for v in self._values]
        self._compute = list(self._values) if mixed else []
        self._m = [_C.zeros(list(v.shape), "float32", v.device) for v in self._values]
        self._v = [_C.zeros(list(v.shape), "float32", v.device) for v in self._values]
        self._wd = [self.weight_decay if p.decay else 0.0 for _, p in self.named]
        self.last_grad_norm = None  # a 1-element device tensor
        self._scalars = None        # [lr, 1/bc1, 1/bc2] on the device (use_device_scalars)
        self._step_lr = self.lr

    def compute_grad_norm(self) -> Any:
        """The global gradient norm of these gradients as a 1-element device tensor (no host
        sync); the trainer checks it for non-finite values, then passes it to step()."""
        return ops.grad_norm(self._grads)

    def step(self, lr: float | None = None, grad_norm: Any = None) -> None:
        """One update with the gradients currently in the parameters' grad tensors.
        ``grad_norm``: a 1-element fp32 tensor on the parameters' device to clip by instead
        of these gradients' own norm (parallel training: the norm over every rank's share)."""
        self.prepare_step(lr)
        self.apply_step(grad_norm)

    # step() in two halves, for CUDA Graphs (train/graph.py): prepare_step is the host's
    # part (the step count, and with device scalars a write of lr and the bias corrections
    # into device memory) and stays outside the graph; apply_step is pure device work that
    # a graph can capture once and replay with whatever prepare_step wrote.
    def use_device_scalars(self) -> None:
        """From now on lr and the bias corrections reach the kernel through a 3-element
        device tensor that prepare_step fills (ops.adamw_write_scalars), not as launch
        arguments: a captured apply_step then follows the schedule on every replay."""
        if self._scalars is None:
            self._scalars = _C.zeros([3], "float32", self._values[0].device)

    def prepare_step(self, lr: float | None = None) -> None:
        """Counts the step and records its lr (host side; see use_device_scalars)."""
        self.step_count += 1
        self._step_lr = self.lr if lr is None else float(lr)
        if self._scalars is not None:
            ops.adamw_write_scalars(self._scalars, lr=self._step_lr, beta1=self.betas[0], beta2=self.betas[1],
                                    step=self.step_count)

    def apply_step(self, grad_norm: Any = None) -> None:
        """The update for the step prepare_step counted: device work only, no host sync."""
        norm = ops.grad_norm(self._grads) if grad_norm is None else grad_norm
        self.last_grad_norm = norm
        ops.adamw_step(self._masters, self._grads, self._m, self._v, self._wd, lr=self._step_lr,
                       beta1=self.betas[0], beta2=self.betas[1], eps=self.eps, step=max(self.step_count, 1),
                       max_norm=self.max_grad_norm, grad_norm=norm if self.max_grad_norm > 0 else None,
                       compute=self._compute, scalars=self._scalars)

    def grad_norm(self) -> float:
        """The global gradient norm of the last step (reads the device: a sync on GPU)."""
        if self.last_grad_norm is None:
            return float("nan")
        return float(np.asarray(self.last_grad_norm.numpy()).reshape(-1)[0])

    # -- state for checkpoints: moments and masters as fp32 NumPy arrays, by parameter name.
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"step": self.step_count}
        for (name, _), m, v, w in zip(self.named, self._m, self._v, self._masters):
            state[f"m.{name}"] = host_copy(m)
            state[f"v.{name}"] = host_copy(v)
            if self._compute:
                state[f"master.{name}"] = host_copy(w)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {f"{k}.{n}" for n, _ in self.named for k in ("m", "v")}
        missing = sorted(k for k in expected if k not in state)
        if missing:
            raise ValueError(f"AdamW.load_state_dict: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}")
        for (name, p), m, v, w in zip(self.named, self._m, self._v, self._masters):
            for key, dst in ((f"m.{name}", m), (f"v.{name}", v)):
                arr = np.ascontiguousarray(state[key], dtype=np.float32)
                if tuple(arr.shape) != tuple(dst.shape):
                    raise ValueError(f"AdamW.load_state_dict: {key} has shape {arr.shape}, expected {tuple(dst.shape)}")
                dst.copy_(_C.from_numpy(arr).to(dst.device))
            if self._compute and f"master.{name}" in state:
                w.copy_(_C.from_numpy(np.ascontiguousarray(state[f"master.{name}"], dtype=np.float32)).to(w.device))
        self.step_count = int(state["step"])

    def sync_masters_from_params(self) -> None:
        """After loading new weights into a bf16 model, refresh the fp32 masters."""
        if self._compute:
            for w, v in zip(self._masters, self._values):
                w.copy_(v.to(_C.DType.float32))


def param_groups_summary(named: Sequence[tuple[str, Any]]) -> str:
    decay = sum(int(np.prod(p.value.shape)) for _, p in named if p.decay)
    total = sum(int(np.prod(p.value.shape)) for _, p in named)
    return f"{total:,} parameters ({decay:,} with weight decay)"
