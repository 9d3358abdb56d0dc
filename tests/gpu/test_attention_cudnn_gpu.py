"""The cuDNN attention backend (ops.set_attention_backend("cudnn"), csrc/ops/cuda/attention/cudnn.cu)
against ringloom's CPU fp32 op on the same bf16-rounded inputs and against our own CUDA
kernels: forward out and lse, backward dqkv, causal and full, head dims 64 and 128, GQA,
odd sequence lengths. Outputs are poisoned (NaN-filled cache) before each run.

The lse check matters beyond accuracy: forward and backward share the lse tensor, so the
backends are interchangeable only if cuDNN's softmax stats are the same natural-log
log-sum-exp as ours (ops/attention_backend.h).
"""
from __future__ import annotations

import numpy as np
import pytest

import ringloom as rl
from tolerances import REL_ERR, rel_err

pytestmark = pytest.mark.gpu
ops = rl._C.ops

needs_cudnn = pytest.mark.skipif(not ops.cudnn_attention_built(),
                                 reason="this build has no cuDNN attention backend (cudnn-frontend headers missing)")


def bf16_round(x: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def to_np(t) -> np.ndarray:
    return np.asarray(t.to("float32").cpu(), dtype=np.float64) if t.dtype != rl.float32 else np.asarray(t.cpu(), np.float64)


def poison(shapes) -> None:
    rl._C.cuda_empty_cache(0)
    blocks = [rl.tensor(np.full(s, np.nan, np.float32), dtype="bfloat16", device="cuda") for s in shapes]
    blocks += [rl.tensor(np.full(s, np.nan, np.float32), device="cuda") for s in shapes]
    del blocks


@pytest.fixture
def backend():
    """Sets the process-wide backend for one test and restores it afterwards."""
    before = ops.get_attention_backend()
    yield ops.set_attention_backend
    ops.set_attention_backend(before)


def run(name, qkv, dout, hq, hkv, causal):
    ops.set_attention_backend(name)
    q = rl.tensor(qkv, dtype="bfloat16", device="cuda")
    d = rl.tensor(dout, dtype="bfloat16", device="cuda")
    poison([qkv.shape, (qkv.shape[0], qkv.shape[1], hq, qkv.shape[3])])
    out, lse = ops.attention_forward(q, hq, hkv, causal)
    dqkv = ops.attention_backward(d, q, out, lse, hq, hkv, causal)
    return to_np(out), to_np(lse), to_np(dqkv), (out, lse)


CASES = [  # B, T, Hq, Hkv, D, causal
    (2, 77, 4, 4, 64, True),
    (1, 131, 4, 2, 64, False),   # GQA
    (2, 65, 2, 1, 128, True),    # MQA
    (1, 200, 4, 4, 128, False),
]


@needs_cudnn
@pytest.mark.parametrize("B,T,Hq,Hkv,D,causal", CASES)
def test_cudnn_attention_matches_cpu_and_ours(B, T, Hq, Hkv, D, causal, rng, backend):
    qkv = bf16_round(rng.standard_normal((B, T, Hq + 2 * Hkv, D)).astype(np.float32))
    dout = bf16_round(rng.standard_normal((B, T, Hq, D)).astype(np.float32))
    ref_out, ref_lse = ops.attention_forward(rl.tensor(qkv), Hq, Hkv, causal)
    ref_dqkv = ops.attention_backward(rl.tensor(dout), rl.tensor(qkv), ref_out, ref_lse, Hq, Hkv, causal)
    ref = [np.asarray(ref_out, np.float64), np.asarray(ref_lse, np.float64), np.asarray(ref_dqkv, np.float64)]
    cud = run("cudnn", qkv, dout, Hq, Hkv, causal)
    ours = run("ours", qkv, dout, Hq, Hkv, causal)
    for name, r, c, o in zip(("out", "lse", "dqkv"), ref, cud[:3], ours[:3]):
        assert np.all(np.isfinite(c)), f"cuDNN {name} has non-finite values (unwritten poisoned memory?)"
        assert rel_err(c, r) < REL_ERR["bfloat16"], f"cuDNN {name} vs CPU: {rel_err(c, r):.3e}"
        assert rel_err(c, o) < REL_ERR["bfloat16"], f"cuDNN {name} vs ours: {rel_err(c, o):.3e}"
    # The lse is the same quantity in both backends (natural log, scaled scores): tight.
    assert np.max(np.abs(cud[1] - ours[1])) < 1e-2, "cuDNN stats are not our natural-log lse"


@needs_cudnn
def test_backends_are_interchangeable_between_forward_and_backward(rng, backend):
    B, T, Hq, Hkv, D, causal = 1, 93, 4, 2, 64, True
    qkv = bf16_round(rng.standard_normal((B, T, Hq + 2 * Hkv, D)).astype(np.float32))
    dout = bf16_round(rng.standard_normal((B, T, Hq, D)).astype(np.float32))
    q = rl.tensor(qkv, dtype="bfloat16", device="cuda")
    d = rl.tensor(dout, dtype="bfloat16", device="cuda")
    backend("cudnn")
    out, lse = ops.attention_forward(q, Hq, Hkv, causal)
    backend("ours")
    mixed = to_np(ops.attention_backward(d, q, out, lse, Hq, Hkv, causal))
    pure = run("ours", qkv, dout, Hq, Hkv, causal)[2]
    assert rel_err(mixed, pure) < REL_ERR["bfloat16"]


@needs_cudnn
def test_auto_follows_the_measured_table(rng, backend):
    """auto runs, per direction, the backend the table names for the shape
    (ops.attention_auto_choice): each result must equal that explicit choice bit for bit."""
    for D, causal in ((64, True), (128, True), (128, False)):
        fwd_name = ops.attention_auto_choice(D, causal, 33, False)
        bwd_name = ops.attention_auto_choice(D, causal, 33, True)
        qkv = bf16_round(rng.standard_normal((1, 33, 6, D)).astype(np.float32))
        dout = bf16_round(rng.standard_normal((1, 33, 2, D)).astype(np.float32))
        q = rl.tensor(qkv, dtype="bfloat16", device="cuda")
        d = rl.tensor(dout, dtype="bfloat16", device="cuda")
        backend("auto")
        out_a, lse_a = ops.attention_forward(q, 2, 2, causal)
        dqkv_a = ops.attention_backward(d, q, out_a, lse_a, 2, 2, causal)
        backend(fwd_name)
        out_e, lse_e = ops.attention_forward(q, 2, 2, causal)
        backend(bwd_name)
        dqkv_e = ops.attention_backward(d, q, out_e, lse_e, 2, 2, causal)
        np.testing.assert_array_equal(to_np(out_a), to_np(out_e), err_msg=f"auto forward at D{D} is not {fwd_name}")
        np.testing.assert_array_equal(to_np(dqkv_a), to_np(dqkv_e), err_msg=f"auto backward at D{D} is not {bwd_name}")


def test_deterministic_backward_under_auto_and_cudnn(rng, backend):
    """A deterministic backward runs our kernels under auto (bitwise repeatable) and is
    refused by the cudnn backend, naming the choices that have one."""
    qkv = bf16_round(rng.standard_normal((1, 65, 6, 64)).astype(np.float32))
    dout = bf16_round(rng.standard_normal((1, 65, 2, 64)).astype(np.float32))
    q = rl.tensor(qkv, dtype="bfloat16", device="cuda")
    d = rl.tensor(dout, dtype="bfloat16", device="cuda")
    backend("auto")
    out, lse = ops.attention_forward(q, 2, 2, True)
    runs = [to_np(ops.attention_backward(d, q, out, lse, 2, 2, True, deterministic=True)) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    backend("ours")
    np.testing.assert_array_equal(runs[0], to_np(ops.attention_backward(d, q, out, lse, 2, 2, True, deterministic=True)))
    if ops.cudnn_attention_built():
        backend("cudnn")
        with pytest.raises(ValueError, match="no deterministic backward.*ours.*auto"):
            ops.attention_backward(d, q, out, lse, 2, 2, True, deterministic=True)


def test_cudnn_backend_errors(backend):
    with pytest.raises(ValueError, match="ours.*cudnn.*auto"):
        ops.set_attention_backend("flash")
    backend("cudnn")
    q32 = rl.tensor(np.zeros((1, 8, 3, 64), np.float32), device="cuda")
    match = "cuDNN attention backend needs bf16" if ops.cudnn_attention_built() else "cuDNN attention not built"
    with pytest.raises((ValueError, NotImplementedError), match=match):
        ops.attention_forward(q32, 1, 1, True)
    if ops.cudnn_attention_built():
        q96 = rl.tensor(np.zeros((1, 8, 3, 96), np.float32), dtype="bfloat16", device="cuda")
        with pytest.raises(ValueError, match="head dim 64 or 128"):
            ops.attention_forward(q96, 1, 1, True)


@needs_cudnn
def test_model_attention_option_overrides_the_process_setting(rng, backend):
    """Model.attention pins a model's blocks to one backend whatever the process-wide
    setting. Observable through a head dim cuDNN refuses (32): "cudnn" fails naming the
    shape, "ours" runs (our simple kernel), in both directions of the override."""
    from ringloom.models import build_model, get_preset

    config = get_preset("tiny", n_layer=1, n_embd=64, n_head=2)  # head dim 32
    ids = rng.integers(0, config.vocab_size, size=(2, 19))
    backend("ours")
    pinned = build_model(config, device="cuda", seed=0, attention="cudnn")
    assert pinned.attention == "cudnn"
    with pytest.raises(ValueError, match="head dim"):
        pinned.forward_backward(ids, ids)
    backend("cudnn")
    ours = build_model(config, device="cuda", seed=0, attention="ours")
    loss = ours.forward_backward(ids, ids)
    assert np.isfinite(loss)
    assert ops.get_attention_backend() == "cudnn", "the block's override leaked into the process setting"
