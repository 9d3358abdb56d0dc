"""The engine interface: how one rank takes training steps, whatever the training mode.

The Trainer (train/trainer.py) reads batches, asks the LR schedule for the rate, and hands
both to its engine; it never asks which mode runs. An engine owns this rank's model share,
its optimizer state and its communication.

    engine.train_step((inputs, targets), lr, guard) -> the global batch's mean loss
    engine.evaluate(val_batches)                     -> mean val loss (None: not this rank)
    engine.grad_norm(), engine.last_step_skipped     -> after a step
    engine.metrics()                                 -> extra fields of a metrics record
    engine.state_dict() / load_state_dict(state)     -> checkpoints (CheckpointState)
    engine.full_model()                              -> the whole Model on rank 0 (collective)
    engine.start() / engine.finish()                 -> before the first / after the last step

See docs/architecture.md ("Adding a training mode") for how to add a mode.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

Batch = tuple[np.ndarray, np.ndarray]   # (inputs, targets): int [B_rank, T] token ids


@dataclass
class CheckpointState:
    """What one rank writes into a checkpoint. ``model`` / ``optim``: {name: array} by
    parameter name (the whole model's, merged over the ranks that write them; None when this
    rank writes none: replicas hold the same values); ``optimizer_step``: AdamW steps
    applied (its bias correction), which is not the trainer step when steps were skipped."""
    model: dict[str, np.ndarray] | None
    optim: dict[str, Any] | None
    optimizer_step: int


class Engine(ABC):
    """One rank's training steps in one mode (single process, dp x pp, parameter-server
    worker). Subclasses set the attributes below in __init__."""

    model_config: Any             # ModelConfig of the whole model
    device: str
    data_rank: int = 0            # this rank reads rows data_rank::data_world of a global batch
    data_world: int = 1
    val_rank: int = 0             # and these rows of each val batch
    val_world: int = 1
    last_grad_norm: float = float("nan")
    last_step_skipped: bool = False

    @abstractmethod
    def train_step(self, batch: Batch, lr: float, guard: Any) -> float:
        """One optimizer step on this rank's rows of the global batch; returns the global
        batch's mean loss. ``guard`` (train/nonfinite.StepGuard) decides on non-finite
        values: ``guard.accept(loss, grad_norm)`` is True to apply the update, False to skip
        it, or raises to stop the run; an engine that can only see them after its update
        raises through ``guard.after_update``."""

    @abstractmethod
    def evaluate(self, batches: Iterable[Batch]) -> float | None:
        """Mean loss over the val batches (this rank's rows of each); forward only. None on
        ranks whose mode leaves evaluation to another rank."""

    def grad_norm(self) -> float:
        """The global gradient norm of the last step (before clipping)."""
        return self.last_grad_norm

    def comm_bytes(self) -> int | None:
        """Payload bytes this rank sent and received in the last step's gradient exchange;
        None when the mode exchanges nothing."""
        return None

    def metrics(self) -> dict[str, Any]:
        """Mode-specific fields of a metrics record (besides loss, lr, grad norm, ...)."""
        n = self.comm_bytes()
        return {} if n is None else {"comm_bytes": n}

    def summary(self) -> dict[str, Any]:
        """Mode-specific fields of the run summary (summary.json)."""
        return {}

    @abstractmethod
    def state_dict(self) -> CheckpointState:
        """This rank's share of a checkpoint. A collective in modes whose state is spread
        over ranks: every rank calls it."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint: ``state`` has "model" (every parameter of the model,
        by name, merged over the rank files), "optim" (the optimizer state by name),
        "step" (the trainer step) and "optimizer_step". Raises ValueError naming what does
        not fit."""

    @abstractmethod
    def full_model(self) -> Any:
        """The whole Model on rank 0 (gathered where it is spread; a collective: every rank
        calls it); None on the other ranks."""

    def start(self) -> None:
        """After a checkpoint was (or was not) restored, before the first step."""

    def finish(self) -> dict[str, Any]:
        """After the last step (every rank): end-of-run work; returns fields for the summary."""
        return {}
