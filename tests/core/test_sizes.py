"""Sizes that would overflow 64 bits: every shape product is checked (creation, reshape,
narrow0, wrapping foreign memory, layer constructors) and a wrong size is never returned.
Property tests draw dimensions up to 2**63-1 and compare with Python's exact integers."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ringloom as rl
from ringloom import _C

INT64_MAX = 2**63 - 1
ITEMSIZE = {"float32": 4, "bfloat16": 2, "int64": 8, "uint8": 1}


def test_issue_examples():
    with pytest.raises(ValueError, match=r"overflows 64-bit sizes"):
        rl.zeros([2**61 + 1, 8])
    with pytest.raises(ValueError, match=r"reshape to \[4611686018427387905, 4\].*overflows"):
        rl.zeros([4]).reshape([2**62 + 1, 4])
    with pytest.raises(ValueError, match=r"Tensor.empty: shape \[4611686018427387905, 4\]"):
        rl.empty([2**62 + 1, 4])
    with pytest.raises(ValueError, match=r"Tensor.empty: shape \[4611686018427387904, 8\]"):
        _C.layers.Embedding(2**62, 8, 16)
    with pytest.raises(ValueError, match=r"bytes of float32\[4611686018427387904, 1\]"):
        _C.layers.Embedding(2**62, 1, 16)


def test_narrow0_bounds_do_not_wrap():
    t = rl.zeros([4, 2])
    for start, length in [(2**63 - 1, 2), (1, 2**63 - 1), (-1, 1), (0, -1), (3, 2)]:
        with pytest.raises(IndexError, match="narrow0"):
            t.narrow0(start, length)
    assert t.narrow0(4, 0).shape == (0, 2)


def test_layer_sizes_checked():
    with pytest.raises(ValueError, match="BlockConfig: ffn_hidden = 4 n_embd: size 4 x 4611686018427387904 overflows"):
        _C.layers.BlockConfig(2**62, 1)
    cfg = _C.layers.BlockConfig(2**62, 1, 1, 2**62, mlp="swiglu")
    with pytest.raises(ValueError, match="overflows 64-bit sizes"):
        _C.layers.TransformerBlock(cfg)


def test_from_dlpack_zero_strides_with_elements_refused():
    # Stride 0 over 2**40 elements addresses one float: not a dense tensor, whatever its size.
    big = np.broadcast_to(np.zeros(1, np.float32), (2**20, 2**20))
    with pytest.raises((ValueError, BufferError)):
        rl.from_dlpack(big)


dims = st.one_of(st.integers(0, 4), st.integers(2**20, 2**33), st.integers(2**60, INT64_MAX))


@settings(max_examples=300, deadline=None)
@given(shape=st.lists(dims, min_size=1, max_size=4), dtype=st.sampled_from(sorted(ITEMSIZE)))
def test_creation_is_exact_or_refused(shape, dtype):
    exact = int(np.prod([int(d) for d in shape], dtype=object)) * ITEMSIZE[dtype]
    prefix_overflow = any(int(np.prod([int(d) for d in shape[:i + 1]], dtype=object)) > INT64_MAX
                          for i in range(len(shape)))
    if exact > INT64_MAX or prefix_overflow:
        with pytest.raises(ValueError, match="overflows 64-bit sizes"):
            rl.empty(shape, dtype=dtype)
    elif exact <= 1 << 20:
        t = rl.empty(shape, dtype=dtype)
        assert t.nbytes == exact and t.numel() * ITEMSIZE[dtype] == exact


@settings(max_examples=300, deadline=None)
@given(shape=st.lists(st.one_of(dims, st.just(-1)), min_size=1, max_size=4))
def test_reshape_is_exact_or_refused(shape):
    t = rl.zeros([24])
    try:
        r = t.reshape(shape)
    except ValueError:
        return
    assert int(np.prod([int(d) for d in r.shape], dtype=object)) == 24
    assert all(d == -1 or d == rd for d, rd in zip(shape, r.shape))


@settings(max_examples=300, deadline=None)
@given(start=st.integers(-2**63, INT64_MAX), length=st.integers(-2**63, INT64_MAX))
def test_narrow0_is_exact_or_refused(start, length):
    t = rl.tensor(np.arange(12, dtype=np.float32).reshape(6, 2))
    ok = 0 <= start and 0 <= length and start + length <= 6
    if not ok:
        with pytest.raises(IndexError):
            t.narrow0(start, length)
        return
    v = t.narrow0(start, length)
    np.testing.assert_array_equal(np.asarray(v), np.arange(12, dtype=np.float32).reshape(6, 2)[start:start + length])
