"""The trainer's side of checkpoints: what a Trainer's state is, saving it, and restoring it
so that the resumed run continues bit for bit (ringloom.checkpoint.manager has the format).

A trainer's state: model parameters (fp32), AdamW moments (+ fp32 masters under bf16) and
step count, the trainer step, the data loader position, the count of skipped non-finite
steps, and the Python/NumPy global RNG states (the trainer itself draws no random numbers
during training: data order and initialisation come from seeded generators; the global ones
are saved for user code and callbacks that do).

Used by run_training as ``save_trainer(tr)`` / ``restore_trainer(tr, path)``, on every rank
of a parallel run (see _Parts for who writes what; parameter-server runs: train/ps_training.py,
which writes the same files).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import sys
from typing import Any

import numpy as np

from ..checkpoint.async_save import AsyncCheckpointWriter, wait_for_rank_files
from ..checkpoint.manager import (CheckpointError, finalize, open_checkpoint, resolve_resume, step_dir_name,
                                  write_rank_files)
from ..models import param_specs
from ..models.config import RUNTIME_FIELDS

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


class _Parts:
    """Where a trainer keeps what a checkpoint holds, single-process or parallel.

    Single process: tr.model and tr.optimizer. Parallel (tr.engine, ringloom.parallel): the
    engine's chunks (this rank's stages) and its optimizers: AdamW, or under --zero the
    ZeRO ShardedAdamW (whose state is gathered whole, by parameter name, so a checkpoint
    does not depend on the dp size) plus an AdamW for the replicated tied embedding. The
    ranks of data-parallel index 0 write the weights and optimizer state (the other
    replicas hold the same values), every rank writes its state file, rank 0 finalizes.
    """

    def __init__(self, tr: Any):
        eng = getattr(tr, "engine", None)
        self.engine = eng
        if eng is None:
            self.models, self.optimizers = [tr.model], [tr.optimizer]
            self.rank, self.world, self.holds, self.barrier = 0, 1, True, None
            return
        self.models = eng.chunks
        self.optimizers = [o for o in (eng.sharded, eng.optimizer) if o is not None]
        self.rank, self.world = tr.pg.rank, tr.pg.size
        self.holds = eng.mesh.dp_index == 0
        self.barrier = tr.pg.barrier

    @property
    def step_count(self) -> int:
        return self.optimizers[0].step_count

    @property
    def gathers(self) -> bool:
        """The weights are sharded (ZeRO-3): reading them is a collective over the dp ranks."""
        return self.engine is not None and self.engine.gather is not None

    def model_state(self) -> dict[str, np.ndarray]:
        if self.engine is not None:
            return self.engine.state_dict()
        out: dict[str, np.ndarray] = {}
        for m in self.models:
            out.update(m.state_dict())
        return out

    def full_parameters(self):
        return self.engine.full_parameters() if self.engine is not None else contextlib.nullcontext()

    def optim_state(self) -> dict[str, Any]:
        """A collective under ZeRO (the shards are gathered): every rank calls it."""
        out: dict[str, Any] = {}
        for o in self.optimizers:
            out.update(o.state_dict())
        return out

    def load_optim_state(self, state: dict[str, Any]) -> None:
        for o in self.optimizers:
            o.load_state_dict(state)


def supported(tr: Any) -> str | None:
    """None when this trainer can save checkpoints, else why not (every layout can now)."""
    try:
        _Parts(tr)
    except CheckpointError as e:
        return str(e)
    return None


def trainer_state(tr: Any, optimizer_step: int) -> dict:
    return {"step": int(tr.step), "optimizer_step": int(optimizer_step),
            "skipped_steps": int(getattr(tr, "skipped_steps", 0)), "loader": tr.train_loader.state_dict(),
            "rng": rng_state(), "threads": getattr(tr, "threads", None)}


def save_trainer(tr: Any) -> str | None:
    """Write a checkpoint of step tr.step (every rank calls this; see _Parts). Returns the
    directory, or None when this layout cannot be checkpointed and none was asked for
    (--save-every 0 and no --resume: the end-of-run checkpoint is skipped with a note)."""
    if getattr(tr, "ps", None) is not None:
        from .ps_training import save_worker

        return save_worker(tr)
    reason = supported(tr)
    if reason:
        if tr.cfg.save_every or tr.cfg.resume:
            raise CheckpointError(reason)
        if getattr(tr, "is_main", True):
            print(f"ringloom: no checkpoint written: {reason}", file=sys.stderr)
        return None
    parts = _Parts(tr)
    root = checkpoint_root(tr.cfg)
    ckpt_dir = os.path.join(root, step_dir_name(tr.step))
    if tr.cfg.async_save:
        writer = async_writer(tr)
        writer.wait()   # at most one save in flight; its error (if any) surfaces here
    optim = parts.optim_state()  # every rank: a collective under ZeRO
    model_state = parts.model_state() if parts.holds or parts.gathers else None   # host copies: a snapshot
    if not parts.holds:
        model_state = None
    state = trainer_state(tr, parts.step_count)
    if tr.cfg.async_save:
        config, step, world, keep = run_config(tr, parts.world), tr.step, parts.world, tr.cfg.keep_checkpoints
        rank = parts.rank

        def write() -> None:
            write_rank_files(ckpt_dir, rank, model_state, optim if parts.holds else None, state)
            if rank == 0:
                wait_for_rank_files(ckpt_dir, world)
                finalize(root, step, config, world_size=world, keep=keep)

        writer.submit(step_dir_name(step), write)
        return ckpt_dir
    write_rank_files(ckpt_dir, parts.rank, model_state, optim if parts.holds else None, state)
    if parts.world > 1:
        parts.barrier()
    if parts.rank == 0:
        finalize(root, tr.step, run_config(tr, parts.world), world_size=parts.world, keep=tr.cfg.keep_checkpoints)
    if parts.world > 1:
        parts.barrier()  # nobody goes on (and possibly saves again) before the manifest exists
    return ckpt_dir


def async_writer(tr: Any) -> AsyncCheckpointWriter:
    """The trainer's background checkpoint writer (made on first use)."""
    if getattr(tr, "checkpoint_writer", None) is None:
        tr.checkpoint_writer = AsyncCheckpointWriter()
    return tr.checkpoint_writer


