"""The fused extras of the CUDA ops, over the layouts each kernel takes (vectorised and
scalar rows, one warp or one block per row, the wide-row norm kernels): a backward that
also writes its forward output gives bitwise the forward's output and leaves dx and the
parameter gradients bitwise unchanged; a norm backward's residual and a linear forward's
residual match the float64 sums within the precision's tolerance; every extra output is
fully written (poisoned blocks)."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import gpu, host, poison_next_alloc, precision, rounded
from reference.matmul import linear
from tolerances import assert_close

pytestmark = pytest.mark.gpu

DTYPES = ["float32", "bfloat16"]
NORM_SHAPES = [(5, 13), (7, 96), (600, 768), (3, 5, 1000), (37, 4096), (4, 9000), (3, 5001), (2, 40000)]


def _same_bits(a, b, what):
    assert np.array_equal(host(a), host(b)), f"{what}: not bitwise equal"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 7), (64, 1024), (5, 4099)])
def test_gelu_backward_output_gpu(rng, dtype, shape):
    x, dy = gpu(2 * rng.standard_normal(shape), dtype), gpu(rng.standard_normal(shape), dtype)
    poison_next_alloc(shape, dtype)
    dx, y = rl.ops.gelu_backward(dy, x, return_output=True)
    _same_bits(y, rl.ops.gelu_forward(x), "gelu y")
    _same_bits(dx, rl.ops.gelu_backward(dy, x), "gelu dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,F", [(3, 7), (64, 1024), (5, 4099), (9, 8192)])
def test_swiglu_backward_output_gpu(rng, dtype, rows, F):
    x, dy = gpu(2 * rng.standard_normal((rows, 2 * F)), dtype), gpu(rng.standard_normal((rows, F)), dtype)
    poison_next_alloc((rows, F), dtype)
    dx, y = rl.ops.swiglu_backward(dy, x, return_output=True)
    _same_bits(y, rl.ops.swiglu_forward(x), "swiglu y")
    _same_bits(dx, rl.ops.swiglu_backward(dy, x), "swiglu dx")


def _norm_inputs(rng, shape):
    C = shape[-1]
    x = (3 * rng.standard_normal(shape) + 1.5).astype(np.float32)
    gamma = (1 + 0.3 * rng.standard_normal(C)).astype(np.float32)
    beta = (0.3 * rng.standard_normal(C)).astype(np.float32)
    return x, gamma, beta, rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", NORM_SHAPES)
def test_layernorm_backward_extras_gpu(rng, dtype, shape):
    C = shape[-1]
    x, gamma, beta, dy, res = _norm_inputs(rng, shape)
    xg, gg, bg, dyg, rg = (gpu(a, dtype) for a in (x, gamma, beta, dy, res))
    y_fwd, mean, rstd = rl.ops.layernorm_forward(xg, gg, bg, 1e-5)
    dg0, db0 = gpu(np.zeros(C)), gpu(np.zeros(C))
    dx_alone = rl.ops.layernorm_backward(dyg, xg, gg, mean, rstd, dg0, db0)
    dg1, db1 = gpu(np.zeros(C)), gpu(np.zeros(C))
    poison_next_alloc(shape, dtype)
    dx, y = rl.ops.layernorm_backward(dyg, xg, gg, mean, rstd, dg1, db1, residual=rg, beta=bg, return_output=True)
    _same_bits(y, y_fwd, "layernorm y")
    assert_close(host(dx), host(dx_alone) + rounded(res, dtype), precision(dtype), "dx + residual")
    _same_bits(dg1, dg0, "dgamma")
    _same_bits(db1, db0, "dbeta")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", NORM_SHAPES)
def test_rmsnorm_backward_extras_gpu(rng, dtype, shape):
    C = shape[-1]
    x, gamma, _, dy, res = _norm_inputs(rng, shape)
    xg, gg, dyg, rg = (gpu(a, dtype) for a in (x, gamma, dy, res))
    y_fwd, rstd = rl.ops.rmsnorm_forward(xg, gg, 1e-5)
    dg0, dg1 = gpu(np.zeros(C)), gpu(np.zeros(C))
    dx_alone = rl.ops.rmsnorm_backward(dyg, xg, gg, rstd, dg0)
    poison_next_alloc(shape, dtype)
    dx, y = rl.ops.rmsnorm_backward(dyg, xg, gg, rstd, dg1, residual=rg, return_output=True)
    _same_bits(y, y_fwd, "rmsnorm y")
    assert_close(host(dx), host(dx_alone) + rounded(res, dtype), precision(dtype), "dx + residual")
    _same_bits(dg1, dg0, "dgamma")
    # Only one extra: the other kernel path of each pointer.
    _, y_only = rl.ops.rmsnorm_backward(dyg, xg, gg, rstd, gpu(np.zeros(C)), return_output=True)
    _same_bits(y_only, y_fwd, "rmsnorm y without residual")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,K,N", [((3,), 5, 7), ((2, 129), 256, 768), ((1024,), 2048, 2048), ((4,), 0, 16)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matmul_forward_residual_gpu(rng, dtype, lead, K, N, with_bias):
    x = rng.standard_normal((*lead, K)).astype(np.float32)
    w = (rng.standard_normal((N, K)) / np.sqrt(max(K, 1))).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    r = rng.standard_normal((*lead, N)).astype(np.float32)
    poison_next_alloc((*lead, N), dtype)
    y = rl.ops.matmul_forward(gpu(x, dtype), gpu(w, dtype), gpu(b, dtype) if with_bias else None,
                              residual=gpu(r, dtype))
    ref = linear(rounded(x, dtype), rounded(w, dtype), rounded(b, dtype) if with_bias else None) + rounded(r, dtype)
    assert_close(host(y), ref, precision(dtype, gemm=True), "x w^T + b + residual")
