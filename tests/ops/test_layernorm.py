import numpy as np
import pytest

import ringloom as rl
from gradcheck import check_grad
from reference.norm import layernorm, layernorm_stats
from tolerances import REL_ERR, assert_close

# Leading shape and C; the last case is large enough for the threaded path.
SIZES = [((1,), 1), ((7,), 3), ((33,), 37), ((3, 11), 129), ((1,), 129), ((130,), 129)]


def _inputs(rng, lead, C):
    # An offset and a spread per row, so the mean subtraction matters.
    x = (rng.standard_normal((*lead, C)) * 2.0 + rng.standard_normal((*lead, 1)) * 3.0).astype(np.float32)
    gamma = (1.0 + 0.5 * rng.standard_normal(C)).astype(np.float32)
    beta = rng.standard_normal(C).astype(np.float32)
    return x, gamma, beta


@pytest.mark.parametrize("lead,C", SIZES)
def test_layernorm_values_and_grads(rng, lead, C):
    eps = 1e-5
    x, gamma, beta = _inputs(rng, lead, C)
    y, mean, rstd = rl.ops.layernorm_forward(rl.tensor(x), rl.tensor(gamma), rl.tensor(beta), eps)
    assert_close(np.asarray(y), layernorm(x, gamma, beta, eps))
    ref_mean, ref_rstd = layernorm_stats(x, eps)
    assert mean.dtype == rl.float32 and rstd.dtype == rl.float32
    assert_close(np.asarray(mean).reshape(-1), ref_mean, what="mean")
    assert_close(np.asarray(rstd).reshape(-1), ref_rstd, what="rstd")

    dy = rng.standard_normal(x.shape).astype(np.float32)
    dgamma, dbeta = rl.zeros([C]), rl.zeros([C])
    dx = rl.ops.layernorm_backward(rl.tensor(dy), rl.tensor(x), rl.tensor(gamma), mean, rstd, dgamma, dbeta)
    tol = REL_ERR["float32_grad"]
    check_grad(np.asarray(dx), lambda xx: layernorm(xx, gamma, beta, eps), x, dy, tol=tol, rng=rng, what="dx")
    check_grad(np.asarray(dgamma), lambda g: layernorm(x, g, beta, eps), gamma, dy, tol=tol, rng=rng, what="dgamma")
    check_grad(np.asarray(dbeta), lambda b: layernorm(x, gamma, b, eps), beta, dy, tol=tol, rng=rng, what="dbeta")


def test_layernorm_eps_and_constant_rows(rng):
    # A constant row has zero variance: y = beta, rstd = 1/sqrt(eps), and nothing is NaN.
    C, eps = 21, 1e-2
    x = rng.standard_normal((5, C)).astype(np.float32)
    x[2] = 4.5
    gamma, beta = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    y, _, rstd = rl.ops.layernorm_forward(rl.tensor(x), rl.tensor(gamma), rl.tensor(beta), eps)
    assert_close(np.asarray(y), layernorm(x, gamma, beta, eps))
    np.testing.assert_allclose(np.asarray(y)[2], beta, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(rstd)[2], 1 / np.sqrt(eps), rtol=1e-6)


def test_layernorm_backward_accumulates(rng):
    lead, C, eps = (4, 9), 37, 1e-5
    x, gamma, beta = _inputs(rng, lead, C)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    _, mean, rstd = rl.ops.layernorm_forward(rl.tensor(x), rl.tensor(gamma), rl.tensor(beta), eps)
    dgamma0, dbeta0 = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    dgamma, dbeta = rl.tensor(dgamma0), rl.tensor(dbeta0)
    args = (rl.tensor(dy), rl.tensor(x), rl.tensor(gamma), mean, rstd, dgamma, dbeta)
    rl.ops.layernorm_backward(*args)
    rl.ops.layernorm_backward(*args)  # a second micro-batch adds the same again

    ref_mean, ref_rstd = layernorm_stats(x, eps)
    xhat = (x.astype(np.float64).reshape(-1, C) - ref_mean[:, None]) * ref_rstd[:, None]
    dy64 = dy.astype(np.float64).reshape(-1, C)
    assert_close(np.asarray(dgamma), dgamma0 + 2 * (dy64 * xhat).sum(axis=0), what="dgamma")
    assert_close(np.asarray(dbeta), dbeta0 + 2 * dy64.sum(axis=0), what="dbeta")


def test_layernorm_bad_inputs():
    x, g, b = rl.zeros([4, 6]), rl.zeros([6]), rl.zeros([6])
    fwd = rl.ops.layernorm_forward
    with pytest.raises(ValueError, match=r"layernorm_forward: gamma must have shape \[6\], got float32\[5\]"):
        fwd(x, rl.zeros([5]), b)
    with pytest.raises(ValueError, match=r"beta must have shape \[6\], got float32\[1, 6\]"):
        fwd(x, g, rl.zeros([1, 6]))
    for eps in (0.0, -1e-5):
        with pytest.raises(ValueError, match="layernorm_forward: eps must be finite and positive"):
            fwd(x, g, b, eps)
    with pytest.raises(TypeError, match="x must be float32 or bfloat16, got int32"):
        fwd(rl.zeros([4, 6], dtype="int32"), rl.zeros([6], dtype="int32"), rl.zeros([6], dtype="int32"))
    with pytest.raises(TypeError, match=r"gamma \(bfloat16.*\) and x \(float32.*\) have different dtypes"):
        fwd(x, rl.zeros([6], dtype="bfloat16"), b)
    with pytest.raises(TypeError, match="CPU implementation takes float32; x is bfloat16"):
        bf = "bfloat16"
        fwd(rl.zeros([4, 6], dtype=bf), rl.zeros([6], dtype=bf), rl.zeros([6], dtype=bf))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        fwd(rl.tensor(np.float32(1.0)), g, b)

    y, mean, rstd = fwd(x, g, b)
    bwd = rl.ops.layernorm_backward
    dg, db = rl.zeros([6]), rl.zeros([6])
    with pytest.raises(ValueError, match=r"layernorm_backward: dy must have shape \[4, 6\], got float32\[6, 4\]"):
        bwd(rl.zeros([6, 4]), x, g, mean, rstd, dg, db)
    with pytest.raises(ValueError, match=r"mean .*float32\[3\].* one entry per row of x \(4\)"):
        bwd(y, x, g, rl.zeros([3]), rstd, dg, db)
    with pytest.raises(TypeError, match="rstd must be float32, got int32"):
        bwd(y, x, g, mean, rl.zeros([4], dtype="int32"), dg, db)
    with pytest.raises(ValueError, match=r"dbeta must have shape \[6\], got float32\[7\]"):
        bwd(y, x, g, mean, rstd, dg, rl.zeros([7]))
    with pytest.raises(TypeError, match="CPU implementation takes float32; dgamma is bfloat16"):
        bwd(y, x, g, mean, rstd, rl.zeros([6], dtype="bfloat16"), db)
