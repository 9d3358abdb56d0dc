"""Every rule about which training options go together, in one function: ``validate``.

    validate(cfg)            # the rules that need only the options (TrainConfig runs these)
    validate(cfg, world=4)   # and those of the model and the ranks (prepare_run); returns the Layout

A rule is a few lines that raise ValueError with the flags' names, so that the CLI prints it
as one line and Python callers see what to change. Rules run in the order written: field
values first, then conflicts between options, then (with the world) the model shape and the
layout against the number of ranks.
ringloom.parallel.ParallelEngine, usable without a TrainConfig, checks its gradient-exchange
options with parallel/exchange.check_gradient_exchange, which ``validate`` calls too.

To add a rule: write it in ``validate`` under the heading it belongs to, with a test in
tests/train/test_options.py that builds the failing TrainConfig and matches the message.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from ..parallel.exchange import check_gradient_exchange, compression_kind

STATEFUL_COMPRESSION = ("topk", "powersgd")   # keep error-feedback / warm-start state per rank


@dataclass(frozen=True)
class Layout:
    """The process layout of a run: ``world`` ranks, ``dp`` data-parallel replicas (with
    parameter servers: the workers), ``pp`` pipeline stages, ``servers`` parameter servers."""
    world: int
    dp: int
    pp: int
    servers: int = 0

    def __iter__(self):   # (world, dp, pp), for unpacking
        return iter((self.world, self.dp, self.pp))


def _option(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"


def check_numbers(cfg: Any) -> None:
    """Every numeric field of ``cfg`` is of its type, finite and within the bounds its field
    declares (low / high / low_open), and the prompt is text that can be encoded; ValueError
    naming the field and its CLI option. An infinite learning rate would pass "lr > 0" and
    turn the weights into -inf, hence finite everywhere."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if not (kind.startswith("int") or kind.startswith("float")) or (v is None and "None" in kind):
            continue
        low, high, open_low = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("low_open", False)
        if kind.startswith("int"):
            ok = isinstance(v, int) and not isinstance(v, bool)
            what = "an integer"
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            what = "a finite number"
        if ok and low is not None:
            ok = v > low if open_low else v >= low
        if ok and high is not None:
            ok = v <= high
        if not ok:
            bound = what + (f" {'>' if open_low else '>='} {low}" if low is not None else "") + \
                (f" and <= {high}" if high is not None else "")
            raise ValueError(f"{_option(f.name)} must be {bound}, got {v!r}")
    if not isinstance(cfg.prompt, str):
        raise ValueError(f"{_option('prompt')} must be text, got {cfg.prompt!r}")
    try:
        cfg.prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{_option('prompt')} is not valid UTF-8 text (it holds undecodable bytes)") from None


def _check_batch_split(batch: int, dp: int, micro_batches: int) -> None:
    if batch % (dp * micro_batches):
        raise ValueError(f"--batch-size {batch} must be divisible by dp x micro-batches = {dp} x {micro_batches}: "
                         f"the per-rank batch {batch / dp:g} (--batch-size / --dp) is not divisible by "
                         f"--micro-batches {micro_batches} (default: --pp)")


