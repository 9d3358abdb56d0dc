"""CUDA GELU (tanh) and SwiGLU, forward and backward, against float64 references (torch's
own formulas on the CPU in float64)."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import cpu_op, gpu, host, poison_next_alloc, precision, rounded
from tolerances import assert_close

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
F = torch.nn.functional


def t64(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(5,), (3, 17), (8, 3072), (2, 7, 129)])
def test_gelu_gpu(rng, dtype, shape):
    x = (2 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    xt = t64(rounded(x, dtype))
    yt = F.gelu(xt, approximate="tanh")
    (gx,) = torch.autograd.grad(yt, xt, torch.tensor(rounded(dy, dtype)))
    poison_next_alloc(shape, dtype)
    y = rl.ops.gelu_forward(gpu(x, dtype))
    assert_close(host(y), yt.detach().numpy(), precision(dtype), "gelu y")
    poison_next_alloc(shape, dtype)
    dx = rl.ops.gelu_backward(gpu(dy, dtype), gpu(x, dtype))
    assert_close(host(dx), gx.numpy(), precision(dtype), "gelu dx")
    if dtype == "float32":
        ycpu = cpu_op(lambda: rl.ops.gelu_forward(rl.tensor(x)))
        if ycpu is not None:
            assert_close(host(y), np.asarray(ycpu, np.float64), "float32", "gelu vs CPU op")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(3, 2), (5, 34), (8, 2 * 2048), (2, 3, 2 * 11)])
def test_swiglu_gpu(rng, dtype, shape):
    x = (2 * rng.standard_normal(shape)).astype(np.float32)
    F_ = shape[-1] // 2
    dy = rng.standard_normal((*shape[:-1], F_)).astype(np.float32)
    xt = t64(rounded(x, dtype))
    yt = F.silu(xt[..., :F_]) * xt[..., F_:]
    (gx,) = torch.autograd.grad(yt, xt, torch.tensor(rounded(dy, dtype)))
    poison_next_alloc(dy.shape, dtype)
    y = rl.ops.swiglu_forward(gpu(x, dtype))
    assert y.shape == dy.shape
    assert_close(host(y), yt.detach().numpy(), precision(dtype), "swiglu y")
    poison_next_alloc(shape, dtype)
    dx = rl.ops.swiglu_backward(gpu(dy, dtype), gpu(x, dtype))
    assert_close(host(dx), gx.numpy(), precision(dtype), "swiglu dx")


def test_swiglu_gpu_bad_inputs():
    with pytest.raises(ValueError, match="swiglu_forward: last dim of x must be even"):
        rl.ops.swiglu_forward(gpu(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"swiglu_backward: dy must have shape \[2, 2\]"):
        rl.ops.swiglu_backward(gpu(np.ones((2, 3))), gpu(np.ones((2, 4))))
