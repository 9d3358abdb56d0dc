"""CUDA RMSNorm forward and backward against float64 references, over the same thread
layouts as the LayerNorm test; dgamma is fp32 and accumulates."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import gpu, host, poison_next_alloc, precision, rounded
from tolerances import assert_close

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

SHAPES = [(5, 13), (7, 96), (600, 768), (3, 5, 1000), (37, 4096), (4, 9000), (3, 5001), (2, 40000)]


def reference(x, gamma, dy, eps):
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    rstd = torch.rsqrt((xt * xt).mean(-1, keepdim=True) + eps)
    y = xt * rstd * gt
    dx, dg = torch.autograd.grad(y, (xt, gt), torch.tensor(dy))
    return y.detach().numpy(), rstd.detach().numpy().reshape(-1), dx.numpy(), dg.numpy()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_rmsnorm_gpu(rng, dtype, shape):
    C = shape[-1]
    x = (2 * rng.standard_normal(shape) + 0.5).astype(np.float32)
    gamma = (1 + 0.3 * rng.standard_normal(C)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    eps = 1e-5
    xr, gr, dyr = (rounded(a, dtype) for a in (x, gamma, dy))
    y_ref, rstd_ref, dx_ref, dg_ref = reference(xr, gr, dyr, eps)
    tol = precision(dtype)

    poison_next_alloc(shape, dtype)
    y, rstd = rl.ops.rmsnorm_forward(gpu(x, dtype), gpu(gamma, dtype), eps)
    assert_close(host(y), y_ref, tol, "y")
    assert_close(host(rstd), rstd_ref, "float32", "rstd")

    g0 = rng.standard_normal(C).astype(np.float32)
    dgamma = gpu(g0)
    poison_next_alloc(shape, dtype)
    dx = rl.ops.rmsnorm_backward(gpu(dy, dtype), gpu(x, dtype), gpu(gamma, dtype), rstd, dgamma)
    assert_close(host(dx), dx_ref, tol, "dx")
    assert_close(host(dgamma) - g0, dg_ref, tol, "dgamma")

    dgamma2 = gpu(g0)
    dx2 = rl.ops.rmsnorm_backward(gpu(dy, dtype), gpu(x, dtype), gpu(gamma, dtype), rstd, dgamma2)
    assert np.array_equal(host(dx2), host(dx)) and np.array_equal(host(dgamma2), host(dgamma))


def test_rmsnorm_gpu_bad_inputs():
    with pytest.raises(ValueError, match="rmsnorm_backward: rstd .* one entry per row"):
        rl.ops.rmsnorm_backward(gpu(np.ones((4, 8))), gpu(np.ones((4, 8))), gpu(np.ones(8)), gpu(np.ones(3)),
                                gpu(np.zeros(8)))
