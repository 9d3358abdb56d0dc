"""The training run's configuration: one dataclass, filled from the CLI or from Python."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    preset: str = "tiny"
    steps: int = 1000
    batch_size: int = 16          # global batch, in sequences, whatever the parallel layout
    seq_len: int = 128
    lr: float = 3e-3
    min_lr: float | None = None   # default lr / 10
    warmup: int = 50
    schedule: str = "cosine"      # LR schedule: cosine | linear | constant
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 200
    eval_batches: int = 8
    log_every: int = 10
    device: str = "cpu"
    dtype: str | None = None      # default: float32 on cpu, bfloat16 on cuda
    out: str | None = None
    data: list[str] = field(default_factory=list)  # empty: the built-in corpus
    tokenizer: str = "byte"
    sample_every: int = 0
    sample_len: int = 200
    temperature: float = 0.8
    top_k: int = 40
    progress: bool = True
    # Parallel layout (issue: parallel training); 1 x 1 is single-process training.
    dp: int = 1
    pp: int = 1
    pipeline_schedule: str = "1f1b"
    micro_batches: int = 1
    save_every: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "eval_batches", "log_every", "dp", "pp", "micro_batches"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if self.min_lr is None:
            self.min_lr = self.lr / 10

    @classmethod
    def from_args(cls, args: Any) -> "TrainConfig":
        """From an argparse namespace: fields present on it override the defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in vars(args).items() if k in names and v is not None}
        if "schedule" in vars(args) and getattr(args, "schedule", None) in ("gpipe", "1f1b", "interleaved", "zb-h1", "zbh1"):
            # --schedule on the CLI names the pipeline schedule; the LR schedule is --lr-schedule.
            kw["pipeline_schedule"] = args.schedule
            kw.pop("schedule", None)
        if getattr(args, "lr_schedule", None):
            kw["schedule"] = args.lr_schedule
        if kw.get("data") is None:
            kw["data"] = []
        return cls(**kw)
