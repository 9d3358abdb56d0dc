"""Parameter-server training from the trainer: ``ringloom train --param-servers S``.

    ringloom launch -n 3 -m ringloom train --param-servers 1 [--ps-mode async --ps-staleness 2] ...

The launcher's last S ranks are servers (parallel/param_server.py), the first W = world - S
are workers. Which rank does what:

  workers   read their rows of each global batch (the W-way split data parallel uses), run
            forward/backward, push gradients and pull parameters (PSWorker). Worker 0 (world
            rank 0) alone logs metrics, evaluates (whole val batches, on the parameters it
            last pulled), samples, and writes the model and the weights/optimizer files of
            checkpoints.
  servers   hold the fp32 parameter shards and their AdamW moments and serve
            (ParameterServer.serve): no evaluation, sampling, metrics or model file. They
            write only their checkpoint state file, and send worker 0 what it must write.

Checkpoints are the files a data-parallel run writes, so they resume under any layout
(parameter server or not, any number of servers): at a checkpoint step every server sends
worker 0 its shard and its AdamW moments (send_state / recv_state), and worker 0 writes
model.rank00000 (the weights) and optim.rank00000 (m.<name>, v.<name>, step) by parameter
name. Every rank writes its state file; a server's says ``"role": "server"`` and has no data
position (a rank that reads it on resume takes worker 0's instead). On resume every rank
reads the checkpoint: each worker loads the weights and its data position, worker 0 pushes
the weights to the servers as a fresh start does, and each server loads its slice of the
moments and the step counts (ParameterServer.load_state), so the continuation equals the
uninterrupted run (tests/parallel/test_ps_cli.py).

Sync mode checkpoints at every --save-every step and at the end. In async mode the workers
are at different steps at any moment, so there is no consistent cut before the end: only
the end-of-run checkpoint is written (after the servers' last round), and --save-every is
refused. At the last step worker 0 receives the servers' final parameters (in async mode
its own last pull may predate other workers' last gradients), so the final evaluation, the
saved model and the sample are of the fully trained parameters in both modes.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from ..checkpoint.manager import CheckpointError, finalize, open_checkpoint, step_dir_name, write_rank_files

# Options that change how gradients are combined or how a step runs on one rank; a
# parameter-server step is its own thing (push, server update, pull), so they cannot apply.
_INCOMPATIBLE = (("pp", lambda c: c.pp > 1, "--pp (pipeline stages)"),
                 ("zero", lambda c: c.zero, "--zero (the servers already shard the optimizer state)"),
                 ("local_sgd", lambda c: c.local_sgd, "--local-sgd"),
                 ("compression", lambda c: c.compression.strip().lower() not in ("none", "", "fp32"),
                  "--compression (workers push fp32 gradients)"),
                 ("micro_batches", lambda c: (c.micro_batches or 1) > 1, "--micro-batches"),
                 ("cuda_graph", lambda c: c.cuda_graph, "--cuda-graph"),
                 ("trace", lambda c: c.trace is not None, "--trace"),
                 ("async_save", lambda c: c.async_save, "--async-save (the servers write their part in step)"),
                 ("on_nonfinite", lambda c: c.on_nonfinite == "skip",
                  "--on-nonfinite skip (the servers skip a non-finite round themselves; workers stop)"))


def check_options(cfg: Any) -> None:
    """One-line ValueErrors for option combinations parameter-server training cannot honour
    (before any process or data work)."""
    if not cfg.param_servers:
        if cfg.ps_mode != "sync" or cfg.ps_staleness:
            raise ValueError("--ps-mode/--ps-staleness need --param-servers N (N >= 1)")
        return
    for _, bad, what in _INCOMPATIBLE:
        if bad(cfg):
            raise ValueError(f"--param-servers cannot be combined with {what}")
    if cfg.ps_mode == "sync" and cfg.ps_staleness:
        raise ValueError("--ps-staleness applies to --ps-mode async (sync workers never run ahead)")
    if cfg.ps_mode == "async" and cfg.save_every:
        raise ValueError("--save-every with --ps-mode async: the workers are at different steps, so only the "
                         "end-of-run checkpoint is consistent; drop --save-every or use --ps-mode sync")


def workers_of(cfg: Any, world: int) -> int:
    """The number of workers (world - servers), checked against the world and the batch."""
    S = cfg.param_servers
    if world < S + 1:
        raise ValueError(f"--param-servers {S} needs at least {S + 1} ranks ({S} server(s) + at least one worker), "
                         f"but {world} {'was' if world == 1 else 'were'} started; start them with "
                         f"`ringloom launch -n {S + 2} -m ringloom train --param-servers {S} ...`")
    W = world - S
    if cfg.dp is not None and cfg.dp != W:
        raise ValueError(f"--dp {cfg.dp}: with --param-servers {S} of {world} ranks there are {W} workers")
    if cfg.batch_size % W:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {W} workers "
                         f"({world} ranks - {S} server(s))")
    return W


def build_role(tr: Any) -> None:
    """Sets tr.ps (a worker's PSWorker) or tr.ps_server (a server's ParameterServer)."""
    from ..parallel import ParameterServer, PSLayout, PSWorker

    cfg = tr.cfg
    layout = PSLayout(tr.world_size, cfg.param_servers)
    tr.ps_layout, tr.ps, tr.ps_server, tr.ps_final = layout, None, None, None
    tr.ps_initial = None   # a resumed run's fp32 weights, for worker 0 to push
    tr.is_server = layout.is_server(tr.pg.rank)
    if tr.is_server:
        tr.ps_server = ParameterServer(tr.model_config, tr.pg, layout, cfg.steps, mode=cfg.ps_mode,
                                       staleness=cfg.ps_staleness, seed=cfg.seed, lr=cfg.lr,
                                       weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip,
                                       lr_at=tr.schedule, device=tr.device)
    else:
        # connect=False: the first exchange waits until a resumed run has loaded its weights.
        tr.ps = PSWorker(tr.model_config, tr.pg, layout, mode=cfg.ps_mode, staleness=cfg.ps_staleness,
                         seed=cfg.seed, device=tr.device, dtype=tr.dtype, connect=False)


def finish(tr: Any) -> None:
    """Worker 0 at the last step: the servers' final parameters (and, when a checkpoint
    follows, their moments)."""
    if tr.pg.rank == 0:
        tr.ps_final = tr.ps.recv_state(moments=bool(tr.cfg.out))


# ---------------------------------------------------------------------------------- serving
def run_server(tr: Any) -> dict:
    """A server rank's whole run: resume, serve every step, hand worker 0 the final state,
    write its part of the checkpoints. Returns the server's statistics."""
    from .checkpointing import resume_path

    cfg, server = tr.cfg, tr.ps_server
    ckpt = resume_path(cfg)
    start = restore(tr, ckpt) if ckpt else 0
    server.steps = max(cfg.steps - start, 0)

    def on_update(version: int) -> None:   # sync: round == step
        if cfg.out and cfg.save_every and version % cfg.save_every == 0 and version < cfg.steps:
            server.send_state(0, moments=True)
            _write(tr, version, None, None, _server_state(server))

    stats = server.serve(on_update=on_update if cfg.ps_mode == "sync" else None)
    if start < cfg.steps:
        server.send_state(0, moments=bool(cfg.out))
        if cfg.out:
            _write(tr, cfg.steps, None, None, _server_state(server))
    print(f"ringloom: parameter server rank {tr.pg.rank} served {stats['updates'] - start} rounds ({cfg.ps_mode}; "
          f"max lead {stats['max_lead']} steps, max staleness {stats['max_staleness']} rounds, "
          f"{stats['skipped']} skipped)", file=sys.stderr, flush=True)
    return {"role": "server", "rank": tr.pg.rank, "steps": cfg.steps, **stats}


