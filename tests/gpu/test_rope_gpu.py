"""CUDA RoPE (rotate-half layout) applied in place to the first n_rot heads, against a
float64 reference; the inverse undoes it; positions reach a few thousand (the angle is
computed in double, see rope.cu)."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import gpu, host, precision, rounded
from tolerances import assert_close

pytestmark = pytest.mark.gpu


def reference(x, n_rot, base, pos_offset, inverse=False):
    B, T, H, D = x.shape
    half = D // 2
    theta = base ** (-2.0 * np.arange(half) / D)
    ang = (pos_offset + np.arange(T))[:, None] * theta[None]  # [T, half]
    c, s = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
    if inverse:
        s = -s
    y = x.copy()
    a, b = x[:, :, :n_rot, :half], x[:, :, :n_rot, half:]
    y[:, :, :n_rot, :half] = a * c - b * s
    y[:, :, :n_rot, half:] = b * c + a * s
    return y


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("B,T,H,D,n_rot,offset", [(1, 3, 2, 2, 1, 0), (2, 17, 5, 6, 3, 7), (2, 64, 36, 64, 24, 0),
                                                  (1, 9, 3, 128, 2, 4000), (3, 5, 4, 34, 4, 1)])
def test_rope_gpu(rng, dtype, B, T, H, D, n_rot, offset):
    x = rng.standard_normal((B, T, H, D)).astype(np.float32)
    xr = rounded(x, dtype)
    t = gpu(x, dtype)
    rl.ops.rope_forward(t, n_rot, 10000.0, offset)
    y = host(t)
    assert_close(y, reference(xr, n_rot, 10000.0, offset), precision(dtype), "rope")
    assert np.array_equal(y[:, :, n_rot:], xr[:, :, n_rot:]), "heads past n_rot must be untouched"
    rl.ops.rope_backward(t, n_rot, 10000.0, offset)
    assert_close(host(t), reference(rounded(y, dtype), n_rot, 10000.0, offset, inverse=True), precision(dtype),
                 "inverse")


def test_rope_gpu_bad_inputs():
    with pytest.raises(ValueError, match="rope_forward: head dim must be even"):
        rl.ops.rope_forward(gpu(np.ones((1, 2, 3, 5))), 1)
    with pytest.raises(ValueError, match="rope_forward: n_rot_heads 4 out of range"):
        rl.ops.rope_forward(gpu(np.ones((1, 2, 3, 4))), 4)
