"""Vocabulary-parallel cross-entropy (ops/cross_entropy_shard.h): the logits cut into R
slices along the vocabulary (uneven slices, ignored rows, large offsets); the statistics of
every slice, combined, give the full row's loss, and each slice's backward its part of the
full gradient, against the float64 reference of the unsharded op."""
import numpy as np
import pytest

import ringloom as rl
from reference.cross_entropy import cross_entropy, cross_entropy_grad
from tolerances import assert_close


def _slices(V, R):
    base, extra = divmod(V, R)
    starts = [r * base + min(r, extra) for r in range(R + 1)]
    return [(starts[r], starts[r + 1]) for r in range(R)]


def _sharded(logits, targets, R, grad_scale, ignore_index=-100):
    """(losses, dlogits) computed slice by slice with the shard ops."""
    cuts = _slices(logits.shape[1], R)
    t = rl.tensor(targets)
    stats = np.stack([np.asarray(rl.ops.cross_entropy_shard_stats(rl.tensor(np.ascontiguousarray(logits[:, a:b])),
                                                                  t, a)) for a, b in cuts])
    losses, lse = rl.ops.cross_entropy_shard_combine(rl.tensor(stats), t, ignore_index)
    grads = []
    for a, b in cuts:
        piece = rl.tensor(np.ascontiguousarray(logits[:, a:b]))
        rl.ops.cross_entropy_shard_backward(piece, t, lse, a, ignore_index, grad_scale)
        grads.append(np.asarray(piece))
    return np.asarray(losses), np.concatenate(grads, axis=1)


# (N, V, R, ignored rows, offset): one slice, uneven slices, slices of one column, +-1000.
CASES = [(1, 1, 1, 0, 0.0), (7, 13, 3, 2, 0.0), (5, 5, 5, 1, 0.0), (33, 1000, 4, 5, 1000.0),
         (6, 50257, 2, 1, -1000.0)]


@pytest.mark.parametrize("N,V,R,n_ignored,offset", CASES)
@pytest.mark.parametrize("grad_scale", [1.0, 0.125])
def test_sharded_equals_full(rng, N, V, R, n_ignored, offset, grad_scale):
    logits = (3 * rng.standard_normal((N, V)) + offset).astype(np.float32)
    targets = rng.integers(0, V, N).astype(np.int32)
    if n_ignored:
        targets[rng.choice(N, n_ignored, replace=False)] = -100
    losses, grad = _sharded(logits, targets, R, grad_scale)
    assert_close(losses, cross_entropy(logits, targets), what="losses")
    assert_close(grad, cross_entropy_grad(logits, targets, grad_scale=grad_scale), what="dlogits")
    assert np.all(losses[targets == -100] == 0.0) and np.all(grad[targets == -100] == 0.0)


def test_stats_of_a_slice(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    t = np.array([2, 9, -100, 3], np.int32)   # the slice is [2, 8): row 1's target lies in another
    st = np.asarray(rl.ops.cross_entropy_shard_stats(rl.tensor(x), rl.tensor(t), 2))
    m = x.max(1)
    np.testing.assert_allclose(st[:, 0], m)
    np.testing.assert_allclose(st[:, 1], np.exp(x - m[:, None]).sum(1), rtol=1e-6)
    np.testing.assert_array_equal(st[:, 2], [x[0, 0], 0.0, 0.0, x[3, 1]])


def test_bad_inputs_raise(rng):
    x = rl.tensor(rng.standard_normal((3, 4)).astype(np.float32))
    t = rl.tensor(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="vocab_start must be >= 0"):
        rl.ops.cross_entropy_shard_stats(x, t, -1)
    with pytest.raises(ValueError, match="targets"):
        rl.ops.cross_entropy_shard_stats(x, rl.tensor(np.zeros(2, np.int32)), 0)
    with pytest.raises(ValueError, match=r"stats must be \[R, N, 3\]"):
        rl.ops.cross_entropy_shard_combine(rl.tensor(np.zeros((2, 3, 2), np.float32)), t)
    with pytest.raises(ValueError, match="lse"):
        rl.ops.cross_entropy_shard_backward(x, t, rl.tensor(np.zeros(2, np.float32)), 0)
