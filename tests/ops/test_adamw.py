import ml_dtypes
import numpy as np
import pytest

import ringloom as rl
from reference.adamw import adamw_step, grad_norm
from tolerances import assert_close, rel_err

SHAPES = [(7, 13), (5,), (1,), (3, 4, 3), (40000,)]  # the last one is past the kernel's OpenMP threshold
WD = [0.1, 0.0, 0.5, 0.01, 0.2]
HP = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8)


def _state(rng, shapes=SHAPES):
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    m = [np.zeros(s, np.float32) for s in shapes]
    v = [np.zeros(s, np.float32) for s in shapes]
    return params, m, v


def _tensors(arrays):
    return [rl.tensor(a) for a in arrays]


def _arrays(tensors):
    return [np.array(t) for t in tensors]


def test_adamw_several_steps_match_reference(rng):
    params, m, v = _state(rng)
    tp, tm, tv = _tensors(params), _tensors(m), _tensors(v)
    for step in range(1, 6):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        before = _arrays(tp), _arrays(tm), _arrays(tv)
        rl.ops.adamw_step(tp, _tensors(grads), tm, tv, WD, step=step, **HP)
        ref_p, ref_m, ref_v = adamw_step(*before[:1], grads, *before[1:], WD, step=step, **HP)
        for i in range(len(params)):
            assert_close(np.asarray(tp[i]), ref_p[i], what=f"param {i} at step {step}")
            assert_close(np.asarray(tm[i]), ref_m[i], what=f"m {i} at step {step}")
            assert_close(np.asarray(tv[i]), ref_v[i], what=f"v {i} at step {step}")


def test_adamw_weight_decay_is_per_tensor_and_decoupled(rng):
    # Zero gradients: m = v = 0 stay zero and the only change is p -= lr * wd * p, tensor by tensor.
    params = [rng.standard_normal(s).astype(np.float32) for s in [(3, 5), (4,)]]
    tp = _tensors(params)
    zeros = [np.zeros_like(p) for p in params]
    rl.ops.adamw_step(tp, _tensors(zeros), _tensors(zeros), _tensors(zeros), [0.3, 0.0], step=1, **HP)
    assert_close(np.asarray(tp[0]), params[0] * (1 - HP["lr"] * 0.3))
    np.testing.assert_array_equal(np.asarray(tp[1]), params[1])


@pytest.mark.parametrize("step", [1, 5])
def test_adamw_bias_correction(rng, step):
    params, m, v = _state(rng, [(6, 7)])
    m = [0.1 * rng.standard_normal((6, 7)).astype(np.float32)]
    v = [0.1 * rng.random((6, 7)).astype(np.float32)]
    grads = [rng.standard_normal((6, 7)).astype(np.float32)]
    tp = _tensors(params)
    rl.ops.adamw_step(tp, _tensors(grads), _tensors(m), _tensors(v), [0.0], step=step, **HP)
    ref_p = adamw_step(params, grads, m, v, [0.0], step=step, **HP)[0][0]
    assert_close(np.asarray(tp[0]), ref_p)
    other = 3 if step == 1 else 1  # a different step gives a measurably different result
    wrong = adamw_step(params, grads, m, v, [0.0], step=other, **HP)[0][0]
    assert np.max(np.abs(np.asarray(tp[0]) - wrong)) > 1e-4


