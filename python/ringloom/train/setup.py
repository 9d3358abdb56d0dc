"""What every rank of a run settles before it trains or serves: the options checked, the
device and threads, the process group, the data and the model's shape.

    run = prepare_run(cfg)        # RunSetup
    if run.is_server: serve(run)  # a parameter server (train/ps_server.py)
    else: Trainer(run)            # an engine (train/engines/) driven by the loop

No model is built here: that is the engine's job (train/engines/build_engine).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .. import _C
from .config import TrainConfig
from .options import Layout, launched_world, validate
from .run_dir import check_creatable, check_output_file, check_run_dir


def cpu_threads(requested: int = 0) -> int:
    """The CPU ops' thread count for --threads ``requested`` (0 = auto).

    Auto takes every core only when the 1-minute load average says they are free, and one
    thread otherwise. Threads that must wait for cores busy with other processes stall
    every fork-join and GEMM: on a 2-core machine the tiny preset ran 1.6x faster on 2
    threads than on 1 when idle, but 2.5x slower under a load of 4 (bench_train_cpu.py
    --threads); one thread is never far from the best and never that bad.
    """
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except OSError:  # no load average on this platform: assume a busy machine
        busy = float(cores)
    return cores if busy < 0.5 else 1


def resolve_device(cfg: TrainConfig) -> tuple[str, str]:
    """(device, dtype name) of this process; fails when the device is not there."""
    device = "cuda:0" if cfg.device == "cuda" else cfg.device
    if device.startswith("cuda"):
        if not _C.has_cuda_build:
            raise ValueError("--device cuda: this ringloom was built without CUDA")
        if not _C.cuda_available():
            raise ValueError("--device cuda: no CUDA device is visible")
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    return device, dtype


@dataclass
class RunSetup:
    """One rank's settled view of the run (see prepare_run)."""
    cfg: TrainConfig
    layout: Layout
    device: str             # "cpu" or "cuda:N" (a launched rank's own GPU)
    dtype: str              # "float32" | "bfloat16"
    threads: int            # CPU threads of the ops
    pg: Any                 # the process group (None: one process, no collectives)
    tokenizer: Any
    data: Any               # PreparedData: train/val shard paths, vocab size, tokenizer spec
    model_config: Any       # ModelConfig: the preset, the overrides, the data's vocabulary
    lr_schedule: Any        # LRSchedule: step -> learning rate

    @property
    def rank(self) -> int:
        return self.pg.rank if self.pg is not None else 0

    @property
    def world(self) -> int:
        return self.layout.world

    @property
    def is_main(self) -> bool:
        """Rank 0: it alone prints, logs metrics, samples and writes the model."""
        return self.rank == 0

    @property
    def is_server(self) -> bool:
        return self.layout.servers > 0 and self.rank >= self.layout.world - self.layout.servers


def prepare_run(cfg: TrainConfig) -> RunSetup:
    """Check every option against the launched world, then open the device, the process
    group and the data. Every rank of a run calls this, servers too (they take part in the
    barrier around the data preparation)."""
    from ..data import prepare_data
    from ..models import get_preset
    from ..optim import LRSchedule

    layout = validate(cfg, launched_world())
    device, dtype = resolve_device(cfg)
    threads = cpu_threads(cfg.threads)
    _C.set_num_threads(threads)  # the CPU ops; also the host-side work of a GPU run
    pg = None
    if layout.world > 1 or (cfg.micro_batches or 1) > 1:
        import ringloom.distributed as dist

        if device == "cuda:0":   # each launched rank on its own GPU
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(1, _C.cuda_device_count())}"
        backend = dist.backend_for(device, cfg.backend)
        pg = dist.world() if dist.is_initialized() else dist.init(backend=backend)
    is_main = pg is None or pg.rank == 0
    if cfg.out:   # an existing run is continued or replaced only when asked (train/run_dir.py)
        check_run_dir(cfg.out, cfg.resume, cfg.overwrite)
    if cfg.trace:
        check_output_file(cfg.trace, "--trace")
    if cfg.out and is_main:
        check_creatable(cfg.out, "--out")
    if pg is not None and not is_main:
        pg.barrier()  # rank 0 tokenizes and caches the data first; the others reuse it
    tokenizer, data = prepare_data(cfg.data, cfg.tokenizer, val_fraction=cfg.val_fraction,
                                   corpus_bytes=cfg.corpus_bytes)
    if pg is not None and is_main:
        pg.barrier()
    model_config = get_preset(cfg.preset, **{**cfg.model_overrides, "vocab_size": data.vocab_size})
    schedule = LRSchedule(cfg.lr_schedule, cfg.lr, cfg.steps, min(cfg.warmup, cfg.steps), cfg.min_lr)
    return RunSetup(cfg, layout, device, dtype, threads, pg, tokenizer, data, model_config, schedule)
