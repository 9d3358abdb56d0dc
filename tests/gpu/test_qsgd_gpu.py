"""CUDA QSGD encode and decode-sum against the CPU op, bit for bit (csrc/ops/qsgd.h: the
norm's summation order and the generator are defined so that both devices agree): odd
sizes, buckets larger and smaller than a warp, every code width from 2 to 16 bits, several
ranks' payloads, non-finite buckets, and a payload view at an odd byte offset."""
import math

import numpy as np
import pytest

import ringloom as rl
from gpu_util import DEV, gpu, poison_next_alloc

pytestmark = pytest.mark.gpu


def bits_of(levels: int) -> int:
    return math.ceil(math.log2(2 * levels + 1))


def vector(rng, n: int) -> np.ndarray:
    g = (rng.standard_normal(n) * np.exp(2 * rng.standard_normal(n))).astype(np.float32)
    g[rng.random(n) < 0.1] = 0.0
    return g


@pytest.mark.parametrize("n", [1, 7, 513, 1000, 300001])
@pytest.mark.parametrize("bucket", [1, 3, 33, 512, 100000])
@pytest.mark.parametrize("levels", [1, 3, 7, 127, 32767])
def test_qsgd_encode_gpu_equals_cpu(rng, n, bucket, levels):
    g = vector(rng, n)
    if n > 40:
        g[17] = np.nan if bucket < 100 else g[17]   # a non-finite bucket, where there are several
    bits = bits_of(levels)
    args = (levels, bucket, bits, 3, 5, 2, 1)
    want = rl.ops.qsgd_encode(rl.tensor(g), *args).numpy()
    poison_next_alloc((-(-want.size // 4),), "float32")   # NaN bytes where the kernel writes nothing
    got = rl.ops.qsgd_encode(gpu(g), *args)
    assert str(got.device) == str(gpu(g[:1]).device)
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("world,n,bucket,levels", [(1, 7, 3, 1), (2, 513, 512, 7), (3, 1000, 1, 127),
                                                   (4, 300001, 512, 32767), (3, 1, 512, 7), (2, 1001, 33, 2)])
def test_qsgd_decode_sum_gpu_equals_cpu(rng, world, n, bucket, levels):
    bits = bits_of(levels)
    g = [vector(rng, n) for _ in range(world)]
    g[0][0] = np.inf
    gathered = np.concatenate([rl.ops.qsgd_encode(rl.tensor(x), levels, bucket, bits, 0, 9, 1, r).numpy()
                               for r, x in enumerate(g)])
    want = rl.tensor(np.zeros(n, np.float32))
    rl.ops.qsgd_decode_sum(want, rl.tensor(gathered), world, n, levels, bucket, bits)
    # The payloads one byte into a larger buffer: rank r's norms are not 4-byte aligned.
    backing = gpu(np.concatenate([np.zeros(1, np.uint8), gathered]))
    out = gpu(np.full(n, np.nan, np.float32))
    rl.ops.qsgd_decode_sum(out, backing.narrow0(1, gathered.size), world, n, levels, bucket, bits)
    np.testing.assert_array_equal(out.numpy().view(np.uint32), want.numpy().view(np.uint32))
