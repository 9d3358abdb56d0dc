"""CUDA fused softmax cross-entropy against float64: per-row fp32 losses, the gradient
written in place over the logits, ignore_index rows, grad_scale, odd vocabulary sizes
(rows not 16-byte aligned) and large logits (the online max rescaling)."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import gpu, host, precision, rounded
from tolerances import assert_close

pytestmark = pytest.mark.gpu


def reference(x, t, ignore_index, scale):
    m = x.max(1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(1, keepdims=True)))[:, 0]
    keep = t != ignore_index
    tt = np.where(keep, t, 0)
    loss = np.where(keep, lse - x[np.arange(len(t)), tt], 0.0)
    p = np.exp(x - lse[:, None])
    p[np.arange(len(t))[keep], tt[keep]] -= 1
    p[~keep] = 0
    return loss, scale * p


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("N,V,spread", [(1, 1, 1.0), (3, 7, 1.0), (37, 1001, 3.0), (16, 50304, 4.0),
                                        (9, 8195, 40.0)])
def test_cross_entropy_gpu(rng, dtype, N, V, spread):
    x = (spread * rng.standard_normal((N, V))).astype(np.float32)
    t = rng.integers(0, V, size=N).astype(np.int32)
    t[rng.random(N) < 0.25] = -100
    xr = rounded(x, dtype)
    loss_ref, grad_ref = reference(xr, t, -100, 0.37)

    logits = gpu(x, dtype)
    loss = rl.ops.cross_entropy_forward(logits, gpu(t), -100)
    assert loss.dtype == rl.float32 and loss.shape == (N,)
    assert_close(host(loss), loss_ref, "float32", "forward loss")
    assert np.array_equal(host(logits), xr), "forward must leave the logits alone"

    loss2 = rl.ops.cross_entropy_forward_backward(logits, gpu(t), -100, 0.37)
    assert_close(host(loss2), loss_ref, "float32", "forward_backward loss")
    assert_close(host(logits), grad_ref, precision(dtype), "grad in place")
    assert np.all(host(logits)[t == -100] == 0), "ignored rows get zero gradient"


def test_cross_entropy_gpu_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = (3 * rng.standard_normal((64, 50304))).astype(np.float32)
    t = rng.integers(0, 50304, size=64).astype(np.int32)
    xt = torch.tensor(x, device="cuda").bfloat16().float().requires_grad_()
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(t, device="cuda").long(), reduction="sum")
    lt.backward()
    logits = gpu(x, "bfloat16")
    loss = host(rl.ops.cross_entropy_forward_backward(logits, gpu(t), -100, 1.0))
    assert abs(loss.sum() - lt.item()) <= 1e-5 * abs(lt.item())
    assert_close(host(logits), xt.grad.double().cpu().numpy(), "bfloat16", "grad vs torch")


def test_cross_entropy_gpu_bad_target_gives_nan(rng):
    # Not checked on the host (a sync): a target outside [0, V) makes that row's loss NaN.
    x = rng.standard_normal((3, 10)).astype(np.float32)
    loss = host(rl.ops.cross_entropy_forward(gpu(x), gpu(np.array([1, 10, -3], np.int32)), -100))
    assert np.isfinite(loss[0]) and np.isnan(loss[1]) and np.isnan(loss[2])


def test_cross_entropy_gpu_bad_inputs():
    with pytest.raises(ValueError, match=r"cross_entropy_forward: targets must have shape \[4\]"):
        rl.ops.cross_entropy_forward(gpu(np.ones((4, 5))), gpu(np.zeros(3, np.int32)))
    with pytest.raises(TypeError, match="cross_entropy_forward: targets must be int32"):
        rl.ops.cross_entropy_forward(gpu(np.ones((4, 5))), gpu(np.zeros(4, np.int64)))
