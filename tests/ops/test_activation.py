import numpy as np
import pytest

import ringloom as rl
from gradcheck import check_grad
from reference.activation import gelu, silu, swiglu
from tolerances import REL_ERR, assert_close

# The last shape of each list is large enough for the threaded path.
GELU_SHAPES = [(1,), (7, 3), (33, 37), (2, 5, 129), (130, 129)]
SWIGLU_SHAPES = [(1, 2), (7, 6), (3, 5, 74), (33, 258), (130, 258)]


@pytest.mark.parametrize("shape", GELU_SHAPES)
def test_gelu_values_and_grad(rng, shape):
    x = (rng.standard_normal(shape) * 3.0).astype(np.float32)
    y = rl.ops.gelu_forward(rl.tensor(x))
    assert_close(np.asarray(y), gelu(x))
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = rl.ops.gelu_backward(rl.tensor(dy), rl.tensor(x))
    check_grad(np.asarray(dx), gelu, x, dy, tol=REL_ERR["float32_grad"], rng=rng, what="dx")


@pytest.mark.parametrize("shape", SWIGLU_SHAPES)
def test_swiglu_values_and_grad(rng, shape):
    x = (rng.standard_normal(shape) * 2.0).astype(np.float32)
    y = rl.ops.swiglu_forward(rl.tensor(x))
    assert tuple(y.shape) == (*shape[:-1], shape[-1] // 2)
    assert_close(np.asarray(y), swiglu(x))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = rl.ops.swiglu_backward(rl.tensor(dy), rl.tensor(x))
    assert tuple(dx.shape) == shape
    check_grad(np.asarray(dx), swiglu, x, dy, tol=REL_ERR["float32_grad"], rng=rng, what="dx (gate and up)")


def test_activations_at_extremes():
    # Far tails: tanh and exp saturate (exp(-a) overflows to inf for a < -88); results must
    # stay finite and exact in the limit: gelu(x) -> x or 0, silu(a) -> a or 0.
    v = np.array([-1e4, -300.0, -90.0, -20.0, 0.0, 20.0, 90.0, 300.0, 1e4], np.float32)
    assert_close(np.asarray(rl.ops.gelu_forward(rl.tensor(v))), gelu(v))
    dgelu = np.asarray(rl.ops.gelu_backward(rl.tensor(np.ones_like(v)), rl.tensor(v)))
    np.testing.assert_allclose(dgelu, (v > 0).astype(np.float32) + 0.5 * (v == 0), atol=1e-6)

    x = np.concatenate([v, np.full_like(v, 1.5)])[None, :]  # gate = v, up = 1.5
    assert_close(np.asarray(rl.ops.swiglu_forward(rl.tensor(x))), swiglu(x))
    dx = np.asarray(rl.ops.swiglu_backward(rl.tensor(np.ones((1, v.size), np.float32)), rl.tensor(x)))
    assert np.all(np.isfinite(dx))
    np.testing.assert_allclose(dx[0, : v.size], 1.5 * (v > 0) + 0.75 * (v == 0), atol=1e-6)  # d/da
    np.testing.assert_allclose(dx[0, v.size:], silu(v), rtol=1e-5, atol=1e-30)  # d/db = silu(a)


@pytest.mark.parametrize("v", [-9.0, -7.2, -6.0, -0.3, 4.0])
def test_gelu_single_element_tails(v):
    # One element far out: y and dy/dx are ~1e-16..1e-30, so only relative accuracy counts
    # (a 1 + tanh(u) that cancels to 0 fails here; exp-based forms do not).
    x, dy = np.array([v], np.float32), np.array([0.7], np.float32)
    assert_close(np.asarray(rl.ops.gelu_forward(rl.tensor(x))), gelu(x))
    dx = rl.ops.gelu_backward(rl.tensor(dy), rl.tensor(x))
    check_grad(np.asarray(dx), gelu, x, dy, tol=REL_ERR["float32_grad"], what=f"dx at {v}")


def test_activation_bad_inputs():
    with pytest.raises(TypeError, match="gelu_forward: x must be float32 or bfloat16, got int32"):
        rl.ops.gelu_forward(rl.zeros([3], dtype="int32"))
    with pytest.raises(TypeError, match="gelu_forward: the CPU implementation takes float32; x is bfloat16"):
        rl.ops.gelu_forward(rl.zeros([3], dtype="bfloat16"))
    with pytest.raises(ValueError, match=r"gelu_backward: dy must have shape \[4, 3\], got float32\[3, 4\]"):
        rl.ops.gelu_backward(rl.zeros([3, 4]), rl.zeros([4, 3]))
    with pytest.raises(TypeError, match=r"gelu_backward: x \(float32.*\) and dy \(bfloat16.*\) have different dtypes"):
        rl.ops.gelu_backward(rl.zeros([4], dtype="bfloat16"), rl.zeros([4]))

    with pytest.raises(ValueError, match=r"swiglu_forward: last dim of x must be even \(gate\|up\), got float32\[4, 7\]"):
        rl.ops.swiglu_forward(rl.zeros([4, 7]))
    with pytest.raises(ValueError, match="swiglu_forward: last dim of x must be even"):
        rl.ops.swiglu_forward(rl.tensor(np.float32(1.0)))
    with pytest.raises(ValueError, match="swiglu_backward: last dim of x must be even"):
        rl.ops.swiglu_backward(rl.zeros([4, 3]), rl.zeros([4, 5]))
    with pytest.raises(ValueError, match=r"swiglu_backward: dy must have shape \[4, 3\], got float32\[4, 6\]"):
        rl.ops.swiglu_backward(rl.zeros([4, 6]), rl.zeros([4, 6]))
    with pytest.raises(TypeError, match="swiglu_forward: the CPU implementation takes float32; x is bfloat16"):
        rl.ops.swiglu_forward(rl.zeros([2, 4], dtype="bfloat16"))
