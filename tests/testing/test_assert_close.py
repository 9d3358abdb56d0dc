"""ringloom.testing.assert_close: planted differences are caught with a message that says
where and by how much; each precision's tolerance passes what it should and no more."""
import numpy as np
import pytest

import ringloom as rl
from ringloom.testing import TOLERANCES, assert_close, precision_of, rel_err


class OnlyDLPack:
    """An array that offers nothing but the DLPack protocol (as PyTorch or JAX arrays do)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_equal_inputs_of_every_kind_pass(rng):
    a = rng.standard_normal((5, 7)).astype(np.float32)
    assert_close(a, a.astype(np.float64))
    assert_close(rl.tensor(a), a)
    assert_close(OnlyDLPack(a), rl.tensor(a))
    assert_close(rl.tensor(a, dtype="bfloat16"), a)  # judged as bfloat16
    assert_close(np.arange(6), [0, 1, 2, 3, 4, 5])
    assert_close(np.zeros((0, 3)), np.zeros((0, 3)))


def test_planted_difference_is_located(rng):
    a = rng.standard_normal((4, 6)).astype(np.float32)
    b = a.copy()
    b[2, 5] += 0.5
    with pytest.raises(AssertionError) as e:
        assert_close(b, a, msg="logits")
    text = str(e.value)
    assert text.startswith("logits: 1 of 24 elements")
    assert "(2, 5)" in text and f"{b[2, 5]:.8g}" in text and "5.000e-01" in text


def test_norm_mode_reports_the_relative_error(rng):
    a = rng.standard_normal(1000)
    b = a * (1 + 1e-3)
    with pytest.raises(AssertionError, match=r"relative norm error 1\.000e-03 exceeds 1\.0e-05 \(float32\)"):
        assert_close(b.astype(np.float32), a, norm=True)
    assert abs(rel_err(b, a) - 1e-3) < 1e-9


@pytest.mark.parametrize("precision", ["float32", "float32_grad", "tf32", "bfloat16", "float16", "float64"])
def test_each_tolerance_passes_half_and_fails_double(rng, precision):
    """A wrong tolerance (too loose or too tight) is caught: an error of half the bound passes
    and twice the bound fails, both elementwise and by norm."""
    tol = TOLERANCES[precision]
    e = 1.0 + rng.random(500)                                   # |e| in [1, 2): no near-zero elements
    sign = rng.choice([-1.0, 1.0], e.shape)
    for factor, ok in ((0.5, True), (2.0, False)):
        elementwise = e + sign * factor * (tol.atol + tol.rtol * np.abs(e))
        normwise = e + sign * factor * tol.norm_rtol * np.linalg.norm(e) / np.sqrt(e.size)
        for actual, norm in ((elementwise, False), (normwise, True)):
            if ok:
                assert_close(actual, e, precision=precision, norm=norm)
            else:
                with pytest.raises(AssertionError):
                    assert_close(actual, e, precision=precision, norm=norm)


def test_dtype_picks_the_less_precise_side():
    assert precision_of(np.zeros(2, np.float32)) == "float32"
    assert precision_of(rl.zeros([2], "bfloat16")) == "bfloat16"
    assert precision_of(np.zeros(2, np.int32)) == "int"
    e = np.linspace(1, 2, 64)
    off = e * (1 + 5e-3)          # fine for bf16, far outside float32
    assert_close(rl.tensor(off, dtype="bfloat16"), e)
    with pytest.raises(AssertionError, match="float32"):
        assert_close(off.astype(np.float32), e)


def test_non_finite_values():
    a = np.array([1.0, np.nan, np.inf])
    assert_close(a, a.copy())                        # same non-finite values in the same places
    with pytest.raises(AssertionError, match="non-finite mismatch.*index|non-finite mismatch"):
        assert_close(np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close(np.array([1.0, np.inf]), np.array([1.0, -np.inf]))


def test_shapes_and_integers_exact():
    with pytest.raises(AssertionError, match=r"shapes differ: actual \(3,\), expected \(4,\)"):
        assert_close(np.zeros(3), np.zeros(4))
    with pytest.raises(AssertionError, match="1 of 3 elements"):
        assert_close(np.array([1, 2, 4]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        assert_close(np.zeros(2), np.zeros(2), precision="fp8")
