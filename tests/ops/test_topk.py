"""Top-k compression ops (csrc/ops/topk.h) against the NumPy reference: exact payloads and
residuals on odd sizes, ties, NaN and infinities; rank-ordered accumulation; bad input."""
import numpy as np
import pytest

import ringloom as rl
from reference.topk import topk_accumulate, topk_compress
from tolerances import assert_close

CASES = [(1, 1), (7, 1), (7, 3), (7, 7), (1001, 1), (1001, 100), (1001, 1001)]


def values(rng, n: int, kind: str) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "ties":   # few distinct magnitudes, both signs, zeros: the index decides
        return rng.integers(-3, 4, n).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)   # "special": NaN, +-inf, -0
    for v in (np.nan, -np.inf, np.inf, -0.0, np.nan):
        x[rng.integers(0, n)] = v
    return x


@pytest.mark.parametrize("n,k", CASES)
@pytest.mark.parametrize("kind", ["normal", "ties", "special"])
def test_topk_compress_matches_reference(rng, n, k, kind):
    x = values(rng, n, kind)
    acc = rl.tensor(x)
    payload = rl.ops.topk_compress(acc, k)
    want_payload, want_residual = topk_compress(x, k)
    assert tuple(payload.shape) == (2 * k,)
    np.testing.assert_array_equal(np.asarray(payload).view(np.int32), want_payload.view(np.int32))
    np.testing.assert_array_equal(np.asarray(acc).view(np.int32), want_residual.view(np.int32))


def test_topk_nan_counts_as_largest_and_ties_go_to_the_lower_index():
    x = np.array([1.0, -5.0, np.nan, 5.0, np.inf, -np.inf, 0.0, np.nan], np.float32)
    acc = rl.tensor(x)
    p = np.asarray(rl.ops.topk_compress(acc, 4))
    assert list(p[4:].view(np.int32)) == [2, 4, 5, 7]   # both NaNs, then +-inf in index order
    p = np.asarray(rl.ops.topk_compress(rl.tensor(np.array([2, -2, 2, 1], np.float32)), 2))
    assert list(p[2:].view(np.int32)) == [0, 1]


@pytest.mark.parametrize("n,k", CASES)
@pytest.mark.parametrize("world", [1, 3])
def test_topk_accumulate_sums_in_rank_order(rng, n, k, world):
    parts = [topk_compress(rng.standard_normal(n).astype(np.float32), k)[0] for _ in range(world)]
    gathered = np.concatenate(parts)
    out = rl.tensor(np.full(n, np.nan, np.float32))   # every element overwritten
    rl.ops.topk_accumulate(out, rl.tensor(gathered), world, k)
    # fp32 adds in rank order, exactly.
    want32 = np.zeros(n, np.float32)
    for part in parts:
        want32[part[k:].view(np.int32)] += part[:k]
    np.testing.assert_array_equal(np.asarray(out), want32)
    assert_close(np.asarray(out), topk_accumulate(gathered, n, world, k))


def test_topk_errors_name_the_problem():
    acc = rl.tensor(np.ones(5, np.float32))
    for k in (0, 6):
        with pytest.raises(ValueError, match=r"topk_compress: k must be in \[1, n\]"):
            rl.ops.topk_compress(acc, k)
    with pytest.raises((TypeError, ValueError), match="topk_compress"):
        rl.ops.topk_compress(rl.tensor(np.ones((2, 3), np.float32)), 1)
    with pytest.raises((TypeError, ValueError), match="topk_compress"):
        rl.ops.topk_compress(rl.tensor(np.ones(4, np.int32)), 1)
    out = rl.tensor(np.zeros(5, np.float32))
    good = np.concatenate([np.ones(2, np.float32), np.array([1, 3], np.int32).view(np.float32)])
    with pytest.raises(ValueError, match="world \\* 2k"):
        rl.ops.topk_accumulate(out, rl.tensor(good), 2, 2)
    with pytest.raises(ValueError, match="world must be >= 1"):
        rl.ops.topk_accumulate(out, rl.tensor(good), 0, 2)
    for bad in ([1, 5], [-1, 2], [3, 3], [3, 1]):
        g = np.concatenate([np.ones(2, np.float32), np.array(bad, np.int32).view(np.float32)])
        with pytest.raises(ValueError, match=r"strictly increasing and inside \[0, 5\)"):
            rl.ops.topk_accumulate(out, rl.tensor(g), 1, 2)
    np.testing.assert_array_equal(np.asarray(out), 0.0)   # nothing written
