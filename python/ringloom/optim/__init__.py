"""Optimizers and learning-rate schedules."""
from .adamw import AdamW
from .schedule import LRSchedule, constant, linear_decay, warmup_cosine

__all__ = ["AdamW", "LRSchedule", "warmup_cosine", "linear_decay", "constant"]
