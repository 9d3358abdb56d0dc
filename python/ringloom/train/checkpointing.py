"""The trainer's side of checkpoints: what a run's state is, saving it, and restoring it so
that the resumed run continues bit for bit (ringloom.checkpoint.manager has the format).

A run's state: the engine's (train/engines: model parameters in fp32, AdamW moments, plus
fp32 masters under bf16, and step count; CheckpointState), the trainer step, the data loader
position, the count of skipped non-finite steps, and the Python/NumPy global RNG states (the
trainer itself draws no random numbers during training: data order and initialisation come
from seeded generators; the global ones are saved for user code and callbacks that do).

Every rank of a run calls ``save_trainer(tr)`` / ``restore_trainer(tr, path)``; a
parameter server writes and reads its part with ``write_checkpoint`` and ``open_for`` from
train/ps_server.py. Each rank writes its state file, the ranks the engine chooses write
the weights and optimizer state, rank 0 writes the manifest.
"""
from __future__ import annotations

import dataclasses
import os
import random
import sys
from typing import Any

import numpy as np

from ..checkpoint.manager import (CheckpointError, finalize, open_checkpoint, resolve_resume, step_dir_name,
                                  write_rank_files)

# TrainConfig fields that must match to resume (they change what the run computes);
# a difference in the others in _WARN is reported but allowed (e.g. training for longer).
_MUST_MATCH = ("preset", "batch_size", "seq_len", "seed", "tokenizer", "dtype", "data", "val_fraction",
               "corpus_bytes")
_WARN = ("steps", "lr", "min_lr", "warmup", "lr_schedule", "weight_decay", "grad_clip")


def checkpoint_root(cfg: Any) -> str:
    return os.path.join(cfg.out, "checkpoints")


# ---------------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(mt), gauss],
            "numpy": {"name": name, "keys": np.asarray(keys).tolist(), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))


# ---------------------------------------------------------------------------------- save
def run_config(run: Any) -> dict:
    layout = run.layout
    return {"train": dataclasses.asdict(run.cfg), "model": dataclasses.asdict(run.model_config),
            "layout": {"world_size": layout.world, "dp": layout.dp, "pp": layout.pp}}


def trainer_state(tr: Any, optimizer_step: int) -> dict:
    return {"step": int(tr.step), "optimizer_step": int(optimizer_step), "skipped_steps": int(tr.skipped_steps),
            "loader": tr.train_loader.state_dict(), "rng": rng_state(), "threads": tr.run.threads}


def write_checkpoint(run: Any, step: int, model_state: Any, optim_state: Any, state: dict) -> str:
    """This rank's files of checkpoint ``step``, then the manifest (rank 0) between barriers:
    every rank of the run calls it."""
    root = checkpoint_root(run.cfg)
    ckpt_dir = os.path.join(root, step_dir_name(step))
    write_rank_files(ckpt_dir, run.rank, model_state, optim_state, state)
    if run.pg is not None:
        run.pg.barrier()
    if run.rank == 0:
        finalize(root, step, run_config(run), world_size=run.world, keep=run.cfg.keep_checkpoints)
    if run.pg is not None:
        run.pg.barrier()   # nobody goes on (and possibly saves again) before the manifest exists
    return ckpt_dir


def save_trainer(tr: Any) -> str:
    """Write checkpoint tr.step (every rank calls this); returns its directory."""
    st = tr.engine.state_dict()   # a collective in the modes whose state is spread over ranks
    return write_checkpoint(tr.run, tr.step, st.model, st.optim, trainer_state(tr, st.optimizer_step))


# ---------------------------------------------------------------------------------- restore
def check_config(ckpt_path: str, saved: dict, run: Any) -> None:
    saved_model = saved.get("model")
    if saved_model is None:
        raise CheckpointError(f"{ckpt_path}: config.json has no model configuration")
    mine = dataclasses.asdict(run.model_config)
    diffs = [f"{k}: checkpoint {saved_model.get(k)!r}, this run {v!r}" for k, v in mine.items()
             if saved_model.get(k) != v]
    if diffs:
        raise CheckpointError(f"{ckpt_path}: the checkpoint is of another model ({'; '.join(diffs)})")
    train = saved.get("train", {})
    cfg = dataclasses.asdict(run.cfg)
    bad = [f"{k}: checkpoint {train.get(k)!r}, this run {cfg[k]!r}" for k in _MUST_MATCH
           if k in train and train.get(k) != cfg[k]]
    if bad:
        raise CheckpointError(f"{ckpt_path}: cannot continue this run exactly with different settings "
                              f"({'; '.join(bad)})")
    changed = [f"{k} {train.get(k)!r} -> {cfg[k]!r}" for k in _WARN if k in train and train.get(k) != cfg[k]]
    if changed and run.is_main:
        print(f"ringloom: resuming {ckpt_path} with changed settings: {', '.join(changed)}", file=sys.stderr)


def open_for(run: Any, ckpt_path: str) -> tuple[Any, dict]:
    """The verified checkpoint and this rank's state file (a parameter server's file has
    no data position: such a rank gets worker 0's, which is the same)."""
    ck = open_checkpoint(ckpt_path)
    check_config(ckpt_path, ck.config, run)
    st = ck.rank_state(run.rank)
    if st.get("role") == "server":
        st = ck.rank_state(0)
    return ck, st


def restore_trainer(tr: Any, ckpt_path: str) -> int:
    """Load a verified checkpoint into the trainer and its engine; returns the step it
    continues from. Every rank reads the weights of all rank files merged by name and keeps
    its own parameters, so the checkpoint's layout (dp, pp, stage split, parameter servers)
    need not match this run's. A state file lacking a field or holding one of the wrong
    type is a CheckpointError."""
    try:
        return _restore(tr, ckpt_path)
    except (KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{ckpt_path}: malformed checkpoint state ({type(e).__name__}: {e})") from None


def _restore(tr: Any, ckpt_path: str) -> int:
    run = tr.run
    ck, st = open_for(run, ckpt_path)
    state = {"model": ck.model_state(), "optim": ck.optim_state(), "step": int(st["step"]),
             "optimizer_step": int(st["optimizer_step"])}
    try:
        tr.engine.load_state_dict(state)
    except CheckpointError as e:
        raise CheckpointError(f"{ckpt_path}: {e}") from None
    except ValueError as e:
        raise CheckpointError(f"{ckpt_path}: does not fit this model: {e}") from None
    try:
        tr.train_loader.load_state_dict(st["loader"])
    except ValueError as e:
        raise CheckpointError(f"{ckpt_path}: {e}") from None
    tr.step = int(st["step"])
    tr.skipped_steps = int(st.get("skipped_steps", 0))
    set_rng_state(st["rng"])
    if st.get("threads") is not None and st["threads"] != run.threads and run.is_main:
        print(f"ringloom: the checkpoint was written with {st['threads']} CPU threads, this run uses {run.threads}: "
              "the continuation may differ from an uninterrupted run in the last bits (pass --threads to fix it)",
              file=sys.stderr)
    return tr.step


def resume_path(cfg: Any) -> str | None:
    """The checkpoint to resume from (None: start fresh)."""
    return resolve_resume(cfg.resume, checkpoint_root(cfg)) if cfg.resume else None
