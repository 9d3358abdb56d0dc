"""forward_backward(accumulate=False) replaces the gradients instead of adding to them: the
same bits as zero_grad() then forward_backward, for a model whose gradients hold an earlier
step's (both architectures, tied and untied embeddings, every recompute mode); the next
accumulate=True call adds to them again, and a call that raises leaves them zeroed."""
from __future__ import annotations

import numpy as np
import pytest

from ringloom.models import build_model, get_preset


def _config(arch: str, **over):
    if arch == "gpt2":
        return get_preset("tiny", n_layer=2, n_embd=32, n_head=4, vocab_size=67, max_seq_len=32, **over)
    return get_preset("llama-tiny", n_layer=2, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=48, vocab_size=67,
                      max_seq_len=32, **over)


def _batch(seed: int, B: int = 3, T: int = 11):
    rows = np.random.default_rng(seed).integers(0, 67, size=(B, T + 1))
    return rows[:, :-1], rows[:, 1:]


def _grads(model) -> dict[str, np.ndarray]:
    return {n: np.array(p.grad, copy=True) for n, p in model.parameters()}


def _assert_same(a, b, what):
    assert a.keys() == b.keys()
    for n in a:
        assert np.array_equal(a[n], b[n]), f"{what}: gradient of {n} differs"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("mode", ["none", "selective", "full"])
def test_replace_equals_zero_then_accumulate(arch, tied, mode):
    ref = build_model(_config(arch, tie_embeddings=tied, recompute=mode), seed=2)
    new = build_model(_config(arch, tie_embeddings=tied, recompute=mode), seed=2)
    for m in (ref, new):
        m.forward_backward(*_batch(0))  # leaves an earlier step's gradients behind
    ref.zero_grad()
    ref.forward_backward(*_batch(1))
    new.forward_backward(*_batch(1), accumulate=False)
    assert any(np.any(g != 0) for g in _grads(new).values())
    _assert_same(_grads(new), _grads(ref), "replaced")
    # A further micro-batch accumulates onto the replaced gradients.
    ref.forward_backward(*_batch(2))
    new.forward_backward(*_batch(2))
    _assert_same(_grads(new), _grads(ref), "accumulated after replacing")


def test_replace_then_raise_leaves_zeros():
    model = build_model(_config("llama"), seed=4)
    model.forward_backward(*_batch(0))
    ids, tgt = _batch(1)
    model.stage_forward(0, ids, targets=tgt)  # slot 0 is taken: the next call fails inside
    with pytest.raises(Exception, match="slot 0"):
        model.forward_backward(ids, tgt, slot=0, accumulate=False)
    assert all(not np.any(g) for g in _grads(model).values())
    # No layer is left set to replace: the next call accumulates onto the zeros.
    fresh = build_model(_config("llama"), seed=4)
    model.forward_backward(*_batch(2))
    fresh.forward_backward(*_batch(2))
    _assert_same(_grads(model), _grads(fresh), "after the failed call")
