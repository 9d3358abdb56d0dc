"""The gradient compressors' math, in one process: n threads play the ranks of a group
whose all-reduce and all-gather meet at a barrier, so every compressor runs its real code
path against exact float64 sums of random gradients (odd sizes). QSGD's statistics
(unbiasedness, the paper's variance bound) are tested on many draws against their exact
per-element distribution."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from ringloom import _C
from ringloom.parallel import (BF16Compression, PowerSGDCompression, QSGDCompression, TopKCompression,
                               parse_compression)
from ringloom.parallel.data_parallel import GradReducer
from reference import qsgd as qsgd_ref


class ThreadGroup:
    """Rank ``rank`` of an in-process group of ``size`` threads (CPU Tensors or NumPy arrays)."""

    def __init__(self, shared: dict, rank: int, size: int):
        self.shared, self.rank, self.size = shared, rank, size

    def _exchange(self, a: np.ndarray) -> list[np.ndarray]:
        s = self.shared
        s["bar"].wait()
        s["slots"][self.rank] = np.array(a, copy=True)
        s["bar"].wait()
        out = [x.copy() for x in s["slots"]]
        s["bar"].wait()
        return out

    def all_reduce(self, a, op="sum", async_op=False):
        if isinstance(a, _C.Tensor) and a.dtype != _C.DType.float32:   # bf16: reduce in fp32, round once (as our TCP ring)
            parts = self._exchange(a.to(_C.DType.float32).numpy())
            a.copy_(_C.from_numpy(np.sum(parts, axis=0).astype(np.float32)).to(a.dtype))
            return a
        arr = a.numpy() if isinstance(a, _C.Tensor) else a   # a CPU Tensor's NumPy view shares its memory
        parts = self._exchange(arr)
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        arr[...] = total / self.size if op == "avg" else total
        return a

    def all_gather(self, out, a, async_op=False):
        host = out.numpy() if isinstance(out, _C.Tensor) else out
        host[...] = np.concatenate(self._exchange(a.numpy() if isinstance(a, _C.Tensor) else a))
        return out


def run_ranks(n: int, fn):
    """fn(group) on n threads; returns the results by rank (re-raises a thread's error)."""
    shared = {"bar": threading.Barrier(n), "slots": [None] * n}
    results, errors = [None] * n, []

    def go(r):
        try:
            results[r] = fn(ThreadGroup(shared, r, n))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            shared["bar"].abort()

    ts = [threading.Thread(target=go, args=(r,)) for r in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results


LAYOUT = [(0, (37, 23)), (37 * 23, (23,)), (37 * 23 + 23, (19, 3, 5)), (37 * 23 + 23 + 285, (1,))]
NUMEL = 37 * 23 + 23 + 285 + 1


def grads(rng, n: int, steps: int = 1) -> np.ndarray:
    return rng.standard_normal((steps, n, NUMEL)).astype(np.float32)


def _tensor(a: np.ndarray):
    return _C.from_numpy(np.array(a, np.float32, copy=True))  # from_numpy shares memory


def test_parse_compression():
    assert parse_compression("none") is None and parse_compression(None) is None
    assert isinstance(parse_compression("bf16"), BF16Compression)
    assert parse_compression("topk:0.01").ratio == 0.01
    assert parse_compression("PowerSGD:4").rank == 4
    for bad, msg in (("topk", "ratio in"), ("topk:0", "ratio in"), ("topk:1.5", "ratio in"),
                     ("powersgd:0", "positive integer rank"), ("powersgd:x", "positive integer rank"),
                     ("qsgd", "integer number of levels"), ("qsgd:0", "integer number of levels"),
                     ("qsgd:x", "integer number of levels"), ("qsgd:40000", "integer number of levels"),
                     ("qsgd:7:0", "bucket must be a positive integer"), ("gzip", "unknown compression")):
        with pytest.raises(ValueError, match=msg):
            parse_compression(bad)


@pytest.mark.parametrize("n", [2, 3])
def test_bf16_sum_within_bf16_rounding(rng, n):
    g = grads(rng, n)[0]
    exact = g.astype(np.float64).sum(0)

    def fn(group):
        flat = _tensor(np.append(g[group.rank], np.float32(np.nan)))  # a padding element left alone
        sent = BF16Compression().reduce(0, flat, NUMEL, LAYOUT, group)
        return flat.numpy().copy(), sent

    for out, sent in run_ranks(n, fn):
        assert sent == 2 * NUMEL
        assert np.isnan(out[-1])
        # Each input rounded to bf16 (relative 2^-9), the sum rounded once more.
        bound = 2.0 ** -8 * np.abs(g).astype(np.float64).sum(0) + 2.0 ** -8 * np.abs(exact)
        assert np.all(np.abs(out[:-1] - exact) <= bound)
        assert np.abs(out[:-1] - exact).max() > 0   # it really was rounded


@pytest.mark.parametrize("n,ratio", [(2, 0.01), (3, 0.07)])
def test_topk_sends_k_largest_and_conserves_mass(rng, n, ratio):
    steps = 4
    g = grads(rng, n, steps)
    k = math.ceil(ratio * NUMEL)

    def fn(group):
        c = TopKCompression(ratio)
        outs, sents, residual_before = [], [], np.zeros(NUMEL, np.float32)
        for s in range(steps):
            flat = _tensor(g[s, group.rank])
            sent = c.reduce(0, flat, NUMEL, LAYOUT, group)
            acc = g[s, group.rank] + residual_before
            # What this rank kept back is its accumulator outside its k largest magnitudes.
            kept = c.residual[0].numpy().copy()
            sent_mask = kept != acc
            assert sent_mask.sum() <= k and np.all(kept[~sent_mask] == acc[~sent_mask])
            chosen = np.abs(acc)[(acc != 0) & (kept == 0)]
            if chosen.size:
                assert chosen.min() >= np.sort(np.abs(acc))[-k] * (1 - 1e-6)
            residual_before = kept.copy()
            outs.append(flat.numpy().copy())
            sents.append(sent)
        return outs, sents, c.residual[0].numpy().copy()

    res = run_ranks(n, fn)
    for _, sents, _ in res:
        assert sents == [8 * k] * steps   # k fp32 values + k int32 indices
    # Every rank got the same sums, each with at most n k nonzeros.
    for s in range(steps):
        for r in range(1, n):
            np.testing.assert_array_equal(res[r][0][s], res[0][0][s])
        assert np.count_nonzero(res[0][0][s]) <= n * k
    # Error feedback loses nothing: all that was sent plus what is still held back is all
    # the gradients ever produced.
    delivered = np.sum([res[0][0][s] for s in range(steps)], axis=0, dtype=np.float64)
    held = np.sum([res[r][2] for r in range(n)], axis=0, dtype=np.float64)
    np.testing.assert_allclose(delivered + held, g.astype(np.float64).sum((0, 1)), rtol=0, atol=1e-4)


def test_powersgd_exact_on_low_rank_sums_and_conserves_mass(rng):
    n, r = 2, 2
    # Gradients whose matrices share an r-dimensional column space: the rank-r power step
    # recovers the sum exactly.
    g = np.zeros((n, NUMEL), np.float32)
    basis_a = rng.standard_normal((37, r))
    basis_b = rng.standard_normal((19, r))
    for i in range(n):
        g[i, :37 * 23] = (basis_a @ rng.standard_normal((r, 23))).reshape(-1)
        o = 37 * 23 + 23
        g[i, o:o + 285] = (basis_b @ rng.standard_normal((r, 15))).reshape(-1)
        g[i, 37 * 23:37 * 23 + 23] = rng.standard_normal(23)
        g[i, -1] = rng.standard_normal()
    exact = g.astype(np.float64).sum(0)

    def fn(group):
        c = PowerSGDCompression(r)
        flat = _tensor(g[group.rank])
        sent = c.reduce(0, flat, NUMEL, LAYOUT, group)
        return flat.numpy().copy(), sent, c.error[0].numpy().copy()

    res = run_ranks(n, fn)
    expect_bytes = 4 * ((37 + 23) * r + (19 + 15) * r + 23 + 1)
    for out, sent, _ in res:
        assert sent == expect_bytes
        np.testing.assert_allclose(out, exact, rtol=0, atol=2e-4 * np.abs(exact).max())
    np.testing.assert_array_equal(res[0][0], res[1][0])


def test_powersgd_error_feedback_conserves_mass(rng):
    n, r, steps = 3, 1, 3
    g = grads(rng, n, steps)

    def fn(group):
        c = PowerSGDCompression(r)
        outs = []
        for s in range(steps):
            flat = _tensor(g[s, group.rank])
            c.reduce(0, flat, NUMEL, LAYOUT, group)
            outs.append(flat.numpy().copy())
        return outs, c.error[0].numpy().copy()

    res = run_ranks(n, fn)
    delivered = np.sum(res[0][0], axis=0, dtype=np.float64)
    held = np.sum([e for _, e in res], axis=0, dtype=np.float64)
    np.testing.assert_allclose(delivered + held, g.astype(np.float64).sum((0, 1)), rtol=0, atol=1e-3)
    # Rank 1 of a random matrix is far from it: compression really happened.
    assert np.abs(res[0][0][0][:37 * 23] - g[0, :, :37 * 23].sum(0)).max() > 0.1


def test_reducer_refuses_compression_with_zero():
    with pytest.raises(ValueError, match="needs mode all_reduce"):
        GradReducer([], None, mode="reduce_scatter", compression="bf16")


# ---------------------------------------------------------------- QSGD
def qsgd_vector(rng, n: int, bucket: int) -> np.ndarray:
    """Gaussian values of mixed scales, with exact zeros and one all-zero bucket (when
    there are at least two)."""
    g = (rng.standard_normal(n) * np.exp(rng.standard_normal(n))).astype(np.float32)
    g[rng.random(n) < 0.05] = 0.0
    if n > 2 * bucket:
        g[bucket:2 * bucket] = 0.0
    return g


def qsgd_encode(q: QSGDCompression, g: np.ndarray, step: int, key: int = 0, rank: int = 0) -> np.ndarray:
    """The payload the op sends for g (rank ``rank``, bucket-list ``key``, step ``step``)."""
    return _C.ops.qsgd_encode(_tensor(g), q.levels, q.bucket, q.bits, q.seed, step, key, rank).numpy()


def qsgd_decode(q: QSGDCompression, payload: np.ndarray, n: int) -> np.ndarray:
    """The vector one payload of n elements encodes, decoded by the op."""
    out = _C.zeros([n], "float32")
    _C.ops.qsgd_decode_sum(out, _C.from_numpy(payload), 1, n, q.levels, q.bucket, q.bits)
    return out.numpy()


def qsgd_draw(q: QSGDCompression, g: np.ndarray, step: int) -> np.ndarray:
    """Q(g) as the ops compute it at ``step``."""
    return qsgd_decode(q, qsgd_encode(q, g, step), g.size)


def qsgd_step(q: QSGDCompression, g: np.ndarray) -> np.ndarray:
    """Per element, the spacing norm / s of its bucket's levels (the norm the receiver
    multiplies by: fp32, rounded up; it does not depend on the draws)."""
    norms, _ = qsgd_ref.unpack(qsgd_encode(q, g, 0), g.size, q.bucket, q.bits)
    return np.repeat(norms.astype(np.float64), np.diff(np.append(np.arange(0, g.size, q.bucket), g.size))) / q.levels


def qsgd_moments(q: QSGDCompression, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-element mean and variance of Q(g): with r = |g| / step and p = r - floor(r),
    Q(g) is sgn(g) step floor(r) or sgn(g) step (floor(r) + 1), the latter with probability p:
    mean g, variance step^2 p (1 - p)."""
    step = qsgd_step(q, g)
    r = np.divide(np.abs(g.astype(np.float64)), step, out=np.zeros(g.size), where=step > 0)
    p = r - np.floor(r)
    return g.astype(np.float64), step ** 2 * p * (1 - p)


def test_qsgd_parse_bits_and_names():
    for spec, bits, bucket in (("qsgd:1", 2, 512), ("qsgd:7", 4, 512), ("qsgd:8", 5, 512), ("qsgd:127", 8, 512),
                               ("QSGD:3:100", 3, 100)):
        q = parse_compression(spec)
        assert isinstance(q, QSGDCompression) and (q.bits, q.bucket) == (bits, bucket), spec
        assert 2 ** q.bits >= 2 * q.levels + 1 > 2 ** (q.bits - 1)   # the fewest whole bits
    assert repr(parse_compression("qsgd:7")) == "qsgd:7" and repr(parse_compression("qsgd:7:100")) == "qsgd:7:100"


@pytest.mark.parametrize("levels,bucket,n", [(1, 512, 1237), (7, 512, 1237), (4, 100, 331)])
def test_qsgd_is_unbiased(rng, levels, bucket, n):
    q = QSGDCompression(levels, bucket)
    g = qsgd_vector(rng, n, bucket)
    mean, var = qsgd_moments(q, g)
    K = 3000
    total = np.zeros(n)
    for k in range(K):   # the draws of K successive steps
        payload = qsgd_encode(q, g, k)
        assert qsgd_ref.unpack(payload, n, bucket, q.bits)[1].max() <= 2 * levels
        total += qsgd_decode(q, payload, n)
    avg = total / K
    # Elements with p = 0 (zeros, or exactly on a level) are never random: exact.
    fixed = var == 0
    np.testing.assert_allclose(avg[fixed], mean[fixed], rtol=1e-6, atol=0)
    # The rest: sum of squared z-scores of the K-draw means is chi-square with m degrees of
    # freedom under E[Q(g)] = g (mean m, sd sqrt(2 m)); 6 sd above is a false alarm with
    # probability < 1e-6.
    z2 = K * (avg[~fixed] - mean[~fixed]) ** 2 / var[~fixed]
    m = z2.size
    assert m > n // 2
    assert z2.sum() <= m + 6 * np.sqrt(2 * m), z2.sum()
    assert z2.sum() >= m - 6 * np.sqrt(2 * m), z2.sum()   # the variance formula is right too
    # The same statistic catches a biased quantiser: rounding to the nearest level.
    step = qsgd_step(q, g)
    nearest = np.sign(g) * np.round(np.divide(np.abs(g), step, out=np.zeros(n), where=step > 0)) * step
    assert (K * (nearest[~fixed] - mean[~fixed]) ** 2 / var[~fixed]).sum() > 10 * (m + 6 * np.sqrt(2 * m))


@pytest.mark.parametrize("levels,bucket", [(1, 512), (7, 512), (2, 5), (16, 33)])
def test_qsgd_variance_bound(rng, levels, bucket):
    """Lemma 3.1: E ||Q_s(v) - v||^2 <= min(d / s^2, sqrt(d) / s) ||v||^2 per bucket of d."""
    q = QSGDCompression(levels, bucket)
    n = 4 * bucket + bucket // 3 + 1
    g = qsgd_vector(rng, n, bucket)
    g[:bucket] = rng.uniform(0.2, 1.0, bucket)   # near-equal magnitudes: close to the d / s^2 regime
    _, var = qsgd_moments(q, g)
    K = 2000
    sq = np.zeros(n)
    for k in range(K):
        sq += (qsgd_draw(q, g, k) - g.astype(np.float64)) ** 2
    starts = np.arange(0, n, bucket)
    d = np.diff(np.append(starts, n))
    norm2 = np.add.reduceat(g.astype(np.float64) ** 2, starts)
    exact = np.add.reduceat(var, starts)
    empirical = np.add.reduceat(sq / K, starts)
    bound = np.minimum(d / levels ** 2, np.sqrt(d) / levels) * norm2
    assert np.all(exact <= bound * (1 + 1e-6)), (exact, bound)
    # Each element's squared error e^2 has mean var_i, and |e| <= step, so Var(e^2) <= step^2
    # var_i: 8 standard errors of the K-draw mean.
    sd = np.sqrt(np.add.reduceat(var * qsgd_step(q, g) ** 2, starts) / K)
    assert np.all(np.abs(empirical - exact) <= 8 * sd + 1e-12), (empirical, exact, sd)
    assert np.all(empirical[norm2 > 0] > 0)


@pytest.mark.parametrize("levels,bucket,n", [(1, 512, 1), (7, 512, 1237), (127, 64, 1000), (300, 7, 97)])
def test_qsgd_payload_bytes_and_roundtrip(rng, levels, bucket, n):
    q = QSGDCompression(levels, bucket)
    g = qsgd_vector(rng, n, bucket)
    payload = qsgd_encode(q, g, 1)
    assert payload.dtype == np.uint8
    assert payload.size == q.payload_bytes(n) == 4 * math.ceil(n / bucket) + math.ceil(n * q.bits / 8)
    norms, codes = qsgd_ref.unpack(payload, n, bucket, q.bits)
    assert codes.max() <= 2 * levels
    np.testing.assert_array_equal(qsgd_ref.pack(norms, codes, q.bits), payload)   # spare bits are zero
    # The signs survive: a decoded element is never of the opposite sign.
    assert np.all(qsgd_draw(q, g, 1) * g >= 0)


@pytest.mark.parametrize("n", [2, 3])
def test_qsgd_reduce_sums_the_ranks_quantised_gradients(rng, n):
    g = grads(rng, n)[0]
    q_ref = QSGDCompression(3, 100, seed=11)

    def fn(group, step):
        c = QSGDCompression(3, 100, seed=11)
        c.begin_step(step)
        flat = _tensor(np.append(g[group.rank], np.float32(np.nan)))   # a padding element left alone
        sent = c.reduce(4, flat, NUMEL, LAYOUT, group)
        return flat.numpy().copy(), sent

    for step in (0, 1):
        res = run_ranks(n, lambda grp: fn(grp, step))
        # Reproducible: rank r at step t in bucket-list 4 draws from the generator keyed (11, t, 4, r).
        gathered = np.concatenate([qsgd_ref.encode(g[r], 3, 100, q_ref.bits, 11, step, 4, r) for r in range(n)])
        want = qsgd_ref.decode_sum(gathered, n, NUMEL, 3, 100, q_ref.bits)
        for out, sent in res:
            assert sent == q_ref.payload_bytes(NUMEL)
            assert np.isnan(out[-1])
            np.testing.assert_array_equal(out[:-1], want)   # bit-identical on every rank
        if step == 0:
            first = res[0][0]
    assert not np.array_equal(first, res[0][0])   # another step, other draws
    # Unbiased but noisy: the sum is within a few standard deviations of the exact one.
    exact = g.astype(np.float64).sum(0)
    var = [qsgd_moments(q_ref, g[r])[1] for r in range(n)]
    spread = np.sqrt(sum(np.sum(v * qsgd_step(q_ref, g[r]) ** 2) for r, v in enumerate(var)))   # sd bound, as above
    err2 = np.sum((res[0][0][:-1] - exact) ** 2)
    assert err2 <= sum(v.sum() for v in var) + 8 * spread, err2
    assert err2 > 0
