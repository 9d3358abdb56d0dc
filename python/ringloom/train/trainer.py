"""The training loop, readable top to bottom: data, model, optimizer, then steps with
logging, evaluation, samples and the saved model.

    run_training(config) -> summary dict

Single-process today; the parallel layouts (dp x pp) plug in through the same loop.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from .. import _C
from .config import TrainConfig


def _resolve_device(cfg: TrainConfig) -> tuple[str, str]:
    device = "cuda:0" if cfg.device == "cuda" else cfg.device
    if device.startswith("cuda"):
        if not _C.has_cuda_build:
            raise ValueError("--device cuda: this ringloom was built without CUDA")
        if not _C.cuda_available():
            raise ValueError("--device cuda: no CUDA device is visible")
    elif device != "cpu":
        raise ValueError(f"unknown device {cfg.device!r}: expected cpu, cuda or cuda:N")
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    if device == "cpu" and dtype != "float32":
        raise ValueError(f"--dtype {dtype}: the CPU backend computes in float32")
    return device, dtype


def _refuse_unsupported(cfg: TrainConfig) -> None:
    """Options the CLI accepts but this version cannot honour yet fail loudly, never silently."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.pp > 1 or (cfg.dp or 1) > 1 or world > 1:
        raise ValueError("data/pipeline parallel training (--dp/--pp, or a launch with WORLD_SIZE > 1) is not "
                         "available in this version yet; run a single process")
    if (cfg.resume or cfg.save_every) and not cfg.out:
        raise ValueError("--save-every/--resume need an output directory (--out) for the checkpoints")


class Trainer:
    """One process's view of a run: holds the model, optimizer and loaders, runs steps."""

    def __init__(self, cfg: TrainConfig):
        from ..data import TokenLoader, ValLoader, prepare_data
        from ..models import build_model, get_preset
        from ..optim import AdamW, LRSchedule

        self.cfg = cfg
        _refuse_unsupported(cfg)
        self.device, self.dtype = _resolve_device(cfg)
        if cfg.out:
            os.makedirs(cfg.out, exist_ok=True)
        self.tokenizer, self.data = prepare_data(cfg.data, cfg.tokenizer, val_fraction=cfg.val_fraction,
                                                 corpus_bytes=cfg.corpus_bytes)
        preset = get_preset(cfg.preset)
        if cfg.seq_len > preset.max_seq_len:
            raise ValueError(f"--seq-len {cfg.seq_len} exceeds the {cfg.preset!r} preset's maximum sequence "
                             f"length {preset.max_seq_len}")
        self.model_config = get_preset(cfg.preset, vocab_size=self.data.vocab_size)
        self.model = build_model(self.model_config, device=self.device, dtype=self.dtype, seed=cfg.seed)
        self.optimizer = AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                               max_grad_norm=cfg.grad_clip)
        self.schedule = LRSchedule(cfg.lr_schedule, cfg.lr, cfg.steps, min(cfg.warmup, cfg.steps), cfg.min_lr)
        self.train_loader = TokenLoader(self.data.train_path, cfg.batch_size, cfg.seq_len, seed=cfg.seed)
        self.val_loader = ValLoader(self.data.val_path, cfg.batch_size, cfg.seq_len, cfg.eval_batches)
        self.step = 0
        self.skipped_steps = 0        # steps dropped for a non-finite loss/gradient (--on-nonfinite skip)
        self.last_grad_norm = float("nan")
        self.tokens_per_step = cfg.batch_size * cfg.seq_len

    def train_step(self) -> float:
        from .nonfinite import host_scalar, step_is_finite

        inputs, targets = self.train_loader.next_batch()
        self.model.zero_grad()
        loss = self.model.forward_backward(inputs, targets)
        lr = self.schedule(self.step)
        self.step += 1
        norm = self.optimizer.compute_grad_norm()
        self.last_grad_norm = host_scalar(norm)
        if step_is_finite(loss, self.last_grad_norm, self.step, self.cfg.on_nonfinite):
            self.optimizer.step(lr=lr, grad_norm=norm)
        else:
            self.skipped_steps += 1
        return loss

    def evaluate(self) -> float:
        losses = [self.model.loss(x, y) for x, y in self.val_loader]
        return float(np.mean(losses))

    def sample(self) -> str:
        from .sampling import generate

        prompt = self.cfg.prompt or "\n"
        ids = generate(self.model, self.tokenizer.encode(prompt), self.cfg.sample_len, self.cfg.temperature,
                       self.cfg.top_k, seed=self.cfg.seed)
        return self.tokenizer.decode(ids)

    def save(self) -> None:
        from .model_io import save_model

        if self.cfg.out:
            save_model(self.model, self.cfg.out, self.data.tokenizer_spec)


def run_training(cfg: TrainConfig | Any) -> dict:
    """Trains as configured; returns a summary (final loss, val loss, tokens/s, sample)."""
    from tqdm.auto import tqdm

    from .checkpointing import restore_trainer, resume_path, save_trainer
    from .telemetry import Telemetry

    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.from_args(cfg)
    tr = Trainer(cfg)
    # -- resume: train/checkpointing.py ("latest" with no checkpoint yet is a fresh start)
    ckpt = resume_path(cfg)
    start = restore_trainer(tr, ckpt) if ckpt else 0
    if cfg.progress and cfg.resume:
        print(f"resuming from {ckpt} at step {start}" if ckpt else "no checkpoint to resume from: starting at step 0")
    telemetry = Telemetry(cfg.out, tr.device, tr.model.num_parameters(), cfg.peak_tflops, cfg.tensorboard,
                          resume_step=start if ckpt else None)
    bar = tqdm(total=cfg.steps, initial=start, disable=not cfg.progress, dynamic_ncols=True, mininterval=1.0)
    summary: dict[str, Any] = {"preset": cfg.preset, "device": tr.device, "steps": cfg.steps}
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
                                           "lr": tr.schedule(tr.step - 1), "grad_norm": tr.last_grad_norm,
                                           "skipped_steps": tr.skipped_steps})
                bar.set_postfix(telemetry.postfix(record), refresh=False)
            if (cfg.eval_every and tr.step % cfg.eval_every == 0) or tr.step == cfg.steps:
                val_loss = tr.evaluate()
                record = record or {"step": tr.step, "loss": loss}
                record["val_loss"] = val_loss
                bar.write(f"step {tr.step}: loss {loss:.4f}  val_loss {val_loss:.4f}")
                t_last = time.perf_counter()  # evaluation time is not training throughput
            if record:
                telemetry.log(record)
            if cfg.sample_every and tr.step % cfg.sample_every == 0:
                bar.write(tr.sample())
            # -- checkpoints: every --save-every steps and at the end
            if cfg.out and ((cfg.save_every and tr.step % cfg.save_every == 0) or tr.step == cfg.steps):
                save_trainer(tr)
                t_last = time.perf_counter()
            bar.update(1)
    finally:
        bar.close()
        telemetry.close()
    tr.save()
    sample = tr.sample() if cfg.sample_len > 0 else ""
    if cfg.progress and sample:
        print("---- sample ----")
        print(sample)
    summary.update({"loss": loss, "val_loss": val_loss, "sample": sample, "skipped_steps": tr.skipped_steps})
    if cfg.out:
        with open(os.path.join(cfg.out, "summary.json"), "w") as f:
            json.dump({k: v for k, v in summary.items() if k != "sample"}, f, indent=2)
    return summary
