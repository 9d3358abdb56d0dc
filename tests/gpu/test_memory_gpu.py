"""Memory features on the GPU: activation recomputation gives the gradients of no
recomputation (up to the kernels' own run-to-run differences, measured here by running
"none" twice), also through the split backward and inside a captured CUDA Graph; and an
asynchronous checkpoint of a GPU run holds exactly what a blocking one holds."""
from __future__ import annotations

import os

import numpy as np
import pytest

from gpu_util import DEV
from ringloom.checkpoint.manager import list_step_dirs, open_checkpoint
from ringloom.models import build_model, get_preset
from ringloom.optim import AdamW

pytestmark = pytest.mark.gpu

SHAPES = {"gpt2": ("tiny", dict(n_layer=2, n_embd=128, n_head=2)),
          "llama": ("llama-tiny", dict(n_layer=2, n_embd=128, n_head=2, n_kv_head=1, ffn_hidden=384))}


def _batch(seed, B=4, T=64):
    rows = np.random.default_rng(seed).integers(0, 256, size=(B, T + 1))
    return rows[:, :-1], rows[:, 1:]


def _grads(model):
    out = {}
    for n, p in model.parameters():
        out[n] = np.asarray(p.grad.cpu().numpy(), np.float64)
    return out


def _run(arch, mode, split):
    preset, over = SHAPES[arch]
    model = build_model(get_preset(preset, **over), device=DEV, seed=3)
    model.recompute = mode
    losses = []
    if split:   # zero-bubble order: two forwards, both input halves, weight halves reversed
        for slot in (0, 1):
            ids, tgt = _batch(slot)
            losses.append(np.asarray(model.stage_forward(slot, ids, targets=tgt, grad_scale=1e-3).cpu().numpy()))
        for slot in (0, 1):
            model.stage_backward_input(slot)
        for slot in (1, 0):
            model.stage_backward_weight(slot)
    else:
        losses.append(model.forward_backward(*_batch(0)))
    return losses, _grads(model)


def _rel(a, b):
    return max(float(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1e-30)) for k in b)


@pytest.mark.parametrize("arch", sorted(SHAPES))
@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("mode", ["selective", "full"])
def test_recompute_gradients_match_gpu(arch, split, mode):
    l0, g0 = _run(arch, "none", split)
    l1, g1 = _run(arch, "none", split)
    noise = _rel(g1, g0)   # 0 where every kernel is deterministic
    lr, gr = _run(arch, mode, split)
    for a, b in zip(lr, l0):
        np.testing.assert_allclose(a, b, rtol=max(4 * noise, 1e-6))
    err = _rel(gr, g0)
    assert err <= max(4 * noise, 1e-6), f"{arch} {mode}: gradients differ by {err:.2e} (none vs none: {noise:.2e})"


@pytest.mark.parametrize("mode", ["selective", "full"])
def test_recompute_inside_cuda_graph(mode):
    from ringloom.train.graph import CapturedStep

    preset, over = SHAPES["llama"]
    losses = {}
    for m in ("none", mode):
        model = build_model(get_preset(preset, **over), device="cuda", seed=5)
        model.recompute = m
        opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, max_grad_norm=1.0)
        step = CapturedStep(model, opt, (4, 64))
        losses[m] = [step.step(*_batch(10 + i)) for i in range(5)]   # eager warm-up, capture, replays
    np.testing.assert_allclose(losses[mode], losses["none"], rtol=1e-3)


def test_async_checkpoint_of_gpu_run_equals_blocking(tmp_path):
    from ringloom.train.config import TrainConfig
    from ringloom.train.trainer import run_training

    dirs = {}
    for flag in (False, True):
        out = tmp_path / ("async" if flag else "blocking")
        run_training(TrainConfig(preset="tiny", device="cuda", steps=4, batch_size=8, seq_len=64, save_every=2,
                                 async_save=flag, out=str(out), eval_every=0, eval_batches=1, sample_len=0,
                                 progress=False, tensorboard=False, corpus_bytes=200_000))
        dirs[flag] = [d for _, d in list_step_dirs(os.path.join(str(out), "checkpoints"))]
    assert len(dirs[True]) == len(dirs[False]) == 2
    for a, b in zip(dirs[False], dirs[True]):
        ca, cb = open_checkpoint(a), open_checkpoint(b)
        for x, y in ((ca.model_state(), cb.model_state()), (ca.optim_state(), cb.optim_state())):
            assert sorted(x) == sorted(y)
            for k in x:
                assert np.array_equal(x[k], y[k]), k


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_replace_grads_matches_zero_grad_gpu(arch):
    """forward_backward(accumulate=False) over an earlier step's gradients gives what
    zero_grad() and an accumulating call give (the weight GEMMs overwrite instead)."""
    preset, over = SHAPES[arch]
    grads = []
    for replace in (False, True, False):   # the third run measures the kernels' own noise
        model = build_model(get_preset(preset, **over), device=DEV, seed=3)
        model.forward_backward(*_batch(0))
        if not replace:
            model.zero_grad()
        model.forward_backward(*_batch(1), accumulate=not replace)
        grads.append(_grads(model))
    noise = _rel(grads[2], grads[0])
    err = _rel(grads[1], grads[0])
    assert err <= max(4 * noise, 1e-6), f"{arch}: replaced gradients differ by {err:.2e} (noise {noise:.2e})"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_release_grads_frees_and_restores_gpu(arch):
    """release_grads gives the gradients' bytes back to the allocator, and the next backward
    (replacing or accumulating) gives what zero_grad() and a backward give."""
    import ringloom as rl

    preset, over = SHAPES[arch]
    grads = []
    for how in ("zero", "replace", "accumulate", "zero"):   # the last run measures the kernels' own noise
        model = build_model(get_preset(preset, **over), device=DEV, seed=3)
        model.forward_backward(*_batch(0))
        if how == "zero":
            model.zero_grad()
        elif not DEV.startswith("cuda"):  # the CPU dry run: no allocator statistics
            model.release_grads()
        else:
            rl._C.cuda_synchronize(0)
            before = rl._C.cuda_memory_stats(0)["allocated_bytes"]
            model.release_grads()
            freed = before - rl._C.cuda_memory_stats(0)["allocated_bytes"]
            want = sum(4 * p.grad.numel() for _, p in model.parameters())
            assert freed >= want, f"{arch}: release_grads freed {freed} bytes of {want}"
        model.forward_backward(*_batch(1), accumulate=how != "replace")
        grads.append(_grads(model))
    noise = _rel(grads[3], grads[0])
    for k, how in ((1, "replace"), (2, "accumulate")):
        err = _rel(grads[k], grads[0])
        assert err <= max(4 * noise, 1e-6), f"{arch} {how}: gradients after release differ by {err:.2e}"
