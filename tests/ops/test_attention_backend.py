"""The attention backend setting (ops.set_attention_backend: ours | cudnn | auto) on the CPU:
names are validated, the setting round-trips, and the CPU op ignores it. The cuDNN backend
itself: tests/gpu/test_attention_cudnn_gpu.py."""
import numpy as np
import pytest

import ringloom as rl

ops = rl._C.ops


@pytest.fixture
def restore():
    before = ops.get_attention_backend()
    yield
    ops.set_attention_backend(before)


@pytest.mark.parametrize("name", ["ours", "cudnn", "auto"])
def test_backend_setting_round_trips(name, restore):
    ops.set_attention_backend(name)
    assert ops.get_attention_backend() == name


@pytest.mark.parametrize("name", ["", "flash", "CUDNN", "torch"])
def test_unknown_backend_is_refused(name, restore):
    with pytest.raises(ValueError, match='"ours", "cudnn" or "auto"'):
        ops.set_attention_backend(name)


def test_cpu_attention_ignores_the_backend(rng, restore):
    qkv = rl.tensor(rng.standard_normal((2, 11, 4, 16)).astype(np.float32))
    ops.set_attention_backend("ours")
    out1, lse1 = ops.attention_forward(qkv, 2, 1, True)
    ops.set_attention_backend("cudnn")
    out2, lse2 = ops.attention_forward(qkv, 2, 1, True)
    np.testing.assert_array_equal(np.asarray(out1), np.asarray(out2))
    np.testing.assert_array_equal(np.asarray(lse1), np.asarray(lse2))


def test_cudnn_built_only_with_cuda():
    if not rl._C.has_cuda_build:
        assert ops.cudnn_attention_built() is False


def test_auto_choice_comes_from_the_candidates():
    """auto's table names a built candidate for every shape and direction; shapes it has no
    row for (another head dim) run ours."""
    cands = list(ops.attention_backend_candidates())
    assert cands[0] == "ours"
    assert ("cudnn" in cands) == ops.cudnn_attention_built()
    for D in (64, 128):
        for causal in (True, False):
            for T in (1, 100, 1024, 5000, 1 << 20):
                for backward in (False, True):
                    assert ops.attention_auto_choice(D, causal, T, backward) in cands
    assert ops.attention_auto_choice(96, True, 1024, False) == "ours"
    assert ops.attention_auto_choice(32, False, 1024, True) == "ours"
