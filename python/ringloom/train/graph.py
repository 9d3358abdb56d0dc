"""A whole training step captured in a CUDA Graph and replayed (trainer option --cuda-graph).

A step of a small model is hundreds of short kernels; launched one at a time from Python
the GPU waits in the gaps between them. CapturedStep records the step once (gradients replaced,
forward, backward, gradient norm, AdamW: ``_C.CudaGraph``, csrc/core/cuda/graph.h) and
from then on launches it as one graph:

    step = CapturedStep(model, optimizer, batch_shape=(B, T))
    for ids, targets in batches:
        loss = step.step(ids, targets, lr=schedule(i))

A replay repeats the recorded kernels with the recorded addresses, so everything that
changes between steps lives in device memory the graph reads:
  - ids and targets are copied into two static [B, T] int32 buffers before each launch;
  - lr and the AdamW step count (its bias correction) reach the kernel through a small
    device buffer (AdamW.use_device_scalars) that AdamW.prepare_step refills, outside the
    graph, before each launch;
  - the per-position losses land in a buffer the graph owns; the loss is read from it
    after the launch (the same float64 mean Model.forward_backward takes).
The first ``warmup_steps`` calls run eagerly (real steps, same code path): they build
AdamW's cached kernel tables and the cuBLASLt plans, which must not be created while
recording. Memory the capture allocates comes from the graph's private pool of the caching
allocator (csrc/core/cuda/allocator.h) and stays the graph's while it lives. The capture
itself records without executing, so the call that captures then launches the graph once
to take its step; a capture that fails is aborted before anything ran, the step is not
counted, and the error propagates.

Limits: one fixed batch shape; every target must be a real token (no ignore_index
positions: the gradient scale 1/(B*T) is recorded in the graph); nothing else may use the
device from another thread during the capture; the update always happens (non-finite
values are seen only after the step, when the loss and norm are read).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _C
from ..tensor import tensor as _tensor


class CapturedStep:
    """One training step of ``model`` with ``optimizer`` as a replayed CUDA Graph.

    model: a complete ringloom Model on a CUDA device. optimizer: the AdamW over
    model.parameters(). batch_shape: (B, T) of every batch passed to step().
    """

    def __init__(self, model: Any, optimizer: Any, batch_shape: tuple[int, int], warmup_steps: int = 2):
        if not _C.has_cuda_build:
            raise RuntimeError("CapturedStep: this ringloom was built without CUDA; CUDA Graphs need the CUDA backend")
        device = str(getattr(model, "device", "cpu"))
        if not device.startswith("cuda"):
            raise ValueError(f"CapturedStep: the model is on {device}; CUDA Graphs need a model on a CUDA device "
                             "(build_model(..., device='cuda'))")
        if not _C.cuda_available():
            raise RuntimeError("CapturedStep: no CUDA device is visible")
        model._require_complete("CapturedStep")
        if [n for n, _ in optimizer.named] != [n for n, _ in model.parameters()]:
            raise ValueError("CapturedStep: the optimizer must be built over model.parameters() (names differ)")
        try:
            B, T = (int(v) for v in batch_shape)
        except (TypeError, ValueError):
            raise ValueError(f"CapturedStep: batch_shape must be (B, T), got {batch_shape!r}") from None
        if B < 1 or T < 1:
            raise ValueError(f"CapturedStep: batch_shape must be positive, got {(B, T)}")
        if T > model.config.max_seq_len:
            raise ValueError(f"CapturedStep: sequence length {T} exceeds the model's max_seq_len of "
                             f"{model.config.max_seq_len}")
        if not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"CapturedStep: warmup_steps must be an integer >= 1 (kernel tables and GEMM plans "
                             f"are built by an eager step), "
                             f"got {warmup_steps!r}")
        self.model, self.optimizer = model, optimizer
        self.device = device
        self.batch_shape = (B, T)
        self.warmup_steps = warmup_steps
        self._ids = _C.zeros([B, T], "int32", device)
        self._targets = _C.zeros([B, T], "int32", device)
        self._grad_scale = 1.0 / (B * T)  # the gradient of the mean; Model.forward_backward's default
        optimizer.use_device_scalars()
        model.grads_pinned_by = "a CapturedStep (its graph writes to the gradients' addresses)"
        self.graph = None        # _C.CudaGraph once captured
        self._losses = None      # the captured step's per-position losses (graph-owned memory)
        self.steps = 0           # step() calls so far, eager ones included

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def step(self, ids: Any, targets: Any, lr: float | None = None) -> float:
        """One training step on ids, targets (int [B, T]: NumPy or int32 Tensor); returns
        the mean loss. ``lr``: this step's learning rate (default: the optimizer's)."""
        self._load(self._ids, ids, "ids")
        self._load(self._targets, targets, "targets")
        self.optimizer.prepare_step(lr)  # outside the graph: writes lr and the step's bias corrections
        if self.steps < self.warmup_steps:
            losses = self._run()
        else:
            if self.graph is None:
                self._capture()
            self.graph.replay()
            losses = self._losses
        self.steps += 1
        B, T = self.batch_shape
        return self.model.mean_loss(losses, B * T)

    # ------------------------------------------------------------------ internals

    def _load(self, dst: Any, x: Any, what: str) -> None:
        """Validates a batch and copies it into its static device buffer."""
        shape = self.batch_shape
        if isinstance(x, _C.Tensor):
            if x.dtype != _C.DType.int32 or tuple(x.shape) != shape:
                raise ValueError(f"CapturedStep: {what} must be an int32 tensor of the captured shape {shape}, "
                                 f"got {x.dtype} of shape {tuple(x.shape)}")
            dst.copy_(x.to(self.device))
            return
        a = np.asarray(x)
        if a.dtype.kind not in "iu":
            raise TypeError(f"CapturedStep: {what} must be integers, got {a.dtype} array of shape {a.shape}")
        if a.shape != shape:
            raise ValueError(f"CapturedStep: {what} has shape {a.shape}, but the step was built for {shape}")
        V = self.model.config.vocab_size
        bad = (a < 0) | (a >= V)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"CapturedStep: {what}: token id {int(a[where])} at {where} is outside the vocabulary "
                             f"[0, {V}) (a captured step has no ignore_index positions)")
        dst.copy_(_tensor(np.ascontiguousarray(a, dtype=np.int32), dtype=_C.DType.int32))

    def _run(self) -> Any:
        """The step's device work, exactly what the graph records: returns the losses."""
        m = self.model
        m.replace_grads_next()  # the step's gradients replace the last ones (recorded as such)
        try:
            x = m.embedding.forward(0, self._ids)
            for b in m.blocks:
                x = b.forward(0, x)
            losses = m.head.forward_loss(0, x, self._targets, self._grad_scale, -100)
            dx = m.head.backward(0, None)
            for b in reversed(m.blocks):
                dx = b.backward(0, dx)
            m.embedding.backward(0, dx)
        except BaseException:
            m.release(0)
            m.zero_grad()  # no layer left set to replace
            raise
        self.optimizer.apply_step()
        return losses

    def _capture(self) -> None:
        index = int(self.device.split(":")[1]) if ":" in self.device else 0
        graph = _C.CudaGraph(index)
        graph.capture_begin()
        try:
            losses = self._run()
            graph.capture_end()
        except BaseException:
            graph.capture_abort()
            self.optimizer.step_count -= 1  # prepare_step counted a step that was not taken
            raise
        self.graph, self._losses = graph, losses
