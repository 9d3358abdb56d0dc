"""CUDA vocabulary-parallel ops against float64: the cross-entropy over R vocabulary slices
(statistics, combine, backward in place; uneven slices, ignored rows, large logits) equals
the full row's, and the shard embedding's slices sum to the full embedding with each
slice's wte gradient its rows of the full one (ids outside a slice: zero rows, no grad)."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import DEV, gpu, host, precision, rounded
from reference.cross_entropy import cross_entropy, cross_entropy_grad
from reference.embedding import embedding
from tolerances import assert_close

pytestmark = pytest.mark.gpu


def _cuts(V, R):
    base, extra = divmod(V, R)
    s = [r * base + min(r, extra) for r in range(R + 1)]
    return [(s[r], s[r + 1]) for r in range(R)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("N,V,R,spread", [(1, 1, 1, 1.0), (7, 13, 3, 1.0), (37, 1001, 4, 3.0),
                                          (16, 50304, 2, 4.0), (9, 8195, 3, 40.0)])
def test_cross_entropy_shard_gpu(rng, dtype, N, V, R, spread):
    x = (spread * rng.standard_normal((N, V))).astype(np.float32)
    t = rng.integers(0, V, size=N).astype(np.int32)
    t[rng.random(N) < 0.25] = -100
    xr = rounded(x, dtype)
    tg = gpu(t)
    pieces = [gpu(np.ascontiguousarray(x[:, a:b]), dtype) for a, b in _cuts(V, R)]
    stats = np.stack([host(rl.ops.cross_entropy_shard_stats(p, tg, a)) for p, (a, _) in zip(pieces, _cuts(V, R))])
    loss, lse = rl.ops.cross_entropy_shard_combine(gpu(stats.astype(np.float32)), tg, -100)
    assert_close(host(loss), cross_entropy(xr, t), "float32", "loss")
    for p, (a, _) in zip(pieces, _cuts(V, R)):
        rl.ops.cross_entropy_shard_backward(p, tg, lse, a, -100, 0.37)
    grad = np.concatenate([host(p) for p in pieces], axis=1)
    assert_close(grad, cross_entropy_grad(xr, t, grad_scale=0.37), precision(dtype), "grad in place")
    assert np.all(grad[t == -100] == 0), "ignored rows get zero gradient"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("B,T,V,C,R", [(2, 7, 5, 3, 2), (3, 33, 11, 40, 3), (4, 64, 1000, 128, 4)])
def test_embedding_shard_gpu(rng, dtype, B, T, V, C, R):
    ids = rng.integers(0, V, size=(B, T)).astype(np.int32)
    wte = rng.standard_normal((V, C)).astype(np.float32)
    wpe = rng.standard_normal((T, C)).astype(np.float32)
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    total = np.zeros((B, T, C))
    dwte = np.zeros((V, C))
    for r, (a, b) in enumerate(_cuts(V, R)):
        out = rl.ops.embedding_shard_forward(gpu(ids), gpu(np.ascontiguousarray(wte[a:b]), dtype),
                                             gpu(wpe, dtype) if r == 0 else None, a)
        total += host(out)
        g = rl.zeros([b - a, C], device=DEV)
        gp = rl.zeros([T, C], device=DEV)
        rl.ops.embedding_shard_backward(gpu(ids), gpu(dout, dtype), g, gp, a)
        dwte[a:b] = host(g)
        assert_close(host(gp), rounded(dout, dtype).sum(0), precision(dtype), "dwpe")
    assert_close(total, embedding(ids, rounded(wte, dtype), rounded(wpe, dtype)), precision(dtype), "forward")
    ref = np.zeros((V, C))
    np.add.at(ref, ids.reshape(-1), rounded(dout, dtype).reshape(-1, C))
    assert_close(dwte, ref, precision(dtype), "dwte")
