import numpy as np
import pytest

import ringloom as rl
from gradcheck import check_grad
from reference.matmul import linear
from tolerances import REL_ERR, assert_close


@pytest.mark.parametrize("lead,K,N", [((1,), 1, 1), ((7,), 13, 5), ((3, 5), 33, 17), ((2, 9), 64, 70)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matmul_values_and_grads(rng, lead, K, N, with_bias):
    x = rng.standard_normal((*lead, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32) if with_bias else None
    y = rl.ops.matmul_forward(rl.tensor(x), rl.tensor(w), rl.tensor(b) if with_bias else None)
    assert_close(np.asarray(y), linear(x, w, b))

    dy = rng.standard_normal((*lead, N)).astype(np.float32)
    dx = rl.ops.matmul_backward_input(rl.tensor(dy), rl.tensor(w))
    dw = rl.tensor(np.full((N, K), np.nan, np.float32))  # poisoned: accumulate=False must overwrite
    db = rl.tensor(np.full(N, np.nan, np.float32)) if with_bias else None
    rl.ops.matmul_backward_weight(rl.tensor(dy), rl.tensor(x), dw, db, accumulate=False)
    tol = REL_ERR["float32_grad"]
    check_grad(np.asarray(dx), lambda xx: linear(xx, w, b), x, dy, tol=tol, what="dx")
    check_grad(np.asarray(dw), lambda ww: linear(x, ww, b), w, dy, tol=tol, what="dw")
    if with_bias:
        check_grad(np.asarray(db), lambda bb: linear(x, w, bb), b, dy, tol=tol, what="db")


def test_matmul_backward_weight_accumulates(rng):
    x = rng.standard_normal((6, 4)).astype(np.float32)
    dy = rng.standard_normal((6, 3)).astype(np.float32)
    dw0 = rng.standard_normal((3, 4)).astype(np.float32)
    dw = rl.tensor(dw0)
    rl.ops.matmul_backward_weight(rl.tensor(dy), rl.tensor(x), dw)
    assert_close(np.asarray(dw), dw0 + dy.T.astype(np.float64) @ x)


def test_matmul_bad_inputs():
    x = rl.zeros([4, 5])
    with pytest.raises(ValueError, match=r"matmul_forward: last dim of x .*\[4, 5\].*w .*\[3, 6\]"):
        rl.ops.matmul_forward(x, rl.zeros([3, 6]))
    with pytest.raises(TypeError, match="matmul_forward: .*int32"):
        rl.ops.matmul_forward(rl.zeros([4, 5], dtype="int32"), rl.zeros([3, 5]))
    with pytest.raises(ValueError, match="bias must have shape"):
        rl.ops.matmul_forward(x, rl.zeros([3, 5]), rl.zeros([4]))