def check_async_save(tr: Any) -> None:
    """Raise the error of a failed background save (a no-op without --async-save)."""
    if getattr(tr, "checkpoint_writer", None) is not None:
        tr.checkpoint_writer.check()


def finish_async_save(tr: Any) -> None:
    """Wait for the background save in flight and raise its error; at the end of a run."""
    if getattr(tr, "checkpoint_writer", None) is not None:
        tr.checkpoint_writer.close()
        if tr.pg is not None and tr.pg.size > 1:
            tr.pg.barrier()   # rank 0's finalize waited for every rank's files; all leave together


# ---------------------------------------------------------------------------------- restore
def _check_config(ckpt_path: str, saved: dict, tr: Any) -> None:
    saved_model = saved.get("model")
    if saved_model is None:
        raise CheckpointError(f"{ckpt_path}: config.json has no model configuration")
    mine = dataclasses.asdict(tr.model_config)
    diffs = [f"{k}: checkpoint {saved_model.get(k)!r}, this run {v!r}" for k, v in mine.items()
             if saved_model.get(k) != v and k not in RUNTIME_FIELDS]
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
    if changed and getattr(tr, "is_main", True):
        print(f"ringloom: resuming {ckpt_path} with changed settings: {', '.join(changed)}", file=sys.stderr)


def restore_trainer(tr: Any, ckpt_path: str) -> int:
    """Load a verified checkpoint into the trainer; returns the step it continues from.
    Every rank reads the weights of all rank files merged by name and keeps its own
    parameters, so the checkpoint's layout (dp, pp, stage split) need not match this run's."""
    if getattr(tr, "ps", None) is not None:
        from .ps_training import restore

        return restore(tr, ckpt_path)
    parts = _Parts(tr)
    ck = open_checkpoint(ckpt_path)
    _check_config(ckpt_path, ck.config, tr)
    merged = ck.model_state()
    # Each model (a pipeline stage) keeps its share of the merged tensors; names that belong
    # to no parameter of this model configuration stay in, so load_state_dict reports them.
    full = {n for n, _, _ in param_specs(tr.model_config)}
    try:
        with parts.full_parameters():   # ZeRO-3: the weights gathered while they are loaded
            for m in parts.models:
                mine = {n for n, _ in m.parameters()}
                m.load_state_dict({k: v for k, v in merged.items() if k in mine or k not in full})
            parts.load_optim_state(ck.optim_state())  # after the weights: ZeRO refreshes its masters from them
    except ValueError as e:
        raise CheckpointError(f"{ckpt_path}: does not fit this model: {e}") from None
    st = ck.rank_state(parts.rank)
    if st.get("role") == "server":   # a parameter server's file has no data position: worker 0's is the same
        st = ck.rank_state(0)
    try:
        tr.train_loader.load_state_dict(st["loader"])
    except ValueError as e:
        raise CheckpointError(f"{ckpt_path}: {e}") from None
    tr.step = int(st["step"])
    tr.skipped_steps = int(st.get("skipped_steps", 0))
    if parts.step_count != int(st["optimizer_step"]):
        raise CheckpointError(f"{ckpt_path}: optimizer step {parts.step_count} disagrees with the "
                              f"trainer state's {st['optimizer_step']}")
    if parts.engine is not None:   # steps taken, skipped ones too (it seeds QSGD's draws)
        parts.engine.step_count = tr.step
    set_rng_state(st["rng"])
    mine = getattr(tr, "threads", None)
    if st.get("threads") is not None and mine is not None and st["threads"] != mine and getattr(tr, "is_main", True):
        print(f"ringloom: the checkpoint was written with {st['threads']} CPU threads, this run uses {mine}: the "
              "continuation may differ from an uninterrupted run in the last bits (pass --threads to fix it)",
              file=sys.stderr)
    return tr.step


def resume_path(cfg: Any, tr: Any = None) -> str | None:
    """The checkpoint to resume from (None: start fresh). With ``tr``, first refuse a
    layout that cannot be checkpointed when --save-every/--resume ask for checkpoints."""
    if tr is not None and (cfg.save_every or cfg.resume):
        reason = supported(tr)
        if reason:
            raise CheckpointError(reason)
    return resolve_resume(cfg.resume, checkpoint_root(cfg)) if cfg.resume else None
