"""orthonormalize_columns_ (csrc/ops/orthonormalize.h) against a float64 modified
Gram-Schmidt: odd shapes, a zero column, bad input."""
import numpy as np
import pytest

import ringloom as rl
from reference.orthonormalize import orthonormalize_columns
from tolerances import assert_close

SHAPES = [(1, 1), (7, 1), (7, 3), (7, 7), (1001, 4), (37, 5), (20000, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_orthonormalize_matches_reference(rng, shape):
    p = rng.standard_normal(shape).astype(np.float32)
    t = rl.tensor(p)
    rl.ops.orthonormalize_columns_(t)
    q = np.asarray(t).astype(np.float64)
    assert_close(q, orthonormalize_columns(p))
    np.testing.assert_allclose(q.T @ q, np.eye(shape[1]), atol=1e-5)


def test_orthonormalize_keeps_a_zero_column_zero(rng):
    p = rng.standard_normal((50, 3)).astype(np.float32)
    p[:, 1] = 0.0
    t = rl.tensor(p)
    rl.ops.orthonormalize_columns_(t)
    q = np.asarray(t)
    assert np.all(q[:, 1] == 0.0)
    assert_close(q, orthonormalize_columns(p))
    rl.ops.orthonormalize_columns_(z := rl.tensor(np.zeros((4, 2), np.float32)))
    assert np.all(np.asarray(z) == 0.0)


def test_orthonormalize_empty_and_errors():
    rl.ops.orthonormalize_columns_(rl.tensor(np.zeros((0, 3), np.float32)))
    with pytest.raises((TypeError, ValueError), match="orthonormalize_columns_"):
        rl.ops.orthonormalize_columns_(rl.tensor(np.ones(4, np.float32)))
    with pytest.raises((TypeError, ValueError), match="orthonormalize_columns_"):
        rl.ops.orthonormalize_columns_(rl.tensor(np.ones((4, 2), np.float32), dtype="bfloat16"))
