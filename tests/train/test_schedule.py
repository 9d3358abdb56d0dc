import math

import pytest

from ringloom.optim import LRSchedule, constant, linear_decay, warmup_cosine


def test_warmup_is_linear_then_cosine_reaches_min():
    s = warmup_cosine(1.0, total=110, warmup=10, min_lr=0.1)
    assert s(0) == pytest.approx(0.1)
    assert s(4) == pytest.approx(0.5)
    assert s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0)
    mid = 10 + 50
    assert s(mid) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s(110) == pytest.approx(0.1)
    assert s(500) == pytest.approx(0.1)  # stays at min_lr past the end
    lrs = [s(i) for i in range(10, 111)]
    assert all(a >= b - 1e-12 for a, b in zip(lrs, lrs[1:])), "cosine decay must be monotone"


def test_linear_and_constant():
    s = linear_decay(2.0, total=4, min_lr=0.0)
    assert [s(i) for i in range(5)] == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
    assert constant(0.3)(1000) == pytest.approx(0.3)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="unknown LR schedule 'exp'"):
        LRSchedule("exp", 1.0, 10)
    with pytest.raises(ValueError, match="learning rates must be >= 0"):
        warmup_cosine(-1.0, 10)
