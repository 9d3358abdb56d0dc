"""Shared by the parallel tests and their worker: the tiny model, the batches and the
single-process reference run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from ringloom.models import build_model, get_preset
from ringloom.optim import AdamW
from ringloom.testing import child_env as _child_env
from ringloom.testing.golden import learnable_rows

SEQ = 11          # odd on purpose
BATCH = 12        # global batch: divisible by dp * micro-batches in every layout tested
VOCAB = 61
OPT = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0)


def model_config(arch: str = "gpt2", n_layer: int = 4):
    """GPT-2 without linear biases: the key part of the qkv bias has an exactly zero
    gradient (softmax ignores a shift of all scores of a row), so in fp32 it is pure
    rounding noise, which Adam normalises into +-lr steps that no two summation orders
    share. LayerNorm biases stay, and LLaMA has no biases anyway."""
    if arch == "gpt2":
        return get_preset("tiny", n_layer=n_layer, n_embd=32, n_head=4, vocab_size=VOCAB, max_seq_len=16, bias=False)
    return get_preset("llama-tiny", n_layer=n_layer, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=64,
                      vocab_size=VOCAB, max_seq_len=16)


def tp_model_config(arch: str = "gpt2", **overrides):
    """The model of the tensor-parallel tests: 6 heads (split 2 or 3 ways), 4 layers, the
    odd vocabulary (split unevenly 2 and 3 ways), no linear biases as above except where
    a test turns them on."""
    base = dict(n_layer=4, n_embd=48, n_head=6, vocab_size=VOCAB, max_seq_len=24)
    if arch == "gpt2":
        return get_preset("tiny", **{**base, "bias": False, **overrides})
    return get_preset("llama-tiny", **{**base, "n_kv_head": 2, "ffn_hidden": 96, **overrides})


def global_batch(step: int, seed: int = 7, seq: int = SEQ) -> tuple[np.ndarray, np.ndarray]:
    """ids, targets int32 [BATCH, seq] for a step (the same in every process)."""
    g = np.random.default_rng([seed, step])
    rows = g.integers(0, VOCAB, size=(BATCH, seq + 1), dtype=np.int32)
    return rows[:, :-1].copy(), rows[:, 1:].copy()


def learnable_batch(step: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A stream a tiny model learns in a few dozen steps (ringloom.testing.golden.learnable_rows:
    x[t+1] = (5 x[t] + 3) mod VOCAB, 1 in 8 tokens noise, so compressed runs are judged
    against a floor)."""
    rows = learnable_rows(np.random.default_rng([seed, step, 1]), BATCH, SEQ + 1, VOCAB).astype(np.int32)
    return rows[:, :-1].copy(), rows[:, 1:].copy()


VAL_STEPS = (100, 101)  # the val batches: global_batch(k) for these k


def reference_run(arch: str, n_layer: int, steps: int, seed: int = 3) -> tuple[list[float], dict[str, np.ndarray], float]:
    """Single-process training on the whole global batch: losses per step, final weights,
    then the val loss (mean over the val batches of each batch's mean loss)."""
    model = build_model(model_config(arch, n_layer), seed=seed)
    opt = AdamW(model.parameters(), **OPT)
    losses = []
    for k in range(steps):
        ids, tgt = global_batch(k)
        model.zero_grad()
        losses.append(model.forward_backward(ids, tgt))
        opt.step()
    val = float(np.mean([model.loss(*global_batch(k)) for k in VAL_STEPS]))
    return losses, model.state_dict(), val


def child_env() -> dict[str, str]:
    """The environment for a launched child (ringloom.testing.child_env)."""
    return _child_env()


def launched_worlds(tmp_path_factory, worker: str, configs: dict[int, list[dict]], timeout: float = 300):
    """world size -> output directory of one launch of `worker` running every config of that
    world size (launched on first use; a failed launch fails the test with its output)."""
    done: dict[int, str] = {}

    def get(world: int) -> str:
        if world not in done:
            out = str(tmp_path_factory.mktemp(f"{os.path.basename(worker)[:-3]}-world{world}"))
            cmd = [sys.executable, "-m", "ringloom.launch", "-n", str(world), worker, out,
                   json.dumps(configs[world])]
            res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout)
            assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
            done[world] = out
        return done[world]
    return get
