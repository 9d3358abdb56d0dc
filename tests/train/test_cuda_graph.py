"""CUDA Graph training steps (train/graph.py, _C.CudaGraph) where there is no GPU: every
entry refuses cleanly, naming the reason, and the pieces the captured step is built from
(AdamW's lr/bias corrections read from a tensor) are right on the CPU. The captured step
itself is tested on the GPU: tests/gpu/test_cuda_graph_gpu.py."""
import argparse

import numpy as np
import pytest

import ringloom as rl
from ringloom import _C
from ringloom.models import build_model, get_preset
from ringloom.optim import AdamW
from ringloom.train.graph import CapturedStep

ops = _C.ops


def _small_model(device="cpu"):
    return build_model(get_preset("tiny", n_layer=1, n_embd=32, n_head=2), device=device, seed=3)


def test_captured_step_refuses_a_cpu_model():
    model = _small_model()
    opt = AdamW(model.parameters())
    if _C.has_cuda_build:
        with pytest.raises(ValueError, match="model is on cpu.*CUDA device"):
            CapturedStep(model, opt, (2, 5))
    else:
        with pytest.raises(RuntimeError, match="built without CUDA"):
            CapturedStep(model, opt, (2, 5))


@pytest.mark.skipif(_C.cuda_available(), reason="checks the refusal where no CUDA device is visible")
def test_cuda_graph_cannot_be_made_without_a_device():
    with pytest.raises(RuntimeError, match="no CUDA backend|no CUDA device"):
        _C.CudaGraph(0)


def test_trainer_refuses_cuda_graph_on_cpu(train_config):
    from ringloom.train.trainer import Trainer

    with pytest.raises(ValueError, match="--cuda-graph needs --device cuda"):
        Trainer(train_config(cuda_graph=True))


def test_trainer_refuses_cuda_graph_with_skip(train_config):
    from ringloom.train.trainer import Trainer

    # The option check comes before the device is opened, so this runs without a GPU.
    with pytest.raises(ValueError, match="cannot --on-nonfinite skip"):
        Trainer(train_config(cuda_graph=True, device="cuda", on_nonfinite="skip"))


def test_trainer_refuses_cuda_graph_with_pipeline(train_config):
    from ringloom.train.trainer import Trainer

    with pytest.raises(ValueError, match="single-process"):
        Trainer(train_config(cuda_graph=True, device="cuda", pp=2))


def test_cli_parses_cuda_graph():
    from ringloom.cli import build_parser
    from ringloom.train.config import TrainConfig

    args = build_parser().parse_args(["train", "--cuda-graph", "--device", "cuda"])
    assert TrainConfig.from_args(args).cuda_graph is True
    args = build_parser().parse_args(["train"])
    assert TrainConfig.from_args(args).cuda_graph is False


# ---- AdamW with lr and bias corrections read from a tensor (what a replayed graph uses)

def _adam_state(rng, shapes):
    p = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    g = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    m = [0.1 * rng.standard_normal(s).astype(np.float32) for s in shapes]
    v = [rng.random(s).astype(np.float32) for s in shapes]
    return p, g, m, v


def _tensors(arrays):
    return [rl.tensor(a.copy()) for a in arrays]


def test_adamw_write_scalars_matches_float64_bias_correction():
    s = rl.tensor(np.full(3, np.nan, np.float32))
    for step, lr in [(1, 3e-4), (7, 1.5e-3), (1000, 2e-5)]:
        ops.adamw_write_scalars(s, lr=lr, beta1=0.9, beta2=0.95, step=step)
        b1, b2 = float(np.float32(0.9)), float(np.float32(0.95))
        want = np.array([lr, 1.0 / (1.0 - b1 ** step), 1.0 / (1.0 - b2 ** step)], np.float32)
        np.testing.assert_array_equal(np.asarray(s), want)


def test_adamw_step_reads_lr_and_step_from_scalars(rng):
    shapes = [(5, 3), (11,), (2, 7, 3)]
    p, g, m, v = _adam_state(rng, shapes)
    wd = [0.1, 0.0, 0.05]

    def run(lr_arg, step_arg, scalars):
        P, G, M, Vv = _tensors(p), _tensors(g), _tensors(m), _tensors(v)
        ops.adamw_step(P, G, M, Vv, wd, lr=lr_arg, step=step_arg, scalars=scalars)
        return [np.asarray(t).copy() for t in P + M + Vv]

    want = run(2e-3, 5, None)
    s = rl.tensor(np.full(3, np.nan, np.float32))
    ops.adamw_write_scalars(s, lr=2e-3, step=5)
    # Deliberately different lr/step arguments: the scalars tensor must win.
    got = run(9e-1, 1, s)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(run(9e-1, 1, None)[0], want[0]), "the test cannot tell the two apart"


@pytest.mark.parametrize("bad,match", [
    (lambda: rl.tensor(np.zeros(2, np.float32)), "3-element"),
    (lambda: rl.tensor(np.zeros(3, np.int32)), "scalars"),
])
def test_adamw_scalars_are_validated(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ops.adamw_write_scalars(bad(), lr=1e-3, step=1)
    p = [rl.tensor(np.ones(4, np.float32))]
    z = [rl.tensor(np.zeros(4, np.float32))]
    with pytest.raises((ValueError, TypeError), match=match):
        ops.adamw_step(p, z, z, z, [0.0], lr=1e-3, scalars=bad())


def test_adamw_write_scalars_rejects_step_zero():
    with pytest.raises(ValueError, match="step must be >= 1"):
        ops.adamw_write_scalars(rl.tensor(np.zeros(3, np.float32)), lr=1e-3, step=0)


def test_optimizer_with_device_scalars_takes_the_same_steps(rng):
    """AdamW.use_device_scalars + prepare_step/apply_step (the captured step's split) gives
    the same bits as step(lr) over a changing learning rate."""
    a_model, b_model = _small_model(), _small_model()
    a = AdamW(a_model.parameters(), lr=1e-3, max_grad_norm=0.5)
    b = AdamW(b_model.parameters(), lr=1e-3, max_grad_norm=0.5)
    b.use_device_scalars()
    for step in range(4):
        ids = rng.integers(0, 256, size=(2, 9))
        tgt = rng.integers(0, 256, size=(2, 9))
        lr = 1e-3 * (step + 1) / 4
        for model, opt in ((a_model, a), (b_model, b)):
            model.zero_grad()
            model.forward_backward(ids, tgt)
        a.step(lr=lr)
        b.prepare_step(lr)
        b.apply_step()
    assert a.step_count == b.step_count == 4
    sa, sb = a_model.state_dict(), b_model.state_dict()
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)
