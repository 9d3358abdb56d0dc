import numpy as np
import pytest

import ringloom as rl
from gradcheck import check_grad
from reference.attention import attention, attention_out
from tolerances import REL_ERR, assert_close

# (B, T, Hq, Hkv, D): single token, odd T and D, GQA (Hq=4, Hkv=2), MQA (Hkv=1), Hq == Hkv,
# and T past the kernel's 64-row block (with a ragged last block).
SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 7, 4, 2, 3),
    (1, 13, 6, 1, 5),
    (2, 9, 3, 3, 16),
    (1, 100, 4, 2, 8),
    (1, 70, 2, 1, 64),
]


def _qkv(rng, B, T, Hq, Hkv, D):
    return rng.standard_normal((B, T, Hq + 2 * Hkv, D)).astype(np.float32)


@pytest.mark.parametrize("B,T,Hq,Hkv,D", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
def test_attention_forward_values(rng, B, T, Hq, Hkv, D, causal):
    qkv = _qkv(rng, B, T, Hq, Hkv, D)
    out, lse = rl.ops.attention_forward(rl.tensor(qkv), Hq, Hkv, causal=causal)
    assert tuple(out.shape) == (B, T, Hq, D) and tuple(lse.shape) == (B, Hq, T)
    ref_out, ref_lse = attention(qkv, Hq, Hkv, causal)
    assert_close(np.asarray(out), ref_out, what="out")
    assert_close(np.asarray(lse), ref_lse, what="lse")


@pytest.mark.parametrize("scale", [0.37, 2.0])
def test_attention_explicit_scale(rng, scale):
    qkv = _qkv(rng, 2, 11, 4, 2, 6)
    out, lse = rl.ops.attention_forward(rl.tensor(qkv), 4, 2, causal=True, scale=scale)
    ref_out, ref_lse = attention(qkv, 4, 2, True, scale)
    assert_close(np.asarray(out), ref_out, what="out")
    assert_close(np.asarray(lse), ref_lse, what="lse")
    # and it differs from the default 1/sqrt(D), so the argument is not ignored
    default_out, _ = rl.ops.attention_forward(rl.tensor(qkv), 4, 2, causal=True)
    assert not np.allclose(np.asarray(default_out), np.asarray(out), rtol=1e-3, atol=1e-4)


def test_attention_nonpositive_scale_means_default(rng):
    qkv = _qkv(rng, 1, 6, 2, 2, 9)
    out, lse = rl.ops.attention_forward(rl.tensor(qkv), 2, 2, causal=False, scale=-1.0)
    ref_out, ref_lse = attention(qkv, 2, 2, False, 1 / 3)
    assert_close(np.asarray(out), ref_out, what="out")
    assert_close(np.asarray(lse), ref_lse, what="lse")


@pytest.mark.parametrize("B,T", [(0, 5), (2, 0)])
def test_attention_empty_batch_or_sequence(B, T):
    qkv = rl.zeros([B, T, 4, 3])
    out, lse = rl.ops.attention_forward(qkv, 2, 1)
    assert tuple(out.shape) == (B, T, 2, 3) and tuple(lse.shape) == (B, 2, T)
    dqkv = rl.ops.attention_backward(out, qkv, out, lse, 2, 1)
    assert tuple(dqkv.shape) == (B, T, 4, 3)


def test_attention_causal_first_row_is_v0(rng):
    # Query 0 sees only key 0 under the causal mask: out[:, 0, h] = v[:, 0, h // group], lse = s_00.
    B, T, Hq, Hkv, D = 2, 5, 4, 2, 7
    qkv = _qkv(rng, B, T, Hq, Hkv, D)
    out, lse = rl.ops.attention_forward(rl.tensor(qkv), Hq, Hkv, causal=True)
    v0 = np.repeat(qkv[:, 0, Hq + Hkv:], Hq // Hkv, axis=1)
    np.testing.assert_allclose(np.asarray(out)[:, 0], v0, rtol=1e-6, atol=1e-6)
    k0 = np.repeat(qkv[:, 0, Hq:Hq + Hkv], Hq // Hkv, axis=1)
    s00 = (qkv[:, 0, :Hq].astype(np.float64) * k0).sum(-1) / np.sqrt(D)
    np.testing.assert_allclose(np.asarray(lse)[:, :, 0], s00, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("B,T,Hq,Hkv,D", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
def test_attention_backward_vs_finite_differences(rng, B, T, Hq, Hkv, D, causal):
    qkv = _qkv(rng, B, T, Hq, Hkv, D)
    scale = 0.5 if D == 3 else 0.0  # one case with an explicit scale through backward too
    out, lse = rl.ops.attention_forward(rl.tensor(qkv), Hq, Hkv, causal=causal, scale=scale)
    dout = rng.standard_normal((B, T, Hq, D)).astype(np.float32)
    dqkv = rl.ops.attention_backward(rl.tensor(dout), rl.tensor(qkv), out, lse, Hq, Hkv, causal=causal, scale=scale)
    assert tuple(dqkv.shape) == qkv.shape
    dqkv = np.asarray(dqkv)
    f = lambda x: attention_out(x, Hq, Hkv, causal, scale)  # noqa: E731
    tol = REL_ERR["float32_grad"]
    # Check q, k and v separately so that each part is sampled (k and v carry the GQA sums).
    H = Hq + 2 * Hkv
    for name, heads in [("dq", range(Hq)), ("dk", range(Hq, Hq + Hkv)), ("dv", range(Hq + Hkv, H))]:
        sel = np.zeros(qkv.shape, bool)
        sel[:, :, list(heads)] = True
        idx = np.flatnonzero(sel)
        if len(idx) > 60:
            idx = rng.choice(idx, 60, replace=False)
        _check_entries(dqkv, f, qkv, dout, idx, tol, name)


def _check_entries(analytic, f, x, dy, idx, tol, what):
    """check_grad restricted to the flat indices idx (the part of qkv one gradient lives in)."""
    x64 = x.astype(np.float64)
    sub = x64.reshape(-1)[idx].copy()

    def g(s):
        xx = x64.copy()
        xx.reshape(-1)[idx] = s
        return f(xx)

    check_grad(analytic.reshape(-1)[idx], g, sub, dy, tol=tol, max_entries=None, what=what)


def test_attention_gqa_equals_repeated_heads(rng):
    # GQA with Hkv=2 must equal plain MHA on qkv whose kv heads are repeated per group, and
    # dk/dv of GQA must be the group sums of the MHA dk/dv.
    B, T, Hq, Hkv, D = 2, 9, 4, 2, 5
    g = Hq // Hkv
    qkv = _qkv(rng, B, T, Hq, Hkv, D)
    q, k, v = qkv[:, :, :Hq], qkv[:, :, Hq:Hq + Hkv], qkv[:, :, Hq + Hkv:]
    mha = np.ascontiguousarray(np.concatenate([q, np.repeat(k, g, 2), np.repeat(v, g, 2)], axis=2))
    out_g, lse_g = rl.ops.attention_forward(rl.tensor(qkv), Hq, Hkv)
    out_m, lse_m = rl.ops.attention_forward(rl.tensor(mha), Hq, Hq)
    np.testing.assert_allclose(np.asarray(out_g), np.asarray(out_m), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(lse_g), np.asarray(lse_m), rtol=1e-5, atol=1e-6)
    dout = rl.tensor(rng.standard_normal((B, T, Hq, D)).astype(np.float32))
    d_g = np.asarray(rl.ops.attention_backward(dout, rl.tensor(qkv), out_g, lse_g, Hq, Hkv))
    d_m = np.asarray(rl.ops.attention_backward(dout, rl.tensor(mha), out_m, lse_m, Hq, Hq))
    np.testing.assert_allclose(d_g[:, :, :Hq], d_m[:, :, :Hq], rtol=1e-4, atol=1e-5)
    for part, gqa_at, mha_at in [("dk", Hq, Hq), ("dv", Hq + Hkv, 2 * Hq)]:
        summed = d_m[:, :, mha_at:mha_at + Hq].reshape(B, T, Hkv, g, D).sum(axis=3)
        np.testing.assert_allclose(d_g[:, :, gqa_at:gqa_at + Hkv], summed, rtol=1e-4, atol=1e-5, err_msg=part)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_attention_causal_mask_hides_a_nan_key(rng, sign):
    # A NaN in key t0 poisons exactly the queries that see it: under the causal mask those
    # at t >= t0, and with it off all of them; earlier queries must never read it.
    B, T, Hq, Hkv, D, t0 = 1, 9, 2, 1, 4, 5
    qkv = _qkv(rng, B, T, Hq, Hkv, D)
    qkv[0, t0, Hq, 1] = np.copysign(np.nan, sign)
    out, lse = rl.ops.attention_forward(rl.tensor(qkv), Hq, Hkv, causal=True)
    out, lse = np.asarray(out), np.asarray(lse)
    assert np.all(np.isfinite(out[:, :t0])) and np.all(np.isfinite(lse[:, :, :t0]))
    assert np.all(np.isnan(out[:, t0:])) and np.all(np.isnan(lse[:, :, t0:]))
    ref_out, ref_lse = attention(qkv[:, :t0], Hq, Hkv, True)
    assert_close(out[:, :t0], ref_out, what="out before the NaN key")
    full, _ = rl.ops.attention_forward(rl.tensor(qkv), Hq, Hkv, causal=False)
    assert np.all(np.isnan(np.asarray(full)))


def test_attention_does_not_modify_inputs(rng):
    qkv = _qkv(rng, 1, 8, 2, 1, 4)
    t = rl.tensor(qkv)
    out, lse = rl.ops.attention_forward(t, 2, 1)
    out0, lse0 = np.array(out), np.array(lse)
    dout = rl.tensor(rng.standard_normal((1, 8, 2, 4)).astype(np.float32))
    dout0 = np.array(dout)
    rl.ops.attention_backward(dout, t, out, lse, 2, 1)
    np.testing.assert_array_equal(np.asarray(t), qkv)
    np.testing.assert_array_equal(np.asarray(out), out0)
    np.testing.assert_array_equal(np.asarray(lse), lse0)
    np.testing.assert_array_equal(np.asarray(dout), dout0)


def test_attention_bad_inputs():
    with pytest.raises(ValueError, match=r"attention_forward: qkv .*\[2, 5, 7, 4\].* must have n_head \+ 2\*n_kv_head = 8"):
        rl.ops.attention_forward(rl.zeros([2, 5, 7, 4]), 4, 2)
    with pytest.raises(ValueError, match=r"attention_forward: n_head \(3\) must be a positive multiple of n_kv_head \(2\)"):
        rl.ops.attention_forward(rl.zeros([2, 5, 7, 4]), 3, 2)
    with pytest.raises(ValueError, match="must have 4 dimensions"):
        rl.ops.attention_forward(rl.zeros([5, 8, 4]), 4, 2)
    with pytest.raises(TypeError, match="attention_forward: qkv must be float32 or bfloat16.*int32"):
        rl.ops.attention_forward(rl.zeros([1, 5, 8, 4], dtype="int32"), 4, 2)
    with pytest.raises(TypeError, match="CPU implementation takes float32"):
        rl.ops.attention_forward(rl.zeros([1, 5, 8, 4], dtype="bfloat16"), 4, 2)
    qkv = rl.zeros([1, 5, 8, 4])
    out, lse = rl.ops.attention_forward(qkv, 4, 2)
    with pytest.raises(ValueError, match=r"attention_backward: dout must have shape \[1, 5, 4, 4\]"):
        rl.ops.attention_backward(rl.zeros([1, 5, 2, 4]), qkv, out, lse, 4, 2)
    with pytest.raises(ValueError, match=r"attention_backward: lse must have shape \[1, 4, 5\]"):
        rl.ops.attention_backward(out, qkv, out, rl.zeros([1, 5, 4]), 4, 2)
    with pytest.raises(ValueError, match="attention_backward: n_head .* multiple"):
        rl.ops.attention_backward(out, qkv, out, lse, 4, 0)
