import numpy as np
import pytest

import ringloom as rl
from tolerances import assert_close

SHAPES = [(1,), (7,), (3, 37), (2, 5, 129), (33, 1000)]


@pytest.mark.parametrize("shape", SHAPES)
def test_add(rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)
    ta = rl.tensor(a)
    out = rl.ops.add(ta, rl.tensor(b))
    assert tuple(out.shape) == shape and not out.shares_memory(ta)
    assert_close(np.asarray(out), a.astype(np.float64) + b)
    np.testing.assert_array_equal(np.asarray(ta), a)  # inputs untouched


@pytest.mark.parametrize("shape", SHAPES)
def test_add_inplace(rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)
    ta, tb = rl.tensor(a), rl.tensor(b)
    rl.ops.add_(ta, tb)
    rl.ops.add_(ta, tb)  # residual accumulation, twice
    assert_close(np.asarray(ta), a.astype(np.float64) + 2 * b.astype(np.float64))
    np.testing.assert_array_equal(np.asarray(tb), b)
    rl.ops.add_(tb, tb)  # aliasing: b += b
    assert_close(np.asarray(tb), 2 * b.astype(np.float64))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("s", [-2.5, 0.0, 1e-3])
def test_scale_inplace(rng, shape, s):
    a = rng.standard_normal(shape).astype(np.float32)
    ta = rl.tensor(a)
    rl.ops.scale_(ta, s)
    assert_close(np.asarray(ta), a.astype(np.float64) * np.float32(s))


def test_inplace_ops_on_views_stay_inside_them(rng):
    # In-place ops on a view (rows 2..4 of a larger tensor) must honour its offset and length:
    # the poisoned rows around it stay NaN and the view's rows come out right.
    base = np.full((9, 13), np.nan, np.float32)
    a = rng.standard_normal((3, 13)).astype(np.float32)
    b = rng.standard_normal((3, 13)).astype(np.float32)
    base[2:5] = a
    t = rl.tensor(base)
    view = t.narrow0(2, 3)
    rl.ops.add_(view, rl.tensor(b))
    rl.ops.scale_(view, -3.0)
    out = np.asarray(t)
    assert np.all(np.isnan(out[:2])) and np.all(np.isnan(out[5:]))
    assert_close(out[2:5], (a.astype(np.float64) + b) * -3.0)
    assert_close(np.asarray(rl.ops.add(view, view)), 2 * out[2:5].astype(np.float64))


def test_elementwise_bad_inputs():
    a = rl.zeros([4, 3])
    with pytest.raises(ValueError, match=r"add: b must have shape \[4, 3\], got float32\[3, 4\]"):
        rl.ops.add(a, rl.zeros([3, 4]))
    with pytest.raises(ValueError, match=r"add_: b must have shape \[4, 3\], got float32\[12\]"):
        rl.ops.add_(a, rl.zeros([12]))
    with pytest.raises(TypeError, match=r"add: b \(bfloat16.*\) and a \(float32.*\) have different dtypes"):
        rl.ops.add(a, rl.zeros([4, 3], dtype="bfloat16"))
    with pytest.raises(TypeError, match="add: a must be float32 or bfloat16, got int32"):
        rl.ops.add(rl.zeros([2], dtype="int32"), rl.zeros([2], dtype="int32"))
    bf = "bfloat16"
    with pytest.raises(TypeError, match="add: the CPU implementation takes float32; a is bfloat16"):
        rl.ops.add(rl.zeros([2], dtype=bf), rl.zeros([2], dtype=bf))
    with pytest.raises(TypeError, match="add_: the CPU implementation takes float32; a is bfloat16"):
        rl.ops.add_(rl.zeros([2], dtype=bf), rl.zeros([2], dtype=bf))
    with pytest.raises(TypeError, match="scale_: the CPU implementation takes float32; a is bfloat16"):
        rl.ops.scale_(rl.zeros([3], dtype=bf), 2.0)
    with pytest.raises(TypeError, match="scale_: a must be float32 or bfloat16, got int64"):
        rl.ops.scale_(rl.zeros([3], dtype="int64"), 2.0)
