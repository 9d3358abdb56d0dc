import numpy as np
import pytest

import ringloom as rl
from gradcheck import check_grad
from reference.norm import rmsnorm, rmsnorm_rstd
from tolerances import REL_ERR, assert_close

# Leading shape and C; the last case is large enough for the threaded path.
SIZES = [((1,), 1), ((7,), 3), ((33,), 37), ((3, 11), 129), ((1,), 129), ((130,), 129)]


def _inputs(rng, lead, C):
    x = (rng.standard_normal((*lead, C)) * 2.0 + rng.standard_normal((*lead, 1))).astype(np.float32)
    gamma = (1.0 + 0.5 * rng.standard_normal(C)).astype(np.float32)
    return x, gamma


@pytest.mark.parametrize("lead,C", SIZES)
def test_rmsnorm_values_and_grads(rng, lead, C):
    # With C = 1, dx = gamma * dy * eps / (x^2 + eps)^(3/2): a difference of two nearly equal
    # terms that fp32 resolves only to ~1e-7 |dy|, far from 1e-4 of the tiny result unless
    # eps is large. (Any fp32 kernel shares this; the larger eps keeps the check meaningful.)
    eps = 1e-5 if C > 1 else 0.1
    x, gamma = _inputs(rng, lead, C)
    y, rstd = rl.ops.rmsnorm_forward(rl.tensor(x), rl.tensor(gamma), eps)
    assert_close(np.asarray(y), rmsnorm(x, gamma, eps))
    assert rstd.dtype == rl.float32
    assert_close(np.asarray(rstd).reshape(-1), rmsnorm_rstd(x, eps), what="rstd")

    dy = rng.standard_normal(x.shape).astype(np.float32)
    dgamma = rl.zeros([C])
    dx = rl.ops.rmsnorm_backward(rl.tensor(dy), rl.tensor(x), rl.tensor(gamma), rstd, dgamma)
    tol = REL_ERR["float32_grad"]
    check_grad(np.asarray(dx), lambda xx: rmsnorm(xx, gamma, eps), x, dy, tol=tol, rng=rng, what="dx")
    check_grad(np.asarray(dgamma), lambda g: rmsnorm(x, g, eps), gamma, dy, tol=tol, rng=rng, what="dgamma")


def test_rmsnorm_zero_row_and_eps(rng):
    # An all-zero row gives y = 0 and rstd = 1/sqrt(eps); its gradient stays finite.
    C, eps = 19, 1e-3
    x, gamma = _inputs(rng, (4,), C)
    x[1] = 0.0
    y, rstd = rl.ops.rmsnorm_forward(rl.tensor(x), rl.tensor(gamma), eps)
    assert_close(np.asarray(y), rmsnorm(x, gamma, eps))
    np.testing.assert_array_equal(np.asarray(y)[1], 0.0)
    np.testing.assert_allclose(np.asarray(rstd)[1], 1 / np.sqrt(eps), rtol=1e-6)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = rl.ops.rmsnorm_backward(rl.tensor(dy), rl.tensor(x), rl.tensor(gamma), rstd, rl.zeros([C]))
    check_grad(np.asarray(dx), lambda xx: rmsnorm(xx, gamma, eps), x, dy, tol=REL_ERR["float32_grad"], what="dx")


def test_rmsnorm_backward_accumulates(rng):
    lead, C, eps = (5, 7), 33, 1e-5
    x, gamma = _inputs(rng, lead, C)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    _, rstd = rl.ops.rmsnorm_forward(rl.tensor(x), rl.tensor(gamma), eps)
    dgamma0 = rng.standard_normal(C).astype(np.float32)
    dgamma = rl.tensor(dgamma0)
    args = (rl.tensor(dy), rl.tensor(x), rl.tensor(gamma), rstd, dgamma)
    rl.ops.rmsnorm_backward(*args)
    rl.ops.rmsnorm_backward(*args)

    xn = x.astype(np.float64).reshape(-1, C) * rmsnorm_rstd(x, eps)[:, None]
    want = dgamma0 + 2 * (dy.astype(np.float64).reshape(-1, C) * xn).sum(axis=0)
    assert_close(np.asarray(dgamma), want, what="dgamma")


def test_rmsnorm_bad_inputs():
    x, g = rl.zeros([3, 5]), rl.zeros([5])
    fwd = rl.ops.rmsnorm_forward
    with pytest.raises(ValueError, match=r"rmsnorm_forward: gamma must have shape \[5\], got float32\[3\]"):
        fwd(x, rl.zeros([3]))
    for eps in (0.0, -1.0):
        with pytest.raises(ValueError, match="rmsnorm_forward: eps must be finite and positive"):
            fwd(x, g, eps)
    with pytest.raises(TypeError, match="x must be float32 or bfloat16, got int64"):
        fwd(rl.zeros([3, 5], dtype="int64"), rl.zeros([5], dtype="int64"))
    with pytest.raises(TypeError, match=r"gamma \(bfloat16.*\) and x \(float32.*\) have different dtypes"):
        fwd(x, rl.zeros([5], dtype="bfloat16"))
    with pytest.raises(TypeError, match="CPU implementation takes float32; x is bfloat16"):
        fwd(rl.zeros([3, 5], dtype="bfloat16"), rl.zeros([5], dtype="bfloat16"))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        fwd(rl.tensor(np.float32(2.0)), g)

    y, rstd = fwd(x, g)
    bwd = rl.ops.rmsnorm_backward
    with pytest.raises(ValueError, match=r"rmsnorm_backward: dy must have shape \[3, 5\], got float32\[15\]"):
        bwd(rl.zeros([15]), x, g, rstd, rl.zeros([5]))
    with pytest.raises(ValueError, match=r"rstd .*float32\[2\].* one entry per row of x \(3\)"):
        bwd(y, x, g, rl.zeros([2]), rl.zeros([5]))
    with pytest.raises(TypeError, match="rstd must be float32, got bfloat16"):
        bwd(y, x, g, rl.zeros([3], dtype="bfloat16"), rl.zeros([5]))
    with pytest.raises(ValueError, match=r"dgamma must have shape \[5\], got float32\[5, 1\]"):
        bwd(y, x, g, rstd, rl.zeros([5, 1]))
    with pytest.raises(TypeError, match="CPU implementation takes float32; dgamma is bfloat16"):
        bwd(y, x, g, rstd, rl.zeros([5], dtype="bfloat16"))
