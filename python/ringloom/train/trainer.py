"""The training loop, readable top to bottom: data, model, optimizer, then steps with
logging, evaluation, samples and the saved model.

    run_training(config) -> summary dict

One process trains alone with Model.forward_backward; under a launcher (WORLD_SIZE > 1),
or with --dp/--pp/--micro-batches, each rank drives a ringloom.parallel.ParallelEngine
instead: its loader reads its dp rank's rows of the same global batch, the engine runs its
pipeline stage, and rank 0 alone prints, logs metrics, samples and saves (the full model is
gathered to it). With --param-servers S the last S ranks serve the parameters instead and
the others are workers (train/ps_training.py); worker 0 is rank 0.

Checkpoints (train/checkpointing.py), the non-finite guard (train/nonfinite.py) and the
metrics sinks (train/telemetry.py) live in their own modules; the loop calls them.
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


def _layout(cfg: TrainConfig) -> tuple[int, int, int]:
    """(world, dp, pp), checked against the launcher's WORLD_SIZE and the batch; with
    parameter servers dp is the number of workers."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.param_servers:
        from .ps_training import workers_of

        return world, workers_of(cfg, world), 1
    pp = cfg.pp
    if world % pp:
        raise ValueError(f"--pp {pp} does not divide the world size {world} (ranks started by the launcher)")
    dp = cfg.dp if cfg.dp is not None else world // pp
    if dp * pp != world:
        raise ValueError(f"--dp {dp} x --pp {pp} = {dp * pp} ranks, but the launcher started {world}; "
                         f"start them with `ringloom launch -n {dp * pp} -m ringloom train ...`")
    m = cfg.micro_batches or pp
    if cfg.batch_size % (dp * m):
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by dp x micro-batches = {dp} x {m}")
    return world, dp, pp


