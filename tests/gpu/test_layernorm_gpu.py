"""CUDA LayerNorm forward and backward against float64 PyTorch, over row widths that take
each thread layout (one warp per row, one block per row, scalar fallback for widths that
are not a multiple of 8, up to 8 vectors per thread, and the wide-row kernels for rows that
do not fit in registers) and row counts that spread the
backward over many blocks (dgamma/dbeta partials). dgamma/dbeta are fp32 and accumulate."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import gpu, host, poison_next_alloc, precision, rounded
from tolerances import assert_close

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

SHAPES = [(5, 13), (7, 96), (600, 768), (3, 5, 1000), (37, 4096), (4, 9000), (3, 5001), (2, 40000)]


def reference(x, gamma, beta, dy, eps):
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    y = torch.nn.functional.layer_norm(xt, (x.shape[-1],), gt, bt, eps)
    dx, dg, db = torch.autograd.grad(y, (xt, gt, bt), torch.tensor(dy))
    xm = x.reshape(-1, x.shape[-1])
    mean = xm.mean(1)
    rstd = 1 / np.sqrt(xm.var(1) + eps)
    return y.detach().numpy(), mean, rstd, dx.numpy(), dg.numpy(), db.numpy()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_gpu(rng, dtype, shape):
    C = shape[-1]
    x = (3 * rng.standard_normal(shape) + 1.5).astype(np.float32)
    gamma = (1 + 0.3 * rng.standard_normal(C)).astype(np.float32)
    beta = (0.3 * rng.standard_normal(C)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    eps = 1e-5
    xr, gr, br, dyr = (rounded(a, dtype) for a in (x, gamma, beta, dy))
    y_ref, mean_ref, rstd_ref, dx_ref, dg_ref, db_ref = reference(xr, gr, br, dyr, eps)
    tol = precision(dtype)

    poison_next_alloc(shape, dtype)
    y, mean, rstd = rl.ops.layernorm_forward(gpu(x, dtype), gpu(gamma, dtype), gpu(beta, dtype), eps)
    assert y.dtype == getattr(rl, dtype) and mean.dtype == rl.float32 and rstd.dtype == rl.float32
    assert_close(host(y), y_ref, tol, "y")
    assert_close(host(mean), mean_ref, "float32", "mean")
    assert_close(host(rstd), rstd_ref, "float32", "rstd")

    # dgamma/dbeta accumulate into fp32 buffers that already hold something.
    g0 = rng.standard_normal(C).astype(np.float32)
    b0 = rng.standard_normal(C).astype(np.float32)
    dgamma, dbeta = gpu(g0), gpu(b0)
    poison_next_alloc(shape, dtype)
    dx = rl.ops.layernorm_backward(gpu(dy, dtype), gpu(x, dtype), gpu(gamma, dtype), mean, rstd, dgamma, dbeta)
    assert_close(host(dx), dx_ref, tol, "dx")
    assert_close(host(dgamma) - g0, dg_ref, tol, "dgamma")
    assert_close(host(dbeta) - b0, db_ref, tol, "dbeta")

    # No atomics: the same inputs give the same bits.
    dgamma2, dbeta2 = gpu(g0), gpu(b0)
    dx2 = rl.ops.layernorm_backward(gpu(dy, dtype), gpu(x, dtype), gpu(gamma, dtype), mean, rstd, dgamma2, dbeta2)
    assert np.array_equal(host(dx2), host(dx))
    assert np.array_equal(host(dgamma2), host(dgamma)) and np.array_equal(host(dbeta2), host(dbeta))


def test_layernorm_gpu_bad_inputs():
    x = gpu(np.ones((4, 8)))
    with pytest.raises(ValueError, match=r"layernorm_forward: gamma must have shape \[8\]"):
        rl.ops.layernorm_forward(x, gpu(np.ones(7)), gpu(np.ones(8)), 1e-5)
    with pytest.raises(ValueError, match="layernorm_forward: .*different devices"):
        rl.ops.layernorm_forward(x, rl.tensor(np.ones(8, np.float32)), gpu(np.ones(8)), 1e-5)