def _server_state(server: Any) -> dict:
    from .checkpointing import rng_state

    return {"role": "server", "step": server.version, "optimizer_step": server.optimizer_step,
            "skipped_steps": server.skipped, "rng": rng_state()}


# ---------------------------------------------------------------------------------- checkpoints
def _write(tr: Any, step: int, model_state: Any, optim_state: Any, state: dict) -> str:
    """This rank's files of checkpoint ``step``, then the manifest (rank 0) between barriers."""
    from .checkpointing import checkpoint_root, run_config

    root = checkpoint_root(tr.cfg)
    ckpt_dir = os.path.join(root, step_dir_name(step))
    write_rank_files(ckpt_dir, tr.pg.rank, model_state, optim_state, state)
    tr.pg.barrier()
    if tr.pg.rank == 0:
        finalize(root, step, run_config(tr, tr.pg.size), world_size=tr.pg.size, keep=tr.cfg.keep_checkpoints)
    tr.pg.barrier()   # nobody goes on (and possibly saves again) before the manifest exists
    return ckpt_dir


def save_worker(tr: Any) -> str:
    """A worker's part of checkpoint tr.step (every worker calls it; the servers meet them in
    run_server). Worker 0 writes the weights and the servers' AdamW state by name."""
    from ..parallel.param_server import unflatten_named
    from .checkpointing import trainer_state

    model_state = optim = None
    step = tr.ps.optimizer_step
    if tr.pg.rank == 0:
        st = tr.ps_final if tr.step == tr.cfg.steps and tr.ps_final is not None else tr.ps.recv_state(moments=True)
        step = st["optimizer_step"]
        named = tr.ps.named
        optim = {"step": step, **unflatten_named(named, st["m"], "m."), **unflatten_named(named, st["v"], "v.")}
        model_state = unflatten_named(named, st["params"])   # the servers' fp32 weights
    return _write(tr, tr.step, model_state, optim, trainer_state(tr, step))