def test_adamw_first_step_moves_by_lr_times_sign(rng):
    # At step 1 from m = v = 0 the bias corrections give mhat = g, vhat = g^2: each entry moves
    # by lr * g / (|g| + eps), i.e. lr against the sign of its gradient.
    params, m, v = _state(rng, [(9, 11)])
    grads = [rng.standard_normal((9, 11)).astype(np.float32)]
    tp = _tensors(params)
    rl.ops.adamw_step(tp, _tensors(grads), _tensors(m), _tensors(v), [0.0], step=1, **HP)
    np.testing.assert_allclose(np.asarray(tp[0]) - params[0], -HP["lr"] * np.sign(grads[0]), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("active", [True, False])
def test_adamw_clipping(rng, active):
    params, m, v = _state(rng, [(7, 13), (5,)])
    m = [0.1 * rng.standard_normal(p.shape).astype(np.float32) for p in params]
    v = [0.1 * rng.random(p.shape).astype(np.float32) for p in params]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    tg = _tensors(grads)
    norm_t = rl.ops.grad_norm(tg)
    norm = float(np.asarray(norm_t)[0])
    max_norm = 0.25 * norm if active else 4.0 * norm
    tp, tm, tv = _tensors(params), _tensors(m), _tensors(v)
    rl.ops.adamw_step(tp, tg, tm, tv, [0.1, 0.0], step=3, max_norm=max_norm, grad_norm=norm_t, **HP)
    ref_p, ref_m, _ = adamw_step(params, grads, m, v, [0.1, 0.0], step=3, max_norm=max_norm, **HP)
    for i in range(2):
        assert_close(np.asarray(tp[i]), ref_p[i], what=f"param {i}")
        assert_close(np.asarray(tm[i]), ref_m[i], what=f"m {i}")
    unclipped_m = adamw_step(params, grads, m, v, [0.1, 0.0], step=3, **HP)[1][0]
    assert (rel_err(np.asarray(tm[0]), unclipped_m) > 1e-2) == active


def test_adamw_clip_reads_the_given_norm_tensor(rng):
    # The norm comes from the tensor (on the device, no host sync), not from the grads.
    params, m, v = _state(rng, [(4, 6)])
    grads = [rng.standard_normal((4, 6)).astype(np.float32)]
    fake_norm = 10.0 * grad_norm(grads)
    tm = _tensors(m)
    rl.ops.adamw_step(_tensors(params), _tensors(grads), tm, _tensors(v), [0.0], step=2, max_norm=1.0,
                      grad_norm=rl.tensor(np.array([fake_norm], np.float32)), **HP)
    ref_m = adamw_step(params, grads, m, v, [0.0], step=2, max_norm=1.0, norm=fake_norm, **HP)[1][0]
    assert_close(np.asarray(tm[0]), ref_m)


def test_grad_norm_matches_reference(rng):
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    out = rl.ops.grad_norm(_tensors(grads))
    assert tuple(out.shape) == (1,)
    assert_close(np.asarray(out), [grad_norm(grads)])
    assert_close(np.asarray(rl.ops.grad_norm(_tensors(grads[1:2]))), [grad_norm(grads[1:2])])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_adamw_compute_copy(rng, dtype):
    params, m, v = _state(rng)
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    compute = [rl.tensor(np.full(p.shape, np.nan, np.float32), dtype=dtype) for p in params]  # poisoned
    tp = _tensors(params)
    rl.ops.adamw_step(tp, _tensors(grads), _tensors(m), _tensors(v), WD, step=1, compute=compute, **HP)
    for p, c in zip(tp, compute):
        p = np.asarray(p)
        c = np.asarray(c)
        if dtype == "float32":
            np.testing.assert_array_equal(c, p)
        else:  # round to nearest even, bit for bit
            np.testing.assert_array_equal(c.view(np.uint16), p.astype(ml_dtypes.bfloat16).view(np.uint16))


def test_adamw_bad_inputs():
    p, g, m, v = (rl.zeros([3]) for _ in range(4))
    with pytest.raises(ValueError, match=r"adamw_step: params \(1\), grads \(2\).* must have the same length"):
        rl.ops.adamw_step([p], [g, g], [m], [v], [0.0], lr=1e-3)
    with pytest.raises(ValueError, match=r"weight_decay \(2\) must have the same length"):
        rl.ops.adamw_step([p], [g], [m], [v], [0.0, 0.1], lr=1e-3)
    with pytest.raises(ValueError, match="adamw_step: step must be >= 1 .*got 0"):
        rl.ops.adamw_step([p], [g], [m], [v], [0.0], lr=1e-3, step=0)
    with pytest.raises(ValueError, match="compute must be empty or have 1 tensors, got 2"):
        rl.ops.adamw_step([p], [g], [m], [v], [0.0], lr=1e-3, compute=[p, p])
    with pytest.raises(ValueError, match=r"grad/m/v of params\[0\] .* differ in shape"):
        rl.ops.adamw_step([p], [rl.zeros([4])], [m], [v], [0.0], lr=1e-3)
    with pytest.raises(TypeError, match="compute must be float32 or bfloat16.*int32"):
        rl.ops.adamw_step([p], [g], [m], [v], [0.0], lr=1e-3, compute=[rl.zeros([3], dtype="int32")])
    with pytest.raises(ValueError, match="grad_norm is an undefined tensor"):
        rl.ops.adamw_step([p], [g], [m], [v], [0.0], lr=1e-3, max_norm=1.0)
    with pytest.raises(ValueError, match="grad_norm must be a 1-element tensor"):
        rl.ops.adamw_step([p], [g], [m], [v], [0.0], lr=1e-3, max_norm=1.0, grad_norm=rl.zeros([2]))
    with pytest.raises(ValueError, match=r"beta1 and beta2 must be in \[0, 1\), got beta1=1"):
        rl.ops.adamw_step([p], [g], [m], [v], [0.0], lr=1e-3, beta1=1.0)
    with pytest.raises(ValueError, match="grad_norm: needs at least one tensor"):
        rl.ops.grad_norm([])
    with pytest.raises(TypeError, match="CPU implementation takes float32"):
        rl.ops.grad_norm([rl.zeros([3], dtype="bfloat16")])
