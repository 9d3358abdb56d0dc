"""The training run's configuration: one dataclass, filled from the CLI or from Python."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


# Numeric fields and their ranges: (low, high), None = unbounded; every float must be
# finite (an infinite learning rate passes "lr >= 0" and turns the weights into -inf).
_INT_RANGES: dict[str, tuple[int, int | None]] = {
    "steps": (0, None), "batch_size": (1, None), "seq_len": (1, None), "warmup": (0, None),
    "seed": (0, 2**63 - 1), "eval_every": (0, None), "eval_batches": (1, None), "log_every": (1, None),
    "threads": (0, 1024), "corpus_bytes": (1, None), "sample_every": (0, None), "sample_len": (0, None),
    "top_k": (0, None), "dp": (1, None), "pp": (1, None), "micro_batches": (1, None), "chunks": (1, None),
    "local_sgd": (0, None), "param_servers": (0, None), "ps_staleness": (0, None), "save_every": (0, None),
    "keep_checkpoints": (0, None)}
_FLOAT_RANGES: dict[str, tuple[float, float | None, bool]] = {   # (low, high, low excluded)
    "lr": (0.0, None, False), "min_lr": (0.0, None, False), "weight_decay": (0.0, None, False),
    "grad_clip": (0.0, None, False), "val_fraction": (0.0, 0.5, True), "temperature": (0.0, None, False),
    "bucket_mb": (0.0, None, True), "peak_tflops": (0.0, None, True)}
_OPTIONAL = ("dp", "micro_batches", "chunks", "min_lr", "peak_tflops")


def _option(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"


def check_numbers(cfg: "TrainConfig") -> None:
    """Every numeric field of ``cfg`` is of its type, finite and in its range, and the
    prompt is text that can be encoded; ValueError naming the field and its CLI option."""
    for name, (low, high) in _INT_RANGES.items():
        v = getattr(cfg, name)
        if v is None and name in _OPTIONAL:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high):
            bound = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
            raise ValueError(f"{_option(name)} must be {bound}, got {v!r}")
    for name, (low, high, open_low) in _FLOAT_RANGES.items():
        v = getattr(cfg, name)
        if v is None and name in _OPTIONAL:
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
            (v > low if open_low else v >= low) and (high is None or v <= high)
        if not ok:
            bound = f"a finite number {'>' if open_low else '>='} {low}" + (f" and <= {high}" if high else "")
            raise ValueError(f"{_option(name)} must be {bound}, got {v!r}")
    if not isinstance(cfg.prompt, str):
        raise ValueError(f"{_option('prompt')} must be text, got {cfg.prompt!r}")
    try:
        cfg.prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{_option('prompt')} is not valid UTF-8 text (it holds undecodable bytes)") from None


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
    overwrite: bool = False       # replace an existing run in out (train/run_dir.py)
    # Checkpoints, failures, metrics (docs/training.md).
    keep_checkpoints: int = 3     # newest complete checkpoints kept; 0 = all
    on_nonfinite: str = "stop"    # stop | skip (train/nonfinite.py)
    peak_tflops: float | None = None  # MFU denominator; None: 989 on GPU, no MFU on CPU
    tensorboard: bool = True      # event files in --out/tb
    cuda_graph: bool = False      # replay each step as a captured CUDA Graph (train/graph.py)
    attention: str = "auto"       # GPU attention: ours | cudnn | auto (Model.attention)

    def __post_init__(self) -> None:
        check_numbers(self)
        if self.attention not in ("ours", "cudnn", "auto"):
            raise ValueError(f"attention must be ours, cudnn or auto, got {self.attention!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be stop or skip, got {self.on_nonfinite!r}")
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr (--min-lr) {self.min_lr} is larger than lr (--lr) {self.lr}")
        if self.schedule == "zb":
            self.schedule = "zb-h1"
        from ..parallel.compression import parse_compression

        parse_compression(self.compression)   # an unknown spec fails here, before any process work
        if self.local_sgd and (self.zero or self.compression not in ("none", "")):
            raise ValueError("local_sgd averages weights, not gradients: it cannot be combined with zero or "
                             "compression")
        if self.ps_mode not in ("sync", "async"):
            raise ValueError(f"ps_mode must be sync or async, got {self.ps_mode!r}")

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
