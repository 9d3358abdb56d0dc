"""SingleEngine: one process, the whole model and an AdamW; with ``cuda_graph`` the step is
captured once and replayed (train/graph.py)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ...checkpoint.manager import CheckpointError
from ...models import build_model
from ...optim import AdamW
from ..nonfinite import host_scalar
from .base import Batch, CheckpointState, Engine

_GRAPH_STOP = ("with --cuda-graph: the captured step had already applied its update; resume from the last "
               "checkpoint with a lower --lr")


class SingleEngine(Engine):
    def __init__(self, model_config: Any, *, device: str, dtype: str, seed: int, lr: float, weight_decay: float,
                 max_grad_norm: float, attention: str | None = None, deterministic_attention: bool = False,
                 cuda_graph: bool = False,
                 batch_shape: tuple[int, int] | None = None):
        self.model_config = model_config
        self.model = build_model(model_config, device=device, dtype=dtype, seed=seed, attention=attention,
                                 deterministic_attention=deterministic_attention)
        self.device = self.model.device
        self.optimizer = AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        self.captured = None
        if cuda_graph:
            from ..graph import CapturedStep

            self.captured = CapturedStep(self.model, self.optimizer, batch_shape)
        else:
            self.model.release_grads()  # each backward allocates them; each step releases them

    def train_step(self, batch: Batch, lr: float, guard: Any) -> float:
        inputs, targets = batch
        if self.captured is not None:
            # The whole step (update included) is one graph launch: the loss and the norm
            # are read after it.
            loss = self.captured.step(inputs, targets, lr=lr)
            self.last_grad_norm = self.optimizer.grad_norm()
            guard.after_update(loss, self.last_grad_norm, _GRAPH_STOP)
            return loss
        # The gradients replace the old ones; the norm is queued before the first read.
        pending = self.model.forward_backward(inputs, targets, accumulate=False, read_loss=False)
        norm = self.optimizer.compute_grad_norm()
        loss = float(pending)
        self.last_grad_norm = host_scalar(norm)
        self.last_step_skipped = not guard.accept(loss, self.last_grad_norm)
        if not self.last_step_skipped:
            self.optimizer.step(lr=lr, grad_norm=norm)
        # Until the next backward writes them, the gradients' bytes serve the forward's activations.
        self.model.release_grads()
        return loss

    def evaluate(self, batches: Iterable[Batch]) -> float:
        return float(np.mean([self.model.loss(x, y) for x, y in batches]))

    def state_dict(self) -> CheckpointState:
        return CheckpointState(self.model.state_dict(), self.optimizer.state_dict(), self.optimizer.step_count)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        if self.optimizer.step_count != int(state["optimizer_step"]):
            raise CheckpointError(f"optimizer step {self.optimizer.step_count} disagrees with the trainer state's "
                             f"{state['optimizer_step']}")

    def full_model(self) -> Any:
        return self.model