def cpu_threads(requested: int = 0) -> int:
    """The CPU ops' thread count for --threads ``requested`` (0 = auto).

    Auto takes every core only when the 1-minute load average says they are free, and one
    thread otherwise. Threads that must wait for cores busy with other processes stall
    every fork-join and GEMM: on our 2-core machine the tiny preset ran 1.6x faster on 2
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


def _refuse_unsupported(cfg: TrainConfig) -> None:
    """Options the CLI accepts but this version cannot honour yet fail loudly, never silently."""
    from .ps_training import check_options

    if (cfg.resume or cfg.save_every) and not cfg.out:
        raise ValueError("--save-every/--resume need an output directory (--out) for the checkpoints")
    check_options(cfg)
    stateful = cfg.local_sgd or cfg.compression.split(":")[0].lower() in ("topk", "powersgd")
    if cfg.resume and stateful:
        # Replicas that differ between averagings, and error-feedback residuals, are not in
        # the checkpoints: a resumed run would silently differ from an uninterrupted one.
        raise ValueError("--resume with --local-sgd or --compression topk/powersgd is not supported yet (their "
                         "per-rank state is not checkpointed)")
    if cfg.cuda_graph:
        if not str(cfg.device).startswith("cuda"):
            raise ValueError(f"--cuda-graph needs --device cuda (CUDA Graphs replay GPU work), got --device {cfg.device}")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 or cfg.pp > 1 or (cfg.dp or 1) > 1 or (cfg.micro_batches or 1) > 1:
            raise ValueError("--cuda-graph captures a single-process step; it cannot be combined with "
                             "--dp/--pp/--micro-batches or a launcher")
        if cfg.on_nonfinite == "skip":
            raise ValueError("--cuda-graph cannot --on-nonfinite skip: a captured step always applies its update "
                             "(non-finite values are seen after the step); use --on-nonfinite stop")


class Trainer:
    """One process's view of a run: holds the model, optimizer and loaders, runs steps."""

    def __init__(self, cfg: TrainConfig):
        from ..data import TokenLoader, ValLoader, prepare_data
        from ..models import build_model, get_preset
        from ..optim import AdamW, LRSchedule

        self.cfg = cfg
        _refuse_unsupported(cfg)
        preset = get_preset(cfg.preset)  # an unknown preset fails before any data work
        self.world_size, self.dp, self.pp = _layout(cfg)
        self.parallel = self.world_size > 1 or (cfg.micro_batches or 1) > 1
        self.device, self.dtype = _resolve_device(cfg)
        self.threads = cpu_threads(cfg.threads)
        _C.set_num_threads(self.threads)  # the CPU ops; also the host-side work of a GPU run
        self.pg = self.mesh = self.engine = self.ps = self.ps_server = None
        self.is_server = False
        if self.parallel:
            import ringloom.distributed as dist
            from ..parallel import DeviceMesh

            if self.device != "cpu" and self.device == "cuda:0":
                self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(1, _C.cuda_device_count())}"
            backend = cfg.backend or ("nccl" if self.device != "cpu" else "auto")
            self.pg = dist.world() if dist.is_initialized() else dist.init(backend=backend)
            if not cfg.param_servers:
                self.mesh = DeviceMesh(self.dp, self.pp, self.pg)
        self.is_main = self.pg is None or self.pg.rank == 0
        if cfg.out and self.is_main:
            os.makedirs(cfg.out, exist_ok=True)
        if self.pg is not None and not self.is_main:
            self.pg.barrier()  # rank 0 tokenizes and caches the data first; the others reuse it
        self.tokenizer, self.data = prepare_data(cfg.data, cfg.tokenizer, val_fraction=cfg.val_fraction,
                                                 corpus_bytes=cfg.corpus_bytes)
        if self.pg is not None and self.is_main:
            self.pg.barrier()
        if cfg.seq_len > preset.max_seq_len:
            raise ValueError(f"--seq-len {cfg.seq_len} exceeds the {cfg.preset!r} preset's maximum sequence "
                             f"length {preset.max_seq_len}")
        self.model_config = get_preset(cfg.preset, vocab_size=self.data.vocab_size)
        self.schedule = LRSchedule(cfg.lr_schedule, cfg.lr, cfg.steps, min(cfg.warmup, cfg.steps), cfg.min_lr)
        self.train_loader = self.val_loader = None
        if cfg.param_servers:
            from .ps_training import build_role

            self.model = self.optimizer = None
            build_role(self)
            if self.is_server:   # a server reads no data
                self.step, self.skipped_steps, self.captured = 0, 0, None
                return
            rank, world = self.pg.rank, self.dp
        elif self.parallel:
            from ..parallel import ParallelEngine

            self.model = self.optimizer = None
            self.engine = ParallelEngine(self.model_config, self.mesh, device=self.device, dtype=self.dtype,
                                         seed=cfg.seed, schedule=cfg.schedule, micro_batches=cfg.micro_batches,
                                         chunks=cfg.chunks, stage_layers=cfg.stage_layers, zero=cfg.zero,
                                         bucket_mb=cfg.bucket_mb, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         max_grad_norm=cfg.grad_clip, trace=cfg.trace is not None,
                                         compression=cfg.compression, local_sgd=cfg.local_sgd,
                                         local_sgd_moments=cfg.local_sgd_moments)
            rank, world = self.mesh.dp_index, self.dp
        else:
            self.model = build_model(self.model_config, device=self.device, dtype=self.dtype, seed=cfg.seed)
            self.optimizer = AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   max_grad_norm=cfg.grad_clip)
            rank, world = 0, 1
        models = self.engine.chunks if self.engine is not None else [self.ps.model if self.ps else self.model]
        for m in models:
            m.attention = cfg.attention
            m.deterministic_attention = cfg.deterministic_attention
        self.train_loader = TokenLoader(self.data.train_path, cfg.batch_size, cfg.seq_len, seed=cfg.seed,
                                        rank=rank, world=world)
        # Parameter-server workers: worker 0 evaluates whole val batches alone.
        val_rank, val_world = (0, 1) if cfg.param_servers else (rank, world)
        self.val_loader = ValLoader(self.data.val_path, cfg.batch_size, cfg.seq_len, cfg.eval_batches,
                                    rank=val_rank, world=val_world)
        self.step = 0
        self.skipped_steps = 0        # steps dropped for a non-finite loss/gradient (--on-nonfinite skip)
        self.last_grad_norm = float("nan")
        self.tokens_per_step = cfg.batch_size * cfg.seq_len
        self.captured = None
        if cfg.cuda_graph:
            from .graph import CapturedStep

            self.captured = CapturedStep(self.model, self.optimizer, (cfg.batch_size, cfg.seq_len))

    def train_step(self) -> float:
        from .nonfinite import host_scalar, step_is_finite

        inputs, targets = self.train_loader.next_batch()
        if self.ps is not None:
            # The servers skip a round whose global gradient norm is not finite; a worker that
            # sees one (or a non-finite loss) stops (--on-nonfinite skip is refused with PS).
            loss = self.ps.train_step(inputs, targets)
            self.step += 1
            self.last_grad_norm = self.ps.last_grad_norm
            # An async pull may come before any server round of this run: no norm yet (NaN).
            step_is_finite(loss, self.last_grad_norm if self.ps.rounds_seen else 0.0, self.step,
                           self.cfg.on_nonfinite)
            return loss
        if self.engine is not None:
            step = self.step + 1
            loss = self.engine.train_step(inputs, targets, lr=self.schedule(self.step),
                                          accept=lambda l, n: step_is_finite(l, n, step, self.cfg.on_nonfinite))
            self.step = step
            self.last_grad_norm = self.engine.last_grad_norm
            self.skipped_steps += int(self.engine.last_step_skipped)
            return loss
        if self.captured is not None:
            return self._captured_step(inputs, targets)
        self.model.zero_grad()
        loss = self.model.forward_backward(inputs, targets)
        lr = self.schedule(self.step)
        self.step += 1
        # -- non-finite guard (train/nonfinite.py): the update happens only on finite values
        norm = self.optimizer.compute_grad_norm()
        self.last_grad_norm = host_scalar(norm)
        if step_is_finite(loss, self.last_grad_norm, self.step, self.cfg.on_nonfinite):
            self.optimizer.step(lr=lr, grad_norm=norm)
        else:
            self.skipped_steps += 1
        return loss

    def _captured_step(self, inputs, targets) -> float:
        """--cuda-graph: the whole step (update included) as one graph launch; the loss and
        norm are read after it, so a non-finite step stops the run after its update."""
        from .nonfinite import NonFiniteError

        loss = self.captured.step(inputs, targets, lr=self.schedule(self.step))
        self.step += 1
        self.last_grad_norm = self.optimizer.grad_norm()
        if not (np.isfinite(loss) and np.isfinite(self.last_grad_norm)):
            raise NonFiniteError(f"step {self.step}: loss {loss}, gradient norm {self.last_grad_norm} with "
                                 "--cuda-graph: the captured step had already applied its update; resume from the "
                                 "last checkpoint with a lower --lr")
        return loss

    def evaluate(self) -> float | None:
        """The val loss; None on parameter-server workers other than worker 0 (it alone
        evaluates)."""
        if self.ps is not None:
            if not self.is_main:
                return None
            return float(np.mean([self.ps.model.loss(x, y) for x, y in self.val_loader]))
        if self.engine is not None:
            return self.engine.evaluate(self.val_loader)
        losses = [self.model.loss(x, y) for x, y in self.val_loader]
        return float(np.mean(losses))

    @property
    def comm_bytes_last_step(self) -> int | None:
        """Payload bytes this rank sent and received in the last step's gradient exchange
        (None for single-process training)."""
        if self.ps is not None:
            return self.ps.comm_bytes_last_step
        return self.engine.comm_bytes_last_step if self.engine is not None else None

    def grad_norm(self) -> float:
        """The global gradient norm of the last step (read on the host by train_step)."""
        return self.last_grad_norm

    def full_model(self):
        """The whole model on rank 0 (gathered from the stages in a parallel run; a
        collective there: every rank must call it); None on the other ranks."""
        if self.ps is not None:
            return self.ps.model if self.is_main else None
        if self.engine is None:
            return self.model
        from ..models import build_model

        state = self.engine.gather_full_state()
        if state is None:
            return None
        model = build_model(self.model_config, device=self.device, dtype=self.dtype, seed=self.cfg.seed,
                            attention=self.cfg.attention)
        model.load_state_dict(state)
        return model

    def write_trace(self) -> dict | None:
        """Each rank writes its timeline; rank 0 merges them into --trace and returns
        {rank: measured bubble fraction}."""
        from ..parallel import merge_traces, rank_path

        if self.engine is None or self.engine.trace is None:
            return None
        path = self.cfg.trace
        self.engine.trace.write(rank_path(path, self.pg.rank))
        self.pg.barrier()
        if not self.is_main:
            return None
        return merge_traces([rank_path(path, r) for r in range(self.pg.size)], path)

    def sample(self, model=None) -> str:
        from .sampling import generate

        model = model or self.model
        prompt = self.cfg.prompt or "\n"
        ids = generate(model, self.tokenizer.encode(prompt), self.cfg.sample_len, self.cfg.temperature,
                       self.cfg.top_k, seed=self.cfg.seed)
        return self.tokenizer.decode(ids)

    def save(self, model=None) -> None:
        from .model_io import save_model

        if self.cfg.out and self.is_main:
            save_model(model or self.model, self.cfg.out, self.data.tokenizer_spec)


