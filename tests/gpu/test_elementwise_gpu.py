"""CUDA add / add_ / scale_ against float64 references, on odd sizes (scalar tails) and
on views at odd offsets (the unaligned, scalar path)."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import gpu, host, poison_next_alloc, precision, rounded
from tolerances import assert_close

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(1,), (13,), (7, 129), (64, 768), (3, 1001, 5)])
def test_add_scale_gpu(rng, dtype, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)
    ar, br = rounded(a, dtype), rounded(b, dtype)
    poison_next_alloc(shape, dtype)
    out = rl.ops.add(gpu(a, dtype), gpu(b, dtype))
    assert_close(host(out), ar + br, precision(dtype), "add")
    t = gpu(a, dtype)
    rl.ops.add_(t, gpu(b, dtype))
    assert_close(host(t), ar + br, precision(dtype), "add_")
    t = gpu(a, dtype)
    rl.ops.scale_(t, -0.37)
    assert_close(host(t), ar * -0.37, precision(dtype), "scale_")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_add_unaligned_view_gpu(rng, dtype):
    # Rows 1.. of a [5, 3] tensor start 12 (or 6) bytes in: not 16-byte aligned.
    a = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.standard_normal((4, 3)).astype(np.float32)
    view = gpu(a, dtype).narrow0(1, 4)
    out = rl.ops.add(view, gpu(b, dtype))
    assert_close(host(out), rounded(a, dtype)[1:] + rounded(b, dtype), precision(dtype), "add on a view")
    rl.ops.scale_(view, 2.0)
    assert_close(host(view), 2 * rounded(a, dtype)[1:], precision(dtype), "scale_ on a view")


def test_add_gpu_bad_inputs():
    with pytest.raises(ValueError, match=r"add: b must have shape \[2, 3\]"):
        rl.ops.add(gpu(np.ones((2, 3))), gpu(np.ones((3, 2))))
    with pytest.raises(TypeError, match="add: .*different dtypes"):
        rl.ops.add(gpu(np.ones(3)), gpu(np.ones(3), "bfloat16"))
