"""Learning-rate schedules: a function of the 0-based step.

warmup_cosine: linear warmup from lr/warmup to lr over `warmup` steps, then a cosine
decay to min_lr at `total` steps (Loshchilov & Hutter 2017, without restarts):
    lr(s) = min_lr + (lr - min_lr) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    kind: str  # "cosine" | "linear" | "constant"
    lr: float
    total: int
    warmup: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "linear", "constant"):
            raise ValueError(f"unknown LR schedule {self.kind!r}: expected cosine, linear or constant")
        if self.lr < 0 or self.min_lr < 0:
            raise ValueError(f"learning rates must be >= 0, got lr={self.lr} min_lr={self.min_lr}")
        if self.warmup < 0 or self.total < 0:
            raise ValueError(f"warmup and total must be >= 0, got warmup={self.warmup} total={self.total}")

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.kind == "constant" or self.total <= self.warmup:
            return self.lr
        frac = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "linear":
            return self.lr + (self.min_lr - self.lr) * frac
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


def warmup_cosine(lr: float, total: int, warmup: int = 0, min_lr: float = 0.0) -> LRSchedule:
    return LRSchedule("cosine", lr, total, warmup, min_lr)


def linear_decay(lr: float, total: int, warmup: int = 0, min_lr: float = 0.0) -> LRSchedule:
    return LRSchedule("linear", lr, total, warmup, min_lr)


def constant(lr: float, warmup: int = 0) -> LRSchedule:
    return LRSchedule("constant", lr, 0, warmup)
