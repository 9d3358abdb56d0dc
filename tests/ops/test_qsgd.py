"""QSGD encode and decode-sum (csrc/ops/qsgd.h) against the NumPy reference, bit for bit:
norms, codes and packed bytes on odd sizes, bucket sizes and level counts; the rank-order
sums; the generator's keying; non-finite buckets; bad arguments. The quantiser's
statistics (unbiasedness, the variance bound) are tested in tests/parallel/test_compression.py."""
import math

import numpy as np
import pytest

import ringloom as rl
from reference import qsgd as ref

ops = rl.ops


def bits_of(levels: int) -> int:
    return math.ceil(math.log2(2 * levels + 1))


def vector(rng, n: int) -> np.ndarray:
    """Mixed scales, exact zeros, a negative zero, and one tiny subnormal."""
    g = (rng.standard_normal(n) * np.exp(2 * rng.standard_normal(n))).astype(np.float32)
    g[rng.random(n) < 0.1] = 0.0
    if n > 3:
        g[1], g[2] = -0.0, np.float32(1e-44)
    return g


def encode(g, levels, bucket, bits=None, seed=3, step=5, key=2, rank=1):
    bits = bits or bits_of(levels)
    return ops.qsgd_encode(rl.tensor(g), levels, bucket, bits, seed, step, key, rank).numpy()


@pytest.mark.parametrize("n", [1, 7, 513, 1000])
@pytest.mark.parametrize("bucket", [1, 3, 512])
@pytest.mark.parametrize("levels", [1, 7, 127, 32767])
def test_encode_matches_reference(rng, n, bucket, levels):
    g = vector(rng, n)
    bits = bits_of(levels)
    payload = encode(g, levels, bucket)
    want = ref.encode(g, levels, bucket, bits, 3, 5, 2, 1)
    assert payload.dtype == np.uint8 and payload.size == want.size == ops.qsgd_payload_bytes(n, bucket, bits)
    norms, codes = ref.unpack(payload, n, bucket, bits)
    want_norms, want_codes = ref.unpack(want, n, bucket, bits)
    np.testing.assert_array_equal(norms.view(np.uint32), want_norms.view(np.uint32))
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(payload, want)
    # The norm is rounded up: every r_i = s |g_i| / norm is at most s, and a code never exceeds 2s.
    assert np.all(np.repeat(norms.astype(np.float64), bucket)[:n] >= np.abs(g))
    assert codes.max() <= 2 * levels


@pytest.mark.parametrize("levels", [3, 7])
def test_encode_matches_reference_past_the_threading_threshold(rng, levels):
    """70001 elements: the OpenMP loops split the buckets and the bytes (3-bit codes straddle bytes)."""
    g = vector(rng, 70001)
    np.testing.assert_array_equal(encode(g, levels, 512), ref.encode(g, levels, 512, bits_of(levels), 3, 5, 2, 1))


@pytest.mark.parametrize("world,n,bucket,levels", [(1, 7, 3, 1), (2, 513, 512, 7), (3, 1000, 1, 127),
                                                   (4, 1000, 3, 32767), (3, 1, 512, 7), (2, 70001, 512, 3)])
def test_decode_sum_matches_reference(rng, world, n, bucket, levels):
    bits = bits_of(levels)
    gathered = np.concatenate([encode(vector(rng, n), levels, bucket, rank=r) for r in range(world)])
    out = rl.tensor(np.full(n, np.nan, np.float32))
    ops.qsgd_decode_sum(out, rl.tensor(gathered), world, n, levels, bucket, bits)
    want = ref.decode_sum(gathered, world, n, levels, bucket, bits)
    np.testing.assert_array_equal(out.numpy().view(np.uint32), want.view(np.uint32))


def test_wider_codes_than_needed_round_trip(rng):
    """bits above the minimum: the same codes, more bits each."""
    g = vector(rng, 300)
    for bits in (3, 9, 16):
        payload = encode(g, 3, 64, bits)
        np.testing.assert_array_equal(payload, ref.encode(g, 3, 64, bits, 3, 5, 2, 1))
        out = rl.tensor(np.zeros(300, np.float32))
        ops.qsgd_decode_sum(out, rl.tensor(payload), 1, 300, 3, 64, bits)
        np.testing.assert_array_equal(out.numpy(), ref.decode_sum(payload, 1, 300, 3, 64, bits))


