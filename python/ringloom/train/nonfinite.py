"""What a step does when its loss or gradients are not finite (--on-nonfinite).

``stop`` (the default) raises NonFiniteError naming the step and what went wrong, before the
optimizer touches anything. ``skip`` drops the step: weights, AdamW moments and the AdamW
step count (its bias correction) stay as they were; the batch is consumed and the trainer
step and LR schedule advance, so a skipped step is counted (``skipped_steps`` in the metrics)
and the run still ends at --steps.

The check costs one read of the global gradient norm on the host per step (the loss is read
anyway), and the same norm tensor then feeds the optimizer's clipping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

POLICIES = ("stop", "skip")


class NonFiniteError(FloatingPointError):
    """A step produced a NaN/inf loss or gradient under --on-nonfinite stop."""


def host_scalar(t: Any) -> float:
    """A 1-element device tensor -> Python float."""
    a = t.cpu().numpy()
    return float(np.asarray(a, dtype=np.float64).reshape(-1)[0])


def step_is_finite(loss: float, grad_norm: float, step: int, policy: str) -> bool:
    """True: apply the update. False: skip it (policy "skip"). Raises NonFiniteError for
    "stop". ``step`` is the 1-based number of the step being taken."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return True
    if policy not in POLICIES:
        raise ValueError(f"on_nonfinite must be one of {POLICIES}, got {policy!r}")
    what = []
    if not math.isfinite(loss):
        what.append(f"loss is {loss}")
    if not math.isfinite(grad_norm):
        what.append(f"gradient norm is {grad_norm}")
    if policy == "skip":
        return False
    raise NonFiniteError(f"step {step}: {' and '.join(what)}; stopped before the update (weights and optimizer "
                         "state are those of the previous step). Lower --lr, check the data, or pass "
                         "--on-nonfinite skip to skip such steps")


@dataclass(frozen=True)
class StepGuard:
    """The non-finite policy for one step, as the trainer hands it to its engine."""
    step: int       # the 1-based number of the step being taken
    policy: str     # stop | skip

    def accept(self, loss: float, grad_norm: float) -> bool:
        """Before the update: True applies it, False skips it; raises under "stop"."""
        return step_is_finite(loss, grad_norm, self.step, self.policy)

    def after_update(self, loss: float, grad_norm: float, why: str) -> None:
        """For an engine that sees the values only after its update: raises NonFiniteError
        (naming the step and ``why`` the update could not be held back) when one is not finite."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise NonFiniteError(f"step {self.step}: loss {loss}, gradient norm {grad_norm} {why}")
