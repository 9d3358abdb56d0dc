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
    lr_schedule: str = "cosine"   # cosine | linear | constant
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 1337
    eval_every: int = 200
    eval_batches: int = 8
    log_every: int = 10
    device: str = "cpu"
    dtype: str = "auto"           # auto: float32 on cpu, bfloat16 on cuda
    threads: int = 0              # CPU threads of the ops, 0 = auto (trainer.cpu_threads)
    out: str | None = None
    data: list[str] = field(default_factory=list)  # empty: the built-in corpus
    tokenizer: str = "byte"
    corpus_bytes: int = 8_000_000
    val_fraction: float = 0.1
    sample_every: int = 0
    sample_len: int = 200
    temperature: float = 0.8
    top_k: int = 40
    prompt: str = ""
    progress: bool = True
    # Parallel layout (issue: parallel training); 1 x 1 is single-process training.
    dp: int | None = None         # None: world size / pp
    pp: int = 1
    schedule: str = "1f1b"        # pipeline schedule: gpipe | 1f1b | interleaved | zb-h1 (alias zb)
    micro_batches: int | None = None  # per step and dp rank; None: pp
    chunks: int | None = None     # virtual stages per rank (interleaved; default 2)
    stage_layers: list[int] | None = None  # blocks per (virtual) stage; None: balanced by parameters
    zero: bool = False            # ZeRO-1: optimizer state sharded over the dp ranks
    bucket_mb: float = 25.0       # gradient all-reduce bucket size
    compression: str = "none"     # none | bf16 | topk:RATIO | powersgd:RANK | qsgd:S[:BUCKET] (parallel/compression.py)
    local_sgd: int = 0            # average replicas every H steps instead of all-reducing gradients; 0 = off
    local_sgd_moments: bool = False
    # Parameter-server training (train/ps_training.py): the last param_servers ranks serve.
    param_servers: int = 0        # 0 = off (all-reduce data parallel)
    ps_mode: str = "sync"         # sync | async (bounded staleness)
    ps_staleness: int = 0         # async: steps a worker may run ahead of the slowest
    trace: str | None = None      # Chrome trace JSON of every rank's compute and communication
    backend: str | None = None
    save_every: int = 0
    resume: str | None = None     # None, "latest" or a checkpoint path
    # Checkpoints, failures, metrics (docs/training.md).
    keep_checkpoints: int = 3     # newest complete checkpoints kept; 0 = all
    on_nonfinite: str = "stop"    # stop | skip (train/nonfinite.py)
    peak_tflops: float | None = None  # MFU denominator; None: 989 on GPU, no MFU on CPU
    tensorboard: bool = True      # event files in --out/tb
    cuda_graph: bool = False      # replay each step as a captured CUDA Graph (train/graph.py)
    attention: str = "auto"       # GPU attention: ours | cudnn | auto (Model.attention)
    deterministic_attention: bool = False  # bitwise repeatable attention backward on a GPU

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "eval_batches", "log_every", "dp", "pp", "micro_batches",
                     "chunks"):
            v = getattr(self, name)
            if v is None and name in ("dp", "micro_batches", "chunks"):
                continue
            if not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.attention not in ("ours", "cudnn", "auto"):
            raise ValueError(f"attention must be ours, cudnn or auto, got {self.attention!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be stop or skip, got {self.on_nonfinite!r}")
        if not isinstance(self.keep_checkpoints, int) or self.keep_checkpoints < 0:
            raise ValueError(f"keep_checkpoints must be an integer >= 0, got {self.keep_checkpoints!r}")
        if self.save_every < 0:
            raise ValueError(f"save_every must be >= 0, got {self.save_every}")
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        if self.schedule == "zb":
            self.schedule = "zb-h1"
        from ..parallel.compression import parse_compression

        parse_compression(self.compression)   # an unknown spec fails here, before any process work
        if not isinstance(self.local_sgd, int) or self.local_sgd < 0:
            raise ValueError(f"local_sgd must be an integer >= 0 (0 = off), got {self.local_sgd!r}")
        if self.local_sgd and (self.zero or self.compression not in ("none", "")):
            raise ValueError("local_sgd averages weights, not gradients: it cannot be combined with zero or "
                             "compression")
        for name in ("param_servers", "ps_staleness"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.ps_mode not in ("sync", "async"):
            raise ValueError(f"ps_mode must be sync or async, got {self.ps_mode!r}")
        if self.bucket_mb <= 0:
            raise ValueError(f"bucket_mb must be positive, got {self.bucket_mb}")

    @classmethod
    def from_args(cls, args: Any) -> "TrainConfig":
        """From an argparse namespace: fields present on it override the defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in vars(args).items() if k in names and v is not None}
        if getattr(args, "no_progress", False):
            kw["progress"] = False
        if getattr(args, "no_tensorboard", False):
            kw["tensorboard"] = False
        return cls(**kw)
