"""Values at the edges of what the ops accept: empty dimensions give the mathematically
right (empty, zero or bias-only) result, and non-finite hyper-parameters are refused
like NaN rather than turning the weights into inf."""
from __future__ import annotations

import math

import numpy as np
import pytest

import ringloom as rl

o = rl.ops
z = lambda *s: rl.zeros(list(s))  # noqa: E731


def arr(t) -> np.ndarray:
    return np.asarray(t)


@pytest.mark.parametrize("lead", [(3,), (2, 3), (0,)])
def test_matmul_with_empty_inner_dimension(lead):
    bias = np.array([1.5, -2.0], np.float32)
    y = o.matmul_forward(z(*lead, 0), z(2, 0), rl.tensor(bias))
    np.testing.assert_array_equal(arr(y), np.broadcast_to(bias, (*lead, 2)))
    np.testing.assert_array_equal(arr(o.matmul_forward(z(*lead, 0), z(2, 0))), np.zeros((*lead, 2), np.float32))


def test_matmul_backward_with_empty_dimensions():
    np.testing.assert_array_equal(arr(o.matmul_backward_input(z(4, 0), z(0, 3))), np.zeros((4, 3)))
    assert o.matmul_backward_input(z(4, 2), z(2, 0)).shape == (4, 0)
    dw, db = rl.tensor(np.ones((2, 3), np.float32)), rl.tensor(np.ones(2, np.float32))
    o.matmul_backward_weight(z(0, 2), z(0, 3), dw, db, False)  # no rows: the gradients are zero
    assert not arr(dw).any() and not arr(db).any()
    dw = rl.tensor(np.ones((2, 0), np.float32))
    o.matmul_backward_weight(z(4, 2), z(4, 0), dw, None, True)
    assert dw.shape == (2, 0)


def test_empty_batches_through_every_op():
    assert o.gelu_forward(z(0, 4)).shape == (0, 4)
    assert o.swiglu_forward(z(3, 0)).shape == (3, 0)
    assert o.swiglu_backward(z(3, 0), z(3, 0)).shape == (3, 0)
    assert [t.shape for t in o.layernorm_forward(z(0, 4), z(4), z(4))] == [(0, 4), (0,), (0,)]
    assert [t.shape for t in o.rmsnorm_forward(z(0, 4), z(4))] == [(0, 4), (0,)]
    assert o.cross_entropy_forward(z(0, 5), rl.zeros([0], dtype="int32")).shape == (0,)
    assert o.embedding_forward(rl.zeros([2, 0], dtype="int32"), z(5, 4), z(8, 4)).shape == (2, 0, 4)
    out, lse = o.attention_forward(z(1, 0, 6, 4), 2, 2)
    assert out.shape == (1, 0, 2, 4) and lse.shape == (1, 2, 0)
    o.rope_forward(z(1, 0, 2, 4), 2)
    o.adamw_step([z(0)], [z(0)], [z(0)], [z(0)], [0.1], lr=1e-3)
    assert arr(o.grad_norm([z(0)])).tolist() == [0.0]


@pytest.mark.parametrize("op", ["layernorm", "rmsnorm"])
def test_normalizing_over_nothing_is_refused(op):
    with pytest.raises(ValueError, match="empty last dimension: nothing to normalize over"):
        if op == "layernorm":
            o.layernorm_forward(z(3, 0), z(0), z(0))
        else:
            o.rmsnorm_forward(z(3, 0), z(0))


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("name", ["lr", "eps", "beta1", "beta2"])
def test_adamw_refuses_non_finite_hyper_parameters(name, value):
    p = rl.tensor(np.ones(3, np.float32))
    kw = {"lr": 1e-3, name: value}
    with pytest.raises(ValueError, match=f"adamw_step: .*{name}"):
        o.adamw_step([p], [z(3)], [z(3)], [z(3)], [0.0], **kw)
    np.testing.assert_array_equal(arr(p), np.ones(3))
    if name != "eps":
        with pytest.raises(ValueError, match=f"adamw_write_scalars: .*{name}"):
            o.adamw_write_scalars(z(3), **{k: v for k, v in kw.items()})


def test_adamw_refuses_non_finite_weight_decay_and_nan_max_norm():
    with pytest.raises(ValueError, match=r"weight_decay\[0\] must be finite"):
        o.adamw_step([z(3)], [z(3)], [z(3)], [z(3)], [math.inf], lr=1e-3)
    with pytest.raises(ValueError, match="max_norm is NaN"):
        o.adamw_step([z(3)], [z(3)], [z(3)], [z(3)], [0.0], lr=1e-3, max_norm=math.nan)


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_other_non_finite_scalars_refused(value):
    with pytest.raises(ValueError, match="eps must be finite"):
        o.layernorm_forward(z(2, 3), z(3), z(3), eps=value)
    with pytest.raises(ValueError, match="eps must be finite"):
        o.rmsnorm_forward(z(2, 3), z(3), eps=value)
    with pytest.raises(ValueError, match="base must be finite"):
        o.rope_forward(z(1, 2, 2, 4), 2, base=value)
    with pytest.raises(ValueError, match="scale must be finite"):
        o.attention_forward(z(1, 2, 6, 4), 2, 2, scale=value)
    with pytest.raises(ValueError, match="grad_scale must be finite"):
        o.cross_entropy_forward_backward(z(2, 5), rl.zeros([2], dtype="int32"), grad_scale=value)


def test_dlpack_accepts_empty_and_size_one_strides():
    for a in (np.zeros(0, np.int64), np.zeros((0, 5), np.float32), np.zeros((3, 0), np.int32),
              np.zeros((4, 1), np.float32)[:, :1], np.zeros((1, 4), np.float32)[:1],
              np.broadcast_to(np.zeros(1, np.float32), (0, 4)), np.array(2.5, np.float32)):
        t = rl.from_dlpack(a)
        assert t.shape == a.shape and t.numel() == a.size
        np.testing.assert_array_equal(arr(t), a)