def restore(tr: Any, ckpt_path: str) -> int:
    """Load checkpoint ``ckpt_path`` (of any layout) into this rank's role; returns its step."""
    from ..parallel.param_server import flatten_named
    from .checkpointing import _check_config, set_rng_state

    ck = open_checkpoint(ckpt_path)
    _check_config(ckpt_path, ck.config, tr)
    st = ck.rank_state(tr.pg.rank)
    if st.get("role") == "server":   # no data position in a server's file: worker 0's is the same
        st = ck.rank_state(0)
    step = int(st["step"])
    if tr.is_server:
        server = tr.ps_server
        optim = ck.optim_state()
        if int(optim["step"]) != int(st["optimizer_step"]):
            raise CheckpointError(f"{ckpt_path}: optimizer step {optim['step']} disagrees with the trainer "
                                  f"state's {st['optimizer_step']}")
        try:
            m, v = flatten_named(server.named, optim, "m."), flatten_named(server.named, optim, "v.")
        except ValueError as e:
            raise CheckpointError(f"{ckpt_path}: does not fit this model: {e}") from None
        server.load_state(m, v, int(optim["step"]), step)
        server.skipped = int(st.get("skipped_steps", 0))
        tr.step = step
        return step
    try:
        weights = ck.model_state()
        tr.ps.model.load_state_dict(weights)
        tr.ps_initial = flatten_named(tr.ps.named, weights)
        tr.train_loader.load_state_dict(st["loader"])
    except ValueError as e:
        raise CheckpointError(f"{ckpt_path}: does not fit this run: {e}") from None
    tr.step = step
    tr.skipped_steps = int(st.get("skipped_steps", 0))
    tr.ps.step_count, tr.ps.optimizer_step = step, int(st["optimizer_step"])
    set_rng_state(st["rng"])
    return step
