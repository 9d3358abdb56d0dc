import numpy as np
import pytest

import ringloom as rl
from gradcheck import check_grad
from reference.cross_entropy import cross_entropy, cross_entropy_grad
from tolerances import REL_ERR, assert_close


def _case(rng, N, V, ignore_index=-100, n_ignored=0, offset=0.0):
    logits = (3 * rng.standard_normal((N, V)) + offset).astype(np.float32)
    targets = rng.integers(0, V, N).astype(np.int32)
    if n_ignored:
        targets[rng.choice(N, n_ignored, replace=False)] = ignore_index
    return logits, targets


# (N, V, ignored rows, offset): offsets of +-1000 overflow exp() without the max subtraction.
CASES = [(1, 1, 0, 0.0), (7, 13, 2, 0.0), (33, 1000, 5, 1000.0), (5, 50257, 1, -1000.0)]


@pytest.mark.parametrize("N,V,n_ignored,offset", CASES)
def test_cross_entropy_forward_values(rng, N, V, n_ignored, offset):
    logits, targets = _case(rng, N, V, n_ignored=n_ignored, offset=offset)
    t_logits = rl.tensor(logits)
    losses = rl.ops.cross_entropy_forward(t_logits, rl.tensor(targets))
    assert tuple(losses.shape) == (N,)
    assert_close(np.asarray(losses), cross_entropy(logits, targets))
    assert np.all(np.asarray(losses)[targets == -100] == 0.0)
    np.testing.assert_array_equal(np.asarray(t_logits), logits)  # forward leaves logits alone


@pytest.mark.parametrize("N,V,n_ignored,offset", CASES)
@pytest.mark.parametrize("grad_scale", [1.0, 0.125])
def test_cross_entropy_forward_backward_in_place(rng, N, V, n_ignored, offset, grad_scale):
    logits, targets = _case(rng, N, V, n_ignored=n_ignored, offset=offset)
    t_logits = rl.tensor(logits)
    ptr = t_logits.data_ptr()
    losses = rl.ops.cross_entropy_forward_backward(t_logits, rl.tensor(targets), grad_scale=grad_scale)
    assert t_logits.data_ptr() == ptr
    assert_close(np.asarray(losses), cross_entropy(logits, targets))
    grad = np.asarray(t_logits)  # the logits now hold the gradient
    assert_close(grad, cross_entropy_grad(logits, targets, grad_scale=grad_scale), what="dlogits")
    assert np.all(grad[targets == -100] == 0.0)


@pytest.mark.parametrize("N,V", [(4, 3), (9, 17)])
def test_cross_entropy_grad_vs_finite_differences(rng, N, V):
    logits, targets = _case(rng, N, V, n_ignored=1)
    grad_scale = 1.0 / np.count_nonzero(targets != -100)  # mean over counted rows
    t_logits = rl.tensor(logits)
    rl.ops.cross_entropy_forward_backward(t_logits, rl.tensor(targets), grad_scale=grad_scale)
    dy = np.full(N, grad_scale)  # d(grad_scale * sum(losses))
    check_grad(np.asarray(t_logits), lambda x: cross_entropy(x, targets), logits, dy,
               tol=REL_ERR["float32_grad"], max_entries=None, what="dlogits")


def test_cross_entropy_custom_ignore_index_and_poisoned_rows(rng):
    # Ignored rows must neither read their logits (NaN here) nor leave anything but zeros.
    # ignore_index 2 is also a valid class, so rows with target 2 are skipped too.
    N, V = 8, 6
    logits, targets = _case(rng, N, V)
    targets[[1, 4]] = 2
    logits[targets == 2] = np.nan
    t_logits = rl.tensor(logits)
    losses = np.asarray(rl.ops.cross_entropy_forward_backward(t_logits, rl.tensor(targets), ignore_index=2))
    keep = targets != 2
    assert np.all(losses[~keep] == 0.0) and np.all(np.asarray(t_logits)[~keep] == 0.0)
    assert_close(losses[keep], cross_entropy(logits[keep], targets[keep]))
    assert_close(np.asarray(t_logits)[keep], cross_entropy_grad(logits[keep], targets[keep]), what="dlogits")
    # the forward-only path agrees
    fwd = np.asarray(rl.ops.cross_entropy_forward(rl.tensor(logits), rl.tensor(targets), ignore_index=2))
    np.testing.assert_array_equal(fwd, losses)


def test_cross_entropy_all_rows_ignored(rng):
    logits = rng.standard_normal((3, 5)).astype(np.float32)
    targets = np.full(3, -100, np.int32)
    t_logits = rl.tensor(logits)
    losses = rl.ops.cross_entropy_forward_backward(t_logits, rl.tensor(targets))
    assert np.all(np.asarray(losses) == 0.0) and np.all(np.asarray(t_logits) == 0.0)


def test_cross_entropy_bad_inputs():
    logits = rl.zeros([4, 7])
    with pytest.raises(ValueError, match=r"cross_entropy_forward: target 7 at row 2 is outside \[0, 7\)"):
        rl.ops.cross_entropy_forward(logits, rl.tensor(np.array([0, 1, 7, 3], np.int32)))
    with pytest.raises(ValueError, match=r"cross_entropy_forward_backward: target -1 at row 0 is outside"):
        rl.ops.cross_entropy_forward_backward(logits, rl.tensor(np.array([-1, 1, 2, 3], np.int32)))
    with pytest.raises(TypeError, match="cross_entropy_forward: targets must be int32.*int64"):
        rl.ops.cross_entropy_forward(logits, rl.tensor(np.array([0, 1, 2, 3], np.int64)))
    with pytest.raises(ValueError, match=r"targets must have shape \[4\]"):
        rl.ops.cross_entropy_forward(logits, rl.tensor(np.array([0, 1, 2], np.int32)))
    with pytest.raises(ValueError, match="logits must have 2 dimensions"):
        rl.ops.cross_entropy_forward(rl.zeros([2, 2, 7]), rl.tensor(np.array([0, 1], np.int32)))
    with pytest.raises(TypeError, match="CPU implementation takes float32"):
        rl.ops.cross_entropy_forward(rl.zeros([4, 7], dtype="bfloat16"), rl.tensor(np.zeros(4, np.int32)))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cross_entropy_nan_logit_shows_in_its_row(rng, sign):
    # A NaN logit anywhere in a row (NaNs made by inf - inf carry the sign bit) must make
    # that row's loss and gradient NaN, and leave the other rows alone.
    logits, targets = _case(rng, 4, 37)
    logits[2, 11] = np.copysign(np.nan, sign)
    losses = np.asarray(rl.ops.cross_entropy_forward(rl.tensor(logits), rl.tensor(targets)))
    assert np.isnan(losses[2])
    keep = [0, 1, 3]
    assert_close(losses[keep], cross_entropy(logits[keep], targets[keep]))
    t_logits = rl.tensor(logits)
    rl.ops.cross_entropy_forward_backward(t_logits, rl.tensor(targets))
    assert np.all(np.isnan(np.asarray(t_logits)[2]))
    assert np.all(np.isfinite(np.asarray(t_logits)[keep]))
