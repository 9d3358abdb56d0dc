"""The trainer's side of checkpoints: what a Trainer's state is, saving it, and restoring it
so that the resumed run continues bit for bit (ringloom.checkpoint.manager has the format).

A trainer's state: model parameters (fp32), AdamW moments (+ fp32 masters under bf16) and
step count, the trainer step, the data loader position, the count of skipped non-finite
steps, and the Python/NumPy global RNG states (the trainer itself draws no random numbers
during training: data order and initialisation come from seeded generators; the global ones
are saved for user code and callbacks that do).

Used by run_training as ``save_trainer(tr)`` / ``restore_trainer(tr, path)``; a parallel
trainer passes its rank, world size and which ranks hold distinct weights.
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
from ..models import param_specs

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
def run_config(tr: Any, world_size: int = 1) -> dict:
    return {"train": dataclasses.asdict(tr.cfg), "model": dataclasses.asdict(tr.model_config),
            "layout": {"world_size": world_size, "dp": getattr(tr, "dp", 1), "pp": getattr(tr, "pp", 1)}}


def trainer_state(tr: Any) -> dict:
    return {"step": int(tr.step), "optimizer_step": int(tr.optimizer.step_count),
            "skipped_steps": int(getattr(tr, "skipped_steps", 0)), "loader": tr.train_loader.state_dict(),
            "rng": rng_state()}


def save_trainer(tr: Any, rank: int | None = None, world_size: int | None = None,
                 holds_weights: bool | None = None, barrier: Any = None) -> str:
    """Write this rank's files for step tr.step; rank 0 finalizes after ``barrier()`` (a
    callable, required when world_size > 1). Returns the checkpoint directory.

    Arguments left None are read from the trainer when it has them (a parallel trainer sets
    ``rank``, ``world_size``, ``holds_weights`` — False on data-parallel replicas other than
    the first, whose weights equal its — and a ``barrier()`` method), else 0, 1, True."""
    rank = getattr(tr, "rank", 0) if rank is None else rank
    world_size = getattr(tr, "world_size", 1) if world_size is None else world_size
    holds_weights = getattr(tr, "holds_weights", True) if holds_weights is None else holds_weights
    barrier = getattr(tr, "barrier", None) if barrier is None else barrier
    root = checkpoint_root(tr.cfg)
    ckpt_dir = os.path.join(root, step_dir_name(tr.step))
    write_rank_files(ckpt_dir, rank, tr.model.state_dict() if holds_weights else None,
                     tr.optimizer.state_dict() if holds_weights else None, trainer_state(tr))
    if world_size > 1:
        if barrier is None:
            raise ValueError("save_trainer: world_size > 1 needs a barrier")
        barrier()
    if rank == 0:
        finalize(root, tr.step, run_config(tr, world_size), world_size=world_size, keep=tr.cfg.keep_checkpoints)
    if world_size > 1:
        barrier()  # nobody goes on (and possibly saves again) before the manifest exists
    return ckpt_dir


# ---------------------------------------------------------------------------------- restore
def _check_config(ckpt_path: str, saved: dict, tr: Any) -> None:
    saved_model = saved.get("model")
    if saved_model is None:
        raise CheckpointError(f"{ckpt_path}: config.json has no model configuration")
    mine = dataclasses.asdict(tr.model_config)
    diffs = [f"{k}: checkpoint {saved_model.get(k)!r}, this run {v!r}" for k, v in mine.items()
             if saved_model.get(k) != v]
    if diffs:
        raise CheckpointError(f"{ckpt_path}: the checkpoint is of another model ({'; '.join(diffs)})")
    train = saved.get("train", {})
    cfg = dataclasses.asdict(tr.cfg)
    bad = [f"{k}: checkpoint {train.get(k)!r}, this run {cfg[k]!r}" for k in _MUST_MATCH
           if k in train and train.get(k) != cfg[k]]
    if bad:
        raise CheckpointError(f"{ckpt_path}: cannot continue this run exactly with different settings "
                              f"({'; '.join(bad)})")
    changed = [f"{k} {train.get(k)!r} -> {cfg[k]!r}" for k in _WARN if k in train and train.get(k) != cfg[k]]
    if changed:
        print(f"ringloom: resuming {ckpt_path} with changed settings: {', '.join(changed)}", file=sys.stderr)


def restore_trainer(tr: Any, ckpt_path: str, rank: int | None = None) -> int:
    """Load a verified checkpoint into the trainer; returns the step it continues from.
    Every rank loads the merged weights of all rank files and keeps its own parameters, so
    the checkpoint's layout need not match this run's."""
    rank = getattr(tr, "rank", 0) if rank is None else rank
    ck = open_checkpoint(ckpt_path)
    _check_config(ckpt_path, ck.config, tr)
    # A pipeline stage keeps its own share of the merged tensors; names that belong to no
    # parameter of this model configuration stay in, so load_state_dict reports them.
    mine = {n for n, _ in tr.model.parameters()}
    full = {n for n, _, _ in param_specs(tr.model_config)}
    model_state = {k: v for k, v in ck.model_state().items() if k in mine or k not in full}
    try:
        tr.model.load_state_dict(model_state)
        tr.optimizer.load_state_dict(ck.optim_state())
    except ValueError as e:
        raise CheckpointError(f"{ckpt_path}: does not fit this model: {e}") from None
    st = ck.rank_state(rank)
    try:
        tr.train_loader.load_state_dict(st["loader"])
    except ValueError as e:
        raise CheckpointError(f"{ckpt_path}: {e}") from None
    tr.step = int(st["step"])
    tr.skipped_steps = int(st.get("skipped_steps", 0))
    if tr.optimizer.step_count != int(st["optimizer_step"]):
        raise CheckpointError(f"{ckpt_path}: optimizer step {tr.optimizer.step_count} disagrees with the "
                              f"trainer state's {st['optimizer_step']}")
    set_rng_state(st["rng"])
    return tr.step


def resume_path(cfg: Any) -> str | None:
    return resolve_resume(cfg.resume, checkpoint_root(cfg)) if cfg.resume else None
