"""The training loop, readable top to bottom: data, engine, then steps with logging,
evaluation, samples, checkpoints and the saved model.

    run_training(config) -> summary dict

``prepare_run`` (train/setup.py) checks the options once (train/options.py), opens the
device, the process group and the data; a parameter-server rank then serves
(train/ps_server.py) and never builds a Trainer. Every other rank builds the engine of its
mode (train/engines: one process, a dp x pp mesh, or a parameter-server worker) and runs
this loop, which is the same in every mode: the engine says which rows of each batch this
rank reads, takes the steps and holds the model. Rank 0 alone prints, logs metrics, samples
and saves the model.

Checkpoints (train/checkpointing.py), the non-finite guard (train/nonfinite.py) and the
metrics sinks (train/telemetry.py) live in their own modules; the loop calls them.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from .config import TrainConfig
from .setup import RunSetup, prepare_run


class Trainer:
    """One rank's loop state: the run, its engine, the loaders and the step count."""

    def __init__(self, run: TrainConfig | RunSetup):
        from ..data import TokenLoader, ValLoader
        from .engines import build_engine

        self.run = run if isinstance(run, RunSetup) else prepare_run(run)
        self.cfg = cfg = self.run.cfg
        self.engine = build_engine(self.run)
        eng = self.engine
        self.train_loader = TokenLoader(self.run.data.train_path, cfg.batch_size, cfg.seq_len, seed=cfg.seed,
                                        rank=eng.data_rank, world=eng.data_world)
        self.val_loader = ValLoader(self.run.data.val_path, cfg.batch_size, cfg.seq_len, cfg.eval_batches,
                                    rank=eng.val_rank, world=eng.val_world)
        self.schedule = self.run.lr_schedule
        self.step = 0
        self.skipped_steps = 0        # steps dropped for a non-finite loss/gradient (--on-nonfinite skip)
        self.tokens_per_step = cfg.batch_size * cfg.seq_len

    @property
    def is_main(self) -> bool:
        return self.run.is_main

    def train_step(self) -> float:
        from .nonfinite import StepGuard

        batch = self.train_loader.next_batch()
        loss = self.engine.train_step(batch, self.schedule(self.step), StepGuard(self.step + 1, self.cfg.on_nonfinite))
        self.step += 1
        self.skipped_steps += int(self.engine.last_step_skipped)
        return loss

    def evaluate(self) -> float | None:
        """The val loss; None on ranks whose engine leaves evaluation to another rank."""
        return self.engine.evaluate(self.val_loader)

    def grad_norm(self) -> float:
        """The global gradient norm of the last step."""
        return self.engine.grad_norm()

    def full_model(self):
        """The whole model on rank 0 (a collective: every rank calls it); None elsewhere."""
        return self.engine.full_model()

    def sample(self, model) -> str:
        from .sampling import generate

        prompt = self.cfg.prompt or "\n"
        ids = generate(model, self.run.tokenizer.encode(prompt), self.cfg.sample_len, self.cfg.temperature,
                       self.cfg.top_k, seed=self.cfg.seed)
        return self.run.tokenizer.decode(ids)

    def save(self, model) -> None:
        from .model_io import save_model

        if self.cfg.out and self.is_main:
            save_model(model, self.cfg.out, self.run.data.tokenizer_spec)


