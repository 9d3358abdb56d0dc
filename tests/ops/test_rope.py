import numpy as np
import pytest

import ringloom as rl
from gradcheck import check_grad
from reference.rope import rope
from tolerances import REL_ERR, assert_close

# (B, T, H, D, n_rot_heads); the last case is large enough for the threaded path.
SHAPES = [(1, 1, 1, 2, 1), (2, 7, 3, 6, 2), (1, 33, 4, 10, 4), (3, 5, 5, 64, 3), (2, 67, 4, 66, 4)]


def _apply(fn, x, n_rot, base, pos_offset):
    """Runs the in-place op on a copy of x and returns the result as NumPy."""
    t = rl.tensor(x)
    fn(t, n_rot, base, pos_offset)
    return np.asarray(t)


@pytest.mark.parametrize("B,T,H,D,n_rot", SHAPES)
@pytest.mark.parametrize("base,pos_offset", [(10000.0, 0), (500000.0, 37)])
def test_rope_values_and_grad(rng, B, T, H, D, n_rot, base, pos_offset):
    x = rng.standard_normal((B, T, H, D)).astype(np.float32)
    y = _apply(rl.ops.rope_forward, x, n_rot, base, pos_offset)
    assert_close(y, rope(x, n_rot, base, pos_offset))
    np.testing.assert_array_equal(y[:, :, n_rot:], x[:, :, n_rot:])  # other heads untouched

    # The forward is linear, y = R x, so its input gradient is R^T dy: the backward.
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = _apply(rl.ops.rope_backward, dy, n_rot, base, pos_offset)
    check_grad(dx, lambda xx: rope(xx, n_rot, base, pos_offset), x, dy, tol=REL_ERR["float32_grad"], rng=rng,
               what="dx")


def test_rope_backward_inverts_forward(rng):
    x = rng.standard_normal((2, 9, 3, 14)).astype(np.float32)
    t = rl.tensor(x)
    rl.ops.rope_forward(t, 3, 10000.0, 5)
    assert not np.allclose(np.asarray(t), x)
    rl.ops.rope_backward(t, 3, 10000.0, 5)
    assert_close(np.asarray(t), x)


def test_rope_pos_offset_is_a_row_of_the_full_rotation(rng):
    # Generating token p with a cache rotates a length-1 sequence at pos_offset = p; that must
    # equal row p of rotating the whole sequence at once.
    B, T, H, D = 2, 23, 3, 12
    x = rng.standard_normal((B, T, H, D)).astype(np.float32)
    full = _apply(rl.ops.rope_forward, x, 2, 10000.0, 0)
    for p in (0, 1, 13, T - 1):
        one = _apply(rl.ops.rope_forward, x[:, p:p + 1], 2, 10000.0, p)
        np.testing.assert_allclose(one[:, 0], full[:, p], rtol=1e-6, atol=1e-6)


def test_rope_large_positions(rng):
    # Angles up to ~1e6 rad: only an angle formed in double keeps cos/sin at fp32 accuracy.
    x = rng.standard_normal((1, 4, 2, 32)).astype(np.float32)
    for pos_offset in (65536, 1_000_000):
        y = _apply(rl.ops.rope_forward, x, 2, 10000.0, pos_offset)
        assert_close(y, rope(x, 2, 10000.0, pos_offset), what=f"pos_offset={pos_offset}")


def test_rope_leaves_other_heads_alone(rng):
    # Heads past n_rot_heads are poisoned: they must stay NaN, and must not leak into the rest.
    x = rng.standard_normal((2, 5, 4, 8)).astype(np.float32)
    x[:, :, 1:] = np.nan
    y = _apply(rl.ops.rope_forward, x, 1, 10000.0, 3)
    assert np.all(np.isnan(y[:, :, 1:]))
    assert_close(y[:, :, :1], rope(x[:, :, :1], 1, 10000.0, 3))
    # In place on a view (batches 1..2 of 4): the batches around it stay poisoned.
    big = np.full((4, 5, 2, 8), np.nan, np.float32)
    big[1:3] = rng.standard_normal((2, 5, 2, 8))
    t = rl.tensor(big)
    view = t.narrow0(1, 2)
    rl.ops.rope_forward(view, 2, 10000.0, 0)
    out = np.asarray(t)
    assert np.all(np.isnan(out[0])) and np.all(np.isnan(out[3]))
    assert_close(out[1:3], rope(big[1:3], 2, 10000.0, 0))
    # n_rot_heads = 0 is a no-op.
    z = rng.standard_normal((1, 3, 2, 4)).astype(np.float32)
    np.testing.assert_array_equal(_apply(rl.ops.rope_backward, z, 0, 10000.0, 0), z)


def test_rope_bad_inputs():
    x = rl.zeros([1, 4, 2, 6])
    with pytest.raises(ValueError, match=r"rope_forward: head dim must be even, got float32\[1, 4, 2, 5\]"):
        rl.ops.rope_forward(rl.zeros([1, 4, 2, 5]), 2)
    with pytest.raises(ValueError, match=r"rope_backward: x must have 4 dimensions, got float32\[4, 2, 6\]"):
        rl.ops.rope_backward(rl.zeros([4, 2, 6]), 2)
    for n in (3, -1):
        with pytest.raises(ValueError, match=rf"rope_forward: n_rot_heads {n} out of range for float32\[1, 4, 2, 6\]"):
            rl.ops.rope_forward(x, n)
    for base in (0.0, -10000.0):
        with pytest.raises(ValueError, match="rope_forward: base must be finite and positive"):
            rl.ops.rope_forward(x, 2, base)
    with pytest.raises(ValueError, match="rope_backward: pos_offset must be >= 0, got -1"):
        rl.ops.rope_backward(x, 2, 10000.0, -1)
    with pytest.raises(TypeError, match="rope_forward: x must be float32 or bfloat16, got int32"):
        rl.ops.rope_forward(rl.zeros([1, 4, 2, 6], dtype="int32"), 2)
    with pytest.raises(TypeError, match="rope_forward: the CPU implementation takes float32; x is bfloat16"):
        rl.ops.rope_forward(rl.zeros([1, 4, 2, 6], dtype="bfloat16"), 2)