def validate(cfg: Any, world: int | None = None) -> Layout | None:
    """Raise ValueError for the first option value or combination ``cfg`` (a TrainConfig)
    cannot run with; with ``world`` (ranks started), check the layout too and return it."""
    from ..parallel.compression import parse_compression

    # ---- single options
    check_numbers(cfg)
    for f in dataclasses.fields(cfg):   # the choices listed on the field (train/config.py)
        allowed = f.metadata.get("choices")
        if allowed and getattr(cfg, f.name) not in allowed:
            raise ValueError(f"{f.name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got "
                             f"{getattr(cfg, f.name)!r}")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(cfg.device)):
        raise ValueError(f"unknown device {cfg.device!r}: expected cpu, cuda or cuda:N")
    parse_compression(cfg.compression)   # an unknown spec names itself
    # ---- options that need each other, or exclude each other
    if cfg.deterministic_attention and cfg.attention == "cudnn":
        raise ValueError("--deterministic-attention needs --attention ours or auto: the cudnn backend has no "
                         "deterministic backward")
    if cfg.min_lr is not None and cfg.min_lr > cfg.lr:
        raise ValueError(f"--min-lr {cfg.min_lr} is larger than --lr {cfg.lr}")
    if cfg.device == "cpu" and cfg.dtype == "bfloat16":
        raise ValueError("--dtype bfloat16: the CPU backend computes in float32")
    if cfg.dp is not None and cfg.batch_size % cfg.dp:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by --dp {cfg.dp}")
    if cfg.micro_batches is not None:
        _check_batch_split(cfg.batch_size, cfg.dp or 1, cfg.micro_batches)
    if (cfg.resume or cfg.save_every) and not cfg.out:
        raise ValueError("--save-every/--resume need an output directory (--out) for the checkpoints")
    if not cfg.param_servers and (cfg.ps_mode != "sync" or cfg.ps_staleness):
        raise ValueError("--ps-mode/--ps-staleness need --param-servers N (N >= 1)")
    if cfg.param_servers:
        # A parameter-server step is its own thing (push, server update, pull): options that
        # change how gradients are combined or how a step runs on one rank cannot apply.
        for bad, what in ((cfg.pp > 1, "--pp (pipeline stages)"),
                          (cfg.zero, "--zero (the servers already shard the optimizer state)"),
                          (cfg.local_sgd, "--local-sgd"),
                          (compression_kind(cfg.compression) != "none", "--compression (workers push fp32 gradients)"),
                          ((cfg.micro_batches or 1) > 1, "--micro-batches"),
                          (cfg.cuda_graph, "--cuda-graph"),
                          (cfg.trace is not None, "--trace"),
                          (cfg.on_nonfinite == "skip",
                           "--on-nonfinite skip (the servers skip a non-finite round themselves; workers stop)")):
            if bad:
                raise ValueError(f"--param-servers cannot be combined with {what}")
        if cfg.ps_mode == "sync" and cfg.ps_staleness:
            raise ValueError("--ps-staleness applies to --ps-mode async (sync workers never run ahead)")
        if cfg.ps_mode == "async" and cfg.save_every:
            raise ValueError("--save-every with --ps-mode async: the workers are at different steps, so only the "
                             "end-of-run checkpoint is consistent; drop --save-every or use --ps-mode sync")
    check_gradient_exchange(cfg.zero, cfg.compression, cfg.local_sgd)
    if cfg.resume and (cfg.local_sgd or compression_kind(cfg.compression) in STATEFUL_COMPRESSION):
        # Replicas that differ between averagings, and error-feedback residuals, are not in
        # the checkpoints: a resumed run would silently differ from an uninterrupted one.
        raise ValueError("--resume with --local-sgd or --compression topk/powersgd is not supported (their "
                         "per-rank state is not checkpointed)")
    if cfg.chunks is not None and cfg.schedule != "interleaved":
        raise ValueError(f"--chunks applies to --schedule interleaved, not {cfg.schedule}")
    if cfg.cuda_graph:
        if not str(cfg.device).startswith("cuda"):
            raise ValueError(f"--cuda-graph needs --device cuda (CUDA Graphs replay GPU work), got --device {cfg.device}")
        if cfg.pp > 1 or (cfg.dp or 1) > 1 or (cfg.micro_batches or 1) > 1 or (world or 1) > 1:
            raise ValueError("--cuda-graph captures a single-process step; it cannot be combined with "
                             "--dp/--pp/--micro-batches or a launcher")
        if cfg.on_nonfinite == "skip":
            raise ValueError("--cuda-graph cannot --on-nonfinite skip: a captured step always applies its update "
                             "(non-finite values are seen after the step); use --on-nonfinite stop")
    if world is None:
        return None

    # ---- the model: the preset and its overrides (checked when the run starts)
    from ..models import get_preset

    if "vocab_size" in cfg.model_overrides:
        raise ValueError("the vocabulary size comes from the tokenizer (--tokenizer), not from a model override")
    model = get_preset(cfg.preset, **cfg.model_overrides)   # unknown presets and fields, bad shapes
    if cfg.seq_len > model.max_seq_len:
        raise ValueError(f"--seq-len {cfg.seq_len} exceeds the {cfg.preset!r} preset's maximum sequence length "
                         f"{model.max_seq_len}")

    # ---- the layout against the ranks the launcher started
    if cfg.param_servers:
        S = cfg.param_servers
        if world < S + 1:
            raise ValueError(f"--param-servers {S} needs at least {S + 1} ranks ({S} server(s) + at least one "
                             f"worker), but {world} {'was' if world == 1 else 'were'} started; start them with "
                             f"`ringloom launch -n {S + 2} -m ringloom train --param-servers {S} ...`")
        W = world - S
        if cfg.dp is not None and cfg.dp != W:
            raise ValueError(f"--dp {cfg.dp}: with --param-servers {S} of {world} ranks there are {W} workers")
        if cfg.batch_size % W:
            raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {W} workers "
                             f"({world} ranks - {S} server(s))")
        return Layout(world, W, 1, S)
    pp = cfg.pp
    if world % pp:
        raise ValueError(f"--pp {pp} does not divide the world size {world} (ranks started by the launcher)")
    dp = cfg.dp if cfg.dp is not None else world // pp
    if dp * pp != world:
        raise ValueError(f"--dp {dp} x --pp {pp} = {dp * pp} ranks, but the launcher started {world}; "
                         f"start them with `ringloom launch -n {dp * pp} -m ringloom train ...`")
    _check_batch_split(cfg.batch_size, dp, cfg.micro_batches or pp)
    return Layout(world, dp, pp)


def launched_world() -> int:
    """The number of ranks the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
