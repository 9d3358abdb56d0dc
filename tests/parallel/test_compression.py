"""The gradient compressors' math, in one process: n threads play the ranks of a group
whose all-reduce and all-gather meet at a barrier, so every compressor runs its real code
path against exact float64 sums of random gradients (odd sizes)."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from ringloom import _C
from ringloom.parallel import (BF16Compression, PowerSGDCompression, TopKCompression, parse_compression)
from ringloom.parallel.data_parallel import GradReducer


class ThreadGroup:
    """Rank ``rank`` of an in-process group of ``size`` threads (NumPy arrays only)."""

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
        if isinstance(a, _C.Tensor):   # bf16 Tensors: reduce in fp32, round once (as our TCP ring)
            parts = self._exchange(a.to(_C.DType.float32).numpy())
            a.copy_(_C.from_numpy(np.sum(parts, axis=0).astype(np.float32)).to(a.dtype))
            return a
        parts = self._exchange(a)
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        a[...] = total / self.size if op == "avg" else total
        return a

    def all_gather(self, out, a, async_op=False):
        out[...] = np.concatenate(self._exchange(a))
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
                     ("qsgd", "unknown compression")):
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
            kept = c.residual[0]
            sent_mask = kept != acc
            assert sent_mask.sum() <= k and np.all(kept[~sent_mask] == acc[~sent_mask])
            chosen = np.abs(acc)[(acc != 0) & (kept == 0)]
            if chosen.size:
                assert chosen.min() >= np.sort(np.abs(acc))[-k] * (1 - 1e-6)
            residual_before = kept.copy()
            outs.append(flat.numpy().copy())
            sents.append(sent)
        return outs, sents, c.residual[0]

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
        return flat.numpy().copy(), sent, c.error[0]

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
        return outs, c.error[0]

    res = run_ranks(n, fn)
    delivered = np.sum(res[0][0], axis=0, dtype=np.float64)
    held = np.sum([e for _, e in res], axis=0, dtype=np.float64)
    np.testing.assert_allclose(delivered + held, g.astype(np.float64).sum((0, 1)), rtol=0, atol=1e-3)
    # Rank 1 of a random matrix is far from it: compression really happened.
    assert np.abs(res[0][0][0][:37 * 23] - g[0, :, :37 * 23].sum(0)).max() > 0.1


def test_reducer_refuses_compression_with_zero():
    with pytest.raises(ValueError, match="needs mode all_reduce"):
        GradReducer([], None, mode="reduce_scatter", compression="bf16")
