"""The CPU ops' thread count: ringloom.set_num_threads / get_num_threads, the trainer's
--threads choice, and that results do not depend on it."""
from __future__ import annotations

import os

import numpy as np
import pytest

import ringloom as rl
from ringloom.cli import main
from ringloom.train.setup import cpu_threads
from tolerances import assert_close


@pytest.fixture
def restore_threads():
    saved = rl.get_num_threads()
    yield
    rl.set_num_threads(saved)


def test_set_and_get(restore_threads):
    for n in (1, 3, 1):
        rl.set_num_threads(n)
        assert rl.get_num_threads() == n


def test_bad_count(restore_threads):
    with pytest.raises(ValueError, match="set_num_threads: n must be at least 1, got 0"):
        rl.set_num_threads(0)
    with pytest.raises(ValueError, match="got -2"):
        rl.set_num_threads(-2)


def test_absurd_count_refused_not_fatal(restore_threads):
    # libgomp exits the process when it cannot create the threads; refused before that.
    before = rl.get_num_threads()
    for n in (5000, 2**31 - 1):
        with pytest.raises(ValueError, match=f"set_num_threads: n={n} exceeds the limit of"):
            rl.set_num_threads(n)
    assert rl.get_num_threads() == before
    cores = os.cpu_count() or 1
    limit = max(64, 4 * cores)
    rl.set_num_threads(limit)  # the limit itself is allowed
    assert rl.get_num_threads() == limit
    with pytest.raises(ValueError, match=f"limit of {limit} threads"):
        rl.set_num_threads(limit + 1)


def test_ops_agree_across_thread_counts(rng, restore_threads):
    # Sizes above the OpenMP thresholds, so the threaded paths run. Elementwise ops give
    # identical bits on any thread count; a GEMM may split its work differently.
    x = rng.standard_normal((67, 517)).astype(np.float32)
    w = rng.standard_normal((131, 517)).astype(np.float32)
    g = (rng.standard_normal((129, 257)) * 3).astype(np.float32)
    mm, act = {}, {}
    for n in (1, 2):
        rl.set_num_threads(n)
        mm[n] = np.asarray(rl.ops.matmul_forward(rl.tensor(x), rl.tensor(w))).copy()
        act[n] = np.asarray(rl.ops.gelu_backward(rl.tensor(g), rl.tensor(g))).copy()
    assert_close(mm[2], mm[1], what="matmul on 2 threads vs 1")
    np.testing.assert_array_equal(act[2], act[1])


def test_trainer_choice():
    assert cpu_threads(3) == 3
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cpu_threads(0) in (1, cores)


def test_cli_rejects_negative_threads(capsys):
    assert main(["train", "--threads", "-1"]) == 2
    assert "--threads: must be at least 0, got -1" in capsys.readouterr().err
