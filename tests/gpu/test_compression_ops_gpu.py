"""The CUDA gradient-compression ops against the CPU ops: top-k picks bit-identical
payloads and residuals (ties, NaN, infinities, odd sizes, a large bucket), its rank-ordered
accumulation gives bit-identical sums and refuses bad indices without writing out of
bounds; modified Gram-Schmidt agrees to fp32 rounding."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import gpu, host, poison_next_alloc
from tolerances import assert_close

pytestmark = pytest.mark.gpu

TOPK_CASES = [(1, 1), (7, 1), (7, 3), (7, 7), (1001, 1), (1001, 100), (1001, 1001), (3_000_001, 30_000)]


def values(rng, n: int, kind: str) -> np.ndarray:
    if kind == "ties":
        return rng.integers(-3, 4, n).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)
    if kind == "special":
        for v in (np.nan, -np.inf, np.inf, -0.0, np.nan):
            x[rng.integers(0, n)] = v
    return x


def bits(t) -> np.ndarray:
    return np.asarray(t.cpu().numpy()).view(np.int32)


@pytest.mark.parametrize("n,k", TOPK_CASES)
@pytest.mark.parametrize("kind", ["normal", "ties", "special"])
def test_topk_compress_gpu_matches_cpu_bitwise(rng, n, k, kind):
    x = values(rng, n, kind)
    acc_cpu, acc_gpu = rl.tensor(x), gpu(x)
    want = rl.ops.topk_compress(acc_cpu, k)
    poison_next_alloc((2 * k,))
    got = rl.ops.topk_compress(acc_gpu, k)
    np.testing.assert_array_equal(bits(got), bits(want))
    np.testing.assert_array_equal(bits(acc_gpu), bits(acc_cpu))


@pytest.mark.parametrize("n,k", TOPK_CASES)
@pytest.mark.parametrize("world", [1, 4])
def test_topk_accumulate_gpu_matches_cpu_bitwise(rng, n, k, world):
    parts = [rl.ops.topk_compress(rl.tensor(rng.standard_normal(n).astype(np.float32)), k) for _ in range(world)]
    gathered = np.concatenate([np.asarray(p) for p in parts])
    out_cpu = rl.tensor(np.zeros(n, np.float32))
    rl.ops.topk_accumulate(out_cpu, rl.tensor(gathered), world, k)
    out_gpu = gpu(np.full(n, np.nan, np.float32))
    rl.ops.topk_accumulate(out_gpu, gpu(gathered), world, k)
    np.testing.assert_array_equal(bits(out_gpu), bits(out_cpu))


def test_topk_accumulate_gpu_refuses_bad_indices():
    n, k = 5, 2
    # A guard region after `out` in the same allocation: nothing may be written there.
    backing = gpu(np.zeros(n + 8, np.float32))
    out = backing.narrow0(0, n)
    for bad in ([1, 5], [-1, 2], [3, 3], [3, 1], [1, 1 << 30]):
        g = np.concatenate([np.ones(k, np.float32), np.array(bad, np.int32).view(np.float32)])
        with pytest.raises(ValueError, match=r"strictly increasing and inside \[0, 5\)"):
            rl.ops.topk_accumulate(out, gpu(g), 1, k)
        assert np.all(host(backing)[n:] == 0.0)


@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (7, 3), (7, 7), (1001, 4), (37, 5), (100_003, 8), (300, 32)])
def test_orthonormalize_gpu_matches_cpu(rng, shape):
    p = rng.standard_normal(shape).astype(np.float32)
    p[:, shape[1] // 2] *= 1e-3   # columns of different scales
    t_cpu, t_gpu = rl.tensor(p), gpu(p)
    rl.ops.orthonormalize_columns_(t_cpu)
    rl.ops.orthonormalize_columns_(t_gpu)
    assert_close(host(t_gpu), host(t_cpu))
    q = host(t_gpu)
    np.testing.assert_allclose(q.T @ q, np.eye(shape[1]), atol=1e-4)


def test_orthonormalize_gpu_keeps_a_zero_column_zero(rng):
    p = rng.standard_normal((513, 3)).astype(np.float32)
    p[:, 0] = 0.0
    t = gpu(p)
    rl.ops.orthonormalize_columns_(t)
    q = host(t)
    assert np.all(q[:, 0] == 0.0)
    ref = rl.tensor(p)
    rl.ops.orthonormalize_columns_(ref)
    assert_close(q, host(ref))
