"""CUDA embedding forward (wte + wpe) and its deterministic backward into fp32 dwte/dwpe,
with repeated ids (the case atomics would make order-dependent), against float64."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import gpu, host, nan_tensor, poison_next_alloc, precision, rounded
from tolerances import assert_close

pytestmark = pytest.mark.gpu


def reference_backward(ids, dout, V, Tmax):
    B, T, C = dout.shape
    dwte = np.zeros((V, C))
    np.add.at(dwte, ids.reshape(-1), dout.reshape(-1, C))
    dwpe = np.zeros((Tmax, C))
    dwpe[:T] = dout.sum(0)
    return dwte, dwpe


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("B,T,V,C,Tmax", [(1, 1, 3, 5, 2), (3, 17, 11, 24, 20), (4, 64, 1000, 768, 64),
                                          (2, 33, 50, 13, 40)])
@pytest.mark.parametrize("with_wpe", [True, False])
def test_embedding_gpu(rng, dtype, B, T, V, C, Tmax, with_wpe):
    # Few distinct ids, so most ids repeat many times.
    ids = rng.integers(0, min(V, 7) if V > 20 else V, size=(B, T)).astype(np.int32)
    ids[0, 0] = V - 1
    wte = rng.standard_normal((V, C)).astype(np.float32)
    wpe = rng.standard_normal((Tmax, C)).astype(np.float32)
    wter, wper = rounded(wte, dtype), rounded(wpe, dtype)
    poison_next_alloc((B, T, C), dtype)
    out = rl.ops.embedding_forward(gpu(ids), gpu(wte, dtype), gpu(wpe, dtype) if with_wpe else None)
    ref = wter[ids] + (wper[:T][None] if with_wpe else 0)
    assert_close(host(out), ref, precision(dtype), "out")

    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    dwte_ref, dwpe_ref = reference_backward(ids, rounded(dout, dtype), V, Tmax)
    w0 = rng.standard_normal((V, C)).astype(np.float32)
    p0 = rng.standard_normal((Tmax, C)).astype(np.float32)
    dwte, dwpe = gpu(w0), gpu(p0) if with_wpe else None
    rl.ops.embedding_backward(gpu(ids), gpu(dout, dtype), dwte, dwpe)
    assert_close(host(dwte) - w0, dwte_ref, "float32", "dwte")
    if with_wpe:
        assert_close(host(dwpe) - p0, dwpe_ref, "float32", "dwpe")

    # Deterministic: the same inputs give the same bits.
    dwte2, dwpe2 = gpu(w0), gpu(p0) if with_wpe else None
    rl.ops.embedding_backward(gpu(ids), gpu(dout, dtype), dwte2, dwpe2)
    assert np.array_equal(host(dwte2), host(dwte))
    if with_wpe:
        assert np.array_equal(host(dwpe2), host(dwpe))


def test_embedding_gpu_clamps_bad_ids(rng):
    # On the GPU, ids are not checked on the host (that would synchronise): out-of-range ids
    # are clamped into [0, V), documented in embedding.cu. They must not fault.
    wte = rng.standard_normal((10, 8)).astype(np.float32)
    ids = np.array([[-5, 3, 12]], np.int32)
    out = host(rl.ops.embedding_forward(gpu(ids), gpu(wte), None))
    assert_close(out[0], wte[[0, 3, 9]].astype(np.float64), "float32", "clamped rows")


def test_embedding_gpu_bad_inputs():
    with pytest.raises(TypeError, match="embedding_forward: ids must be int32"):
        rl.ops.embedding_forward(gpu(np.zeros((2, 3), np.float32)), gpu(np.ones((5, 4))), None)
    with pytest.raises(ValueError, match="embedding_forward: sequence length 3 exceeds .* 2 positions"):
        rl.ops.embedding_forward(gpu(np.zeros((2, 3), np.int32)), gpu(np.ones((5, 4))), gpu(np.ones((2, 4))))
