"""The fused extras of the CPU ops that let a transformer block skip separate kernels:
a backward that also writes its forward output (activation recomputation for one write:
bitwise what the forward returns, and the gradient unchanged), a norm backward that adds
the skip connection's gradient to dx, and a linear forward that adds a residual stream in
the GEMM."""
import numpy as np
import pytest

import ringloom as rl
from reference.matmul import linear
from tolerances import assert_close

ROWS = [(1,), (7,), (3, 11), (130,)]  # the last is large enough for the threaded paths


def _same_bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"{what} differs from forward"


@pytest.mark.parametrize("lead", ROWS)
@pytest.mark.parametrize("C", [1, 37, 129])
def test_gelu_backward_writes_forward_output(rng, lead, C):
    x = (2 * rng.standard_normal((*lead, C))).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx_alone = rl.ops.gelu_backward(rl.tensor(dy), rl.tensor(x))
    dx, y = rl.ops.gelu_backward(rl.tensor(dy), rl.tensor(x), return_output=True)
    _same_bits(y, rl.ops.gelu_forward(rl.tensor(x)), "gelu_backward's y")
    _same_bits(dx, dx_alone, "gelu_backward's dx")


@pytest.mark.parametrize("lead", ROWS)
@pytest.mark.parametrize("F", [1, 19, 64])
def test_swiglu_backward_writes_forward_output(rng, lead, F):
    x = (2 * rng.standard_normal((*lead, 2 * F))).astype(np.float32)
    dy = rng.standard_normal((*lead, F)).astype(np.float32)
    dx_alone = rl.ops.swiglu_backward(rl.tensor(dy), rl.tensor(x))
    dx, y = rl.ops.swiglu_backward(rl.tensor(dy), rl.tensor(x), return_output=True)
    assert tuple(y.shape) == (*lead, F)
    _same_bits(y, rl.ops.swiglu_forward(rl.tensor(x)), "swiglu_backward's y")
    _same_bits(dx, dx_alone, "swiglu_backward's dx")


def _norm_inputs(rng, lead, C):
    x = (2 * rng.standard_normal((*lead, C)) + 3 * rng.standard_normal((*lead, 1))).astype(np.float32)
    gamma = (1 + 0.5 * rng.standard_normal(C)).astype(np.float32)
    beta = rng.standard_normal(C).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    res = rng.standard_normal(x.shape).astype(np.float32)
    return x, gamma, beta, dy, res


@pytest.mark.parametrize("lead", ROWS)
@pytest.mark.parametrize("C", [1, 37, 129])
def test_layernorm_backward_extras(rng, lead, C):
    x, gamma, beta, dy, res = _norm_inputs(rng, lead, C)
    y_fwd, mean, rstd = rl.ops.layernorm_forward(rl.tensor(x), rl.tensor(gamma), rl.tensor(beta), 1e-5)
    args = (rl.tensor(dy), rl.tensor(x), rl.tensor(gamma), mean, rstd)
    dg0, db0 = rl.zeros([C]), rl.zeros([C])
    dx_alone = np.asarray(rl.ops.layernorm_backward(*args, dg0, db0))
    dg1, db1 = rl.zeros([C]), rl.zeros([C])
    dx, y = rl.ops.layernorm_backward(*args, dg1, db1, residual=rl.tensor(res), beta=rl.tensor(beta),
                                      return_output=True)
    _same_bits(y, y_fwd, "layernorm_backward's y")
    _same_bits(dx, dx_alone + res, "layernorm_backward's dx + residual")
    _same_bits(dg1, dg0, "dgamma")
    _same_bits(db1, db0, "dbeta")


@pytest.mark.parametrize("lead", ROWS)
@pytest.mark.parametrize("C", [1, 37, 129])
def test_rmsnorm_backward_extras(rng, lead, C):
    x, gamma, _, dy, res = _norm_inputs(rng, lead, C)
    y_fwd, rstd = rl.ops.rmsnorm_forward(rl.tensor(x), rl.tensor(gamma), 1e-5)
    args = (rl.tensor(dy), rl.tensor(x), rl.tensor(gamma), rstd)
    dg0, dg1 = rl.zeros([C]), rl.zeros([C])
    dx_alone = np.asarray(rl.ops.rmsnorm_backward(*args, dg0))
    dx, y = rl.ops.rmsnorm_backward(*args, dg1, residual=rl.tensor(res), return_output=True)
    _same_bits(y, y_fwd, "rmsnorm_backward's y")
    _same_bits(dx, dx_alone + res, "rmsnorm_backward's dx + residual")
    _same_bits(dg1, dg0, "dgamma")
    # Each extra alone.
    _same_bits(rl.ops.rmsnorm_backward(*args, rl.zeros([C]), residual=rl.tensor(res)), dx_alone + res, "dx")
    _, y_only = rl.ops.rmsnorm_backward(*args, rl.zeros([C]), return_output=True)
    _same_bits(y_only, y_fwd, "y")


def test_norm_backward_extras_checked(rng):
    x, gamma, beta, dy, res = _norm_inputs(rng, (4,), 6)
    _, mean, rstd = rl.ops.layernorm_forward(rl.tensor(x), rl.tensor(gamma), rl.tensor(beta), 1e-5)
    args = (rl.tensor(dy), rl.tensor(x), rl.tensor(gamma), mean, rstd, rl.zeros([6]), rl.zeros([6]))
    with pytest.raises(ValueError, match="layernorm_backward: writing the forward output y needs beta"):
        rl.ops.layernorm_backward(*args, return_output=True)
    with pytest.raises(ValueError, match=r"layernorm_backward: residual must have shape \[4, 6\]"):
        rl.ops.layernorm_backward(*args, residual=rl.zeros([6, 4]))
    with pytest.raises(ValueError, match=r"layernorm_backward: beta must have shape \[6\]"):
        rl.ops.layernorm_backward(*args, beta=rl.zeros([5]), return_output=True)
    _, rstd = rl.ops.rmsnorm_forward(rl.tensor(x), rl.tensor(gamma), 1e-5)
    with pytest.raises(ValueError, match=r"rmsnorm_backward: residual must have shape \[4, 6\]"):
        rl.ops.rmsnorm_backward(rl.tensor(dy), rl.tensor(x), rl.tensor(gamma), rstd, rl.zeros([6]),
                                residual=rl.zeros([24]))


@pytest.mark.parametrize("lead,K,N", [((1,), 1, 1), ((7,), 13, 5), ((2, 9), 33, 17), ((130,), 64, 129), ((3,), 0, 4)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matmul_forward_adds_residual(rng, lead, K, N, with_bias):
    x = rng.standard_normal((*lead, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32) if with_bias else None
    r = rng.standard_normal((*lead, N)).astype(np.float32)
    y = rl.ops.matmul_forward(rl.tensor(x), rl.tensor(w), rl.tensor(b) if with_bias else None, residual=rl.tensor(r))
    ref = linear(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64)) + r
    assert_close(np.asarray(y), ref, what="x w^T + b + residual")


def test_matmul_residual_checked():
    with pytest.raises(ValueError, match=r"matmul_forward: residual must have shape \[4, 3\]"):
        rl.ops.matmul_forward(rl.zeros([4, 5]), rl.zeros([3, 5]), residual=rl.zeros([4, 5]))
    with pytest.raises(TypeError, match="matmul_forward: .*residual"):
        rl.ops.matmul_forward(rl.zeros([4, 5]), rl.zeros([3, 5]), residual=rl.zeros([4, 3], dtype="int32"))