def run_training(cfg: TrainConfig | Any) -> dict:
    """Trains as configured; returns a summary (final loss, val loss, tokens/s, sample)."""
    from tqdm.auto import tqdm

    from ..models import param_specs
    from .checkpointing import restore_trainer, resume_path, save_trainer
    from .telemetry import Telemetry

    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.from_args(cfg)
    run = prepare_run(cfg)
    if run.is_server:   # --param-servers: this rank serves, and does nothing else
        from .ps_server import serve

        return serve(run)
    tr = Trainer(run)
    main = run.is_main  # in a parallel run rank 0 alone prints, logs and saves
    if cfg.out and main:   # --overwrite deletes the old run only now, when nothing can fail before writing
        from .run_dir import prepare_run_dir

        prepare_run_dir(cfg.out, cfg.resume, cfg.overwrite)
    # -- resume: train/checkpointing.py ("latest" with no checkpoint yet is a fresh start)
    ckpt = resume_path(cfg)
    start = restore_trainer(tr, ckpt) if ckpt else 0
    tr.engine.start()
    if cfg.progress and cfg.resume and main:
        print(f"resuming from {ckpt} at step {start}" if ckpt else "no checkpoint to resume from: starting at step 0")
    n_params = sum(int(np.prod(shape)) for _, shape, _ in param_specs(run.model_config))
    telemetry = Telemetry(cfg.out if main else None, run.device, n_params, cfg.peak_tflops, cfg.tensorboard,
                          resume_step=start if ckpt else None)
    bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and main), dynamic_ncols=True,
               mininterval=1.0)
    summary: dict[str, Any] = {"preset": cfg.preset, "device": run.device, "steps": cfg.steps,
                               "threads": run.threads, **tr.engine.summary()}
    t_last, tokens_since, loss = time.perf_counter(), 0, float("nan")
    val_loss = None
    try:
        for _ in range(start, cfg.steps):
            loss = tr.train_step()
            tokens_since += tr.tokens_per_step
            record: dict[str, Any] | None = None
            if tr.step % cfg.log_every == 0 or tr.step == cfg.steps:
                now = time.perf_counter()
                tps = tokens_since / max(now - t_last, 1e-9)
                t_last, tokens_since = now, 0
                record = telemetry.enrich({"step": tr.step, "loss": loss, "tokens_per_s": tps,
                                           "lr": tr.schedule(tr.step - 1), "grad_norm": tr.grad_norm(),
                                           "skipped_steps": tr.skipped_steps, **tr.engine.metrics()})
                bar.set_postfix(telemetry.postfix(record), refresh=False)
            if (cfg.eval_every and tr.step % cfg.eval_every == 0) or tr.step == cfg.steps:
                val_loss = tr.evaluate()
                record = record or {"step": tr.step, "loss": loss}
                record["val_loss"] = val_loss
                if main and val_loss is not None:
                    bar.write(f"step {tr.step}: loss {loss:.4f}  val_loss {val_loss:.4f}")
                t_last = time.perf_counter()  # evaluation time is not training throughput
            if record:
                telemetry.log(record)
            if cfg.sample_every and tr.step % cfg.sample_every == 0:
                model = tr.full_model()
                if main:
                    bar.write(tr.sample(model))
            # -- checkpoints: every --save-every steps and at the end (train/checkpointing.py)
            if cfg.out and ((cfg.save_every and tr.step % cfg.save_every == 0) or tr.step == cfg.steps):
                save_trainer(tr)
                t_last = time.perf_counter()
            bar.update(1)
    finally:
        bar.close()
        telemetry.close()
    summary.update(tr.engine.finish())
    model = tr.full_model()
    if not main:
        return {**summary, "loss": loss, "val_loss": val_loss}
    tr.save(model)
    sample = tr.sample(model) if cfg.sample_len > 0 else ""
    if cfg.progress and sample:
        print("---- sample ----")
        print(sample)
    summary.update({"loss": loss, "val_loss": val_loss, "sample": sample, "skipped_steps": tr.skipped_steps})
    bubbles = summary.get("bubble_fraction")
    if bubbles is not None and cfg.progress:
        print("measured bubble fraction per rank: " + ", ".join(f"{r}: {b:.3f}" for r, b in bubbles.items())
              + f"  (trace: {cfg.trace})")
    if cfg.out:
        with open(os.path.join(cfg.out, "summary.json"), "w") as f:
            json.dump({k: v for k, v in summary.items() if k != "sample"}, f, indent=2)
    return summary
