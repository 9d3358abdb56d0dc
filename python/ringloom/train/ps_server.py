"""A parameter-server rank's whole run: ``ringloom train --param-servers S`` on the
launcher's last S ranks, chosen by run_training before any Trainer exists.

    ringloom launch -n 3 -m ringloom train --param-servers 1 [--ps-mode async --ps-staleness 2] ...

A server holds fp32 parameter shards and their AdamW moments and serves
(parallel/param_server.py): no evaluation, sampling, metrics or model file. At a checkpoint
step (sync mode: every --save-every round, and the end; async: the end only, since the
workers are at different steps before it) it sends worker 0 its shard and moments, which
worker 0 writes by parameter name (train/engines/ps_worker.py), and writes its own state
file (``"role": "server"``, no data position). On resume it loads its slice of the moments
and the step counts from the checkpoint, of any layout.
"""
from __future__ import annotations

import sys
from typing import Any

from ..checkpoint.manager import CheckpointError
from ..parallel import ParameterServer, PSLayout
from ..parallel.param_server import flatten_named
from .checkpointing import open_for, resume_path, rng_state, write_checkpoint


def serve(run: Any) -> dict:
    """Resume, serve every step, hand worker 0 the final state, write this server's part of
    the checkpoints. Returns the server's statistics."""
    cfg = run.cfg
    server = ParameterServer(run.model_config, run.pg, PSLayout(run.world, cfg.param_servers), cfg.steps,
                             mode=cfg.ps_mode, staleness=cfg.ps_staleness, seed=cfg.seed, lr=cfg.lr,
                             weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip, lr_at=run.lr_schedule,
                             device=run.device)
    ckpt = resume_path(cfg)
    start = _restore(run, server, ckpt) if ckpt else 0
    server.steps = max(cfg.steps - start, 0)

    def on_update(version: int) -> None:   # sync: round == step
        if cfg.out and cfg.save_every and version % cfg.save_every == 0 and version < cfg.steps:
            server.send_state(0, moments=True)
            write_checkpoint(run, version, None, None, _state(server))

    stats = server.serve(on_update=on_update if cfg.ps_mode == "sync" else None)
    if start < cfg.steps:
        server.send_state(0, moments=bool(cfg.out))
        if cfg.out:
            write_checkpoint(run, cfg.steps, None, None, _state(server))
    print(f"ringloom: parameter server rank {run.rank} served {stats['updates'] - start} rounds ({cfg.ps_mode}; "
          f"max lead {stats['max_lead']} steps, max staleness {stats['max_staleness']} rounds, "
          f"{stats['skipped']} skipped)", file=sys.stderr, flush=True)
    return {"role": "server", "rank": run.rank, "steps": cfg.steps, **stats}


def _state(server: Any) -> dict:
    return {"role": "server", "step": server.version, "optimizer_step": server.optimizer_step,
            "skipped_steps": server.skipped, "rng": rng_state()}


def _restore(run: Any, server: Any, ckpt_path: str) -> int:
    """Load this server's slice of checkpoint ``ckpt_path``; returns its step."""
    ck, st = open_for(run, ckpt_path)
    optim = ck.optim_state()
    if int(optim["step"]) != int(st["optimizer_step"]):
        raise CheckpointError(f"{ckpt_path}: optimizer step {optim['step']} disagrees with the trainer "
                              f"state's {st['optimizer_step']}")
    try:
        m, v = flatten_named(server.named, optim, "m."), flatten_named(server.named, optim, "v.")
    except ValueError as e:
        raise CheckpointError(f"{ckpt_path}: does not fit this model: {e}") from None
    step = int(st["step"])
    server.load_state(m, v, int(optim["step"]), step)
    server.skipped = int(st.get("skipped_steps", 0))
    return step