def test_generator_is_keyed_by_seed_step_key_rank(rng):
    g = rng.standard_normal(4000).astype(np.float32)
    base = dict(seed=3, step=5, key=2, rank=1)
    first = encode(g, 7, 512, **base)
    np.testing.assert_array_equal(first, encode(g, 7, 512, **base))   # reproducible
    for name in base:
        other = encode(g, 7, 512, **{**base, name: base[name] + 1})
        nb = 4 * 8
        np.testing.assert_array_equal(other[:nb], first[:nb])   # the same norms
        assert not np.array_equal(other[nb:], first[nb:]), name   # other draws
    # The draws are uniform on [0, 1): their mean and a histogram over 10 bins.
    u = ref.uniform(ref.stream_of(3, 5, 2, 1), 100000)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 6 * math.sqrt(1 / 12 / u.size)
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.sum((counts - 10000.0) ** 2 / 10000.0) < 9 + 6 * math.sqrt(18)   # chi-square, 9 dof


def test_nonfinite_bucket_decodes_to_nan(rng):
    """A bucket holding NaN or inf (or a norm past FLT_MAX) sends norm NaN and level 0
    codes, and decodes to NaN; the other buckets are untouched."""
    g = rng.standard_normal(40).astype(np.float32)
    g[3], g[15], g[24], g[25] = np.nan, np.inf, 3e38, -3e38
    payload = encode(g, 7, 10)
    np.testing.assert_array_equal(payload, ref.encode(g, 7, 10, 4, 3, 5, 2, 1))
    norms, codes = ref.unpack(payload, 40, 10, 4)
    assert np.isnan(norms[:3]).all() and np.isfinite(norms[3])
    assert np.all(codes[:30] == 7)
    for world in (1, 2, 3):   # the one quiet NaN whatever the sum (GPUs return other NaN bits)
        out = rl.tensor(np.zeros(40, np.float32))
        ops.qsgd_decode_sum(out, rl.tensor(np.tile(payload, world)), world, 40, 7, 10, 4)
        assert (out.numpy()[:30].view(np.uint32) == 0x7FC00000).all() and np.isfinite(out.numpy()[30:]).all()


def test_empty_input():
    payload = ops.qsgd_encode(rl.tensor(np.zeros(0, np.float32)), 7, 512, 4, 0, 0, 0, 0)
    assert payload.numel() == 0
    ops.qsgd_decode_sum(rl.tensor(np.zeros(0, np.float32)), payload, 3, 0, 7, 512, 4)


def test_bad_arguments_raise():
    g = rl.tensor(np.ones(10, np.float32))
    for kwargs, match in ((dict(levels=0), "levels must be in"), (dict(levels=32768), "levels must be in"),
                          (dict(bucket=0), "bucket must be positive"), (dict(bits=3), r"bits must be in \[4, 16\]"),
                          (dict(bits=17), "bits must be in"), (dict(seed=-1), "must be >= 0"),
                          (dict(step=-1), "must be >= 0"), (dict(rank=-2), "must be >= 0")):
        args = dict(levels=7, bucket=4, bits=4, seed=0, step=0, key=0, rank=0)
        args.update(kwargs)
        with pytest.raises(ValueError, match=match):
            ops.qsgd_encode(g, **args)
    with pytest.raises(TypeError, match="qsgd_encode"):
        ops.qsgd_encode(rl.tensor(np.ones(10, np.int32)), 7, 4, 4, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="overflows"):
        ops.qsgd_payload_bytes(2 ** 62, 1, 16)
    payload = ops.qsgd_encode(g, 7, 4, 4, 0, 0, 0, 0)   # 3 norms + 5 code bytes = 17 bytes
    two = rl.tensor(np.concatenate([payload.numpy()] * 2))
    out = rl.tensor(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="gathered must hold world=3 payloads"):
        ops.qsgd_decode_sum(out, two, 3, 10, 7, 4, 4)
    with pytest.raises(ValueError, match="out must have n=9"):
        ops.qsgd_decode_sum(out, two, 2, 9, 7, 4, 4)
    with pytest.raises(ValueError, match="world must be >= 1"):
        ops.qsgd_decode_sum(out, two, 0, 10, 7, 4, 4)
    with pytest.raises(ValueError, match="bits must be in"):
        ops.qsgd_decode_sum(out, two, 2, 10, 7, 4, 3)
    with pytest.raises(TypeError, match="qsgd_decode_sum"):
        ops.qsgd_decode_sum(out, rl.tensor(np.zeros(34, np.float32)), 2, 10, 7, 4, 4)
    with pytest.raises(ValueError, match="overflows"):
        ops.qsgd_decode_sum(out, two, 2 ** 62, 10, 7, 4, 4)
