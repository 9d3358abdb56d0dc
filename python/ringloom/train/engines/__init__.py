"""Training modes as engines, and the one factory that picks one (see base.py).

    run = prepare_run(cfg)       # train/setup.py: options validated, process group, data
    engine = build_engine(run)   # SingleEngine | MeshEngine | PSWorkerEngine

The options were checked by train/options.validate (in prepare_run) before any process or
data work, so the factory only chooses: parameter-server worker, dp x pp mesh (a launcher,
or micro-batches on one process), or single process.
"""
from __future__ import annotations

from typing import Any

from .base import Batch, CheckpointState, Engine
from .mesh import MeshEngine
from .ps_worker import PSWorkerEngine
from .single import SingleEngine


def build_engine(run: Any) -> Engine:
    """This rank's engine for a prepared run (train/setup.RunSetup); not for a server rank."""
    cfg, layout = run.cfg, run.layout
    common = dict(device=run.device, dtype=run.dtype, seed=cfg.seed, attention=cfg.attention,
                  deterministic_attention=cfg.deterministic_attention)
    if run.is_server:
        raise ValueError(f"rank {run.rank} is a parameter server: it serves (train/ps_server.py), it runs no engine")
    if layout.servers:
        return PSWorkerEngine(run.model_config, run.pg, layout.servers, mode=cfg.ps_mode, staleness=cfg.ps_staleness,
                              steps=cfg.steps, final_moments=bool(cfg.out), **common)
    if run.pg is not None:
        return MeshEngine(run.model_config, run.pg, layout.dp, layout.pp, trace_path=cfg.trace,
                          schedule=cfg.schedule, micro_batches=cfg.micro_batches, chunks=cfg.chunks,
                          stage_layers=cfg.stage_layers, zero=cfg.zero, bucket_mb=cfg.bucket_mb, lr=cfg.lr,
                          weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip, compression=cfg.compression,
                          local_sgd=cfg.local_sgd, local_sgd_moments=cfg.local_sgd_moments, **common)
    return SingleEngine(run.model_config, lr=cfg.lr, weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip,
                        cuda_graph=cfg.cuda_graph, batch_shape=(cfg.batch_size, cfg.seq_len), **common)


__all__ = ["Batch", "CheckpointState", "Engine", "MeshEngine", "PSWorkerEngine", "SingleEngine", "build_engine"]