def run_training(cfg: TrainConfig | Any) -> dict:
    """Trains as configured; returns a summary (final loss, val loss, tokens/s, sample)."""
    from tqdm.auto import tqdm

    from ..models import param_specs
    from .checkpointing import restore_trainer, resume_path, save_trainer
    from .ps_training import finish as ps_finish
    from .telemetry import Telemetry

    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.from_args(cfg)
    tr = Trainer(cfg)
    if tr.is_server:   # --param-servers: this rank serves, and does nothing else
        from .ps_training import run_server

        return run_server(tr)
    main = tr.is_main  # in a parallel run rank 0 alone prints, logs and saves
    # -- resume: train/checkpointing.py ("latest" with no checkpoint yet is a fresh start)
    ckpt = resume_path(cfg, tr)
    start = restore_trainer(tr, ckpt) if ckpt else 0
    if tr.ps is not None:
        tr.ps.connect(tr.ps_initial)   # worker 0's (possibly restored) weights to the servers, then all pull
    if cfg.progress and cfg.resume and main:
        print(f"resuming from {ckpt} at step {start}" if ckpt else "no checkpoint to resume from: starting at step 0")
    n_params = sum(int(np.prod(shape)) for _, shape, _ in param_specs(tr.model_config))
    telemetry = Telemetry(cfg.out if main else None, tr.device, n_params, cfg.peak_tflops, cfg.tensorboard,
                          resume_step=start if ckpt else None)
    bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and main), dynamic_ncols=True,
               mininterval=1.0)
    summary: dict[str, Any] = {"preset": cfg.preset, "device": tr.device, "steps": cfg.steps,
                               "threads": tr.threads}
    if tr.engine is not None:
        summary.update({"compression": cfg.compression, "local_sgd": cfg.local_sgd})
        summary.update({"dp": tr.dp, "pp": tr.pp, "schedule": cfg.schedule, "zero": cfg.zero,
                        "micro_batches": tr.engine.micro_batches, "stage_layers": tr.engine.stage_layers})
    if tr.ps is not None:
        summary.update({"param_servers": cfg.param_servers, "workers": tr.dp, "ps_mode": cfg.ps_mode,
                        "ps_staleness": cfg.ps_staleness})
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
                                           "skipped_steps": tr.skipped_steps})
                if tr.comm_bytes_last_step is not None:   # payload bytes of this rank's exchange, last step
                    record["comm_bytes"] = tr.comm_bytes_last_step
                if tr.ps is not None:   # the server rounds in the parameters worker 0 last pulled
                    record["ps_version"] = tr.ps.last_version
                bar.set_postfix(telemetry.postfix(record), refresh=False)
            if tr.ps is not None and tr.step == cfg.steps:
                ps_finish(tr)   # worker 0: the servers' final parameters, before evaluating them
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
    bubbles = tr.write_trace() if cfg.trace else None
    model = tr.full_model()
    if not main:
        return {**summary, "loss": loss, "val_loss": val_loss}
    tr.save(model)
    sample = tr.sample(model) if cfg.sample_len > 0 else ""
    if cfg.progress and sample:
        print("---- sample ----")
        print(sample)
    summary.update({"loss": loss, "val_loss": val_loss, "sample": sample, "skipped_steps": tr.skipped_steps})
    if bubbles is not None:
        summary["bubble_fraction"] = bubbles
        if cfg.progress:
            print("measured bubble fraction per rank: " + ", ".join(f"{r}: {b:.3f}" for r, b in bubbles.items())
                  + f"  (trace: {cfg.trace})")
    if cfg.out:
        with open(os.path.join(cfg.out, "summary.json"), "w") as f:
            json.dump({k: v for k, v in summary.items() if k != "sample"}, f, indent=2)
    return summary
