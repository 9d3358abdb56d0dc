"""Activation recomputation changes memory, not results: with recompute "selective" or
"full" every loss and gradient is bit-identical to recompute "none" on the CPU, through the
whole-model step and through the split backward (input half, then weight half, several
micro-batches in flight) that pipeline schedules drive."""
from __future__ import annotations

import numpy as np
import pytest

from ringloom.models import build_model, get_preset

MODES = ("selective", "full")


def _config(arch: str, recompute: str = "none"):
    if arch == "gpt2":
        return get_preset("tiny", n_layer=3, n_embd=48, n_head=4, vocab_size=67, max_seq_len=32, recompute=recompute)
    return get_preset("llama-tiny", n_layer=3, n_embd=48, n_head=4, n_kv_head=2, ffn_hidden=80, vocab_size=67,
                      max_seq_len=32, recompute=recompute)


def _batch(seed: int, B: int = 3, T: int = 13):
    g = np.random.default_rng(seed)
    rows = g.integers(0, 67, size=(B, T + 1))
    return rows[:, :-1], rows[:, 1:]


def _grads(model) -> dict[str, np.ndarray]:
    return {n: np.array(p.grad, copy=True) for n, p in model.parameters()}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("mode", MODES)
def test_forward_backward_bit_equal(arch, mode):
    ref = build_model(_config(arch), seed=1)
    rec = build_model(_config(arch, mode), seed=1)
    assert rec.recompute == mode and ref.recompute == "none"
    for k in range(2):   # two accumulated micro-batches
        ids, tgt = _batch(k)
        assert ref.forward_backward(ids, tgt, grad_scale=0.01) == rec.forward_backward(ids, tgt, grad_scale=0.01)
    a, b = _grads(ref), _grads(rec)
    for name in a:
        assert np.array_equal(a[name], b[name]), f"{arch}/{mode}: gradient of {name} differs"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("mode", MODES)
def test_split_backward_with_slots_in_flight_bit_equal(arch, mode):
    """Zero-bubble order: forwards of two micro-batches, then both input halves, then the
    weight halves in the opposite order."""
    outs = {}
    for m in ("none", mode):
        model = build_model(_config(arch), seed=2)
        model.recompute = m
        losses = []
        for slot in (0, 1):
            ids, tgt = _batch(10 + slot)
            losses.append(np.array(model.stage_forward(slot, ids, targets=tgt, grad_scale=0.02)))
        dx = [model.stage_backward_input(slot) for slot in (0, 1)]
        for slot in (1, 0):
            model.stage_backward_weight(slot)
        assert all(not layer.slots() for layer in model.layers())
        outs[m] = (losses, _grads(model), dx)
    (la, ga, _), (lb, gb, _) = outs["none"], outs[mode]
    for x, y in zip(la, lb):
        assert np.array_equal(x, y)
    for name in ga:
        assert np.array_equal(ga[name], gb[name]), f"{arch}/{mode}: gradient of {name} differs"


def test_mode_is_per_forward():
    """A slot is backpropagated the way its forward saved, whatever the setting is now."""
    ref = build_model(_config("gpt2"), seed=3)
    mix = build_model(_config("gpt2"), seed=3)
    ids, tgt = _batch(5)
    ref.stage_forward(0, ids, targets=tgt, grad_scale=0.05)
    mix.recompute = "full"
    mix.stage_forward(0, ids, targets=tgt, grad_scale=0.05)
    mix.recompute = "selective"
    for m in (ref, mix):
        m.stage_backward_input(0)
        m.stage_backward_weight(0)
    a, b = _grads(ref), _grads(mix)
    assert all(np.array_equal(a[n], b[n]) for n in a)


def test_bad_mode_names_the_choices():
    with pytest.raises(ValueError, match="recompute"):
        get_preset("tiny", recompute="some")
    model = build_model(_config("gpt2"))
    with pytest.raises(ValueError, match="none"):
        model.recompute = "everything"
    with pytest.raises(ValueError, match="selective"):
        model.blocks[0].recompute = "everything"


def test_released_slot_holds_nothing():
    model = build_model(_config("llama", "full"), seed=4)
    ids, tgt = _batch(6)
    model.stage_forward(0, ids, targets=tgt)
    model.release(0)
    assert all(not layer.slots() for layer in model.layers())
    model.stage_forward(0, ids, targets=tgt)   # the slot is free again
    model.stage_backward_input(0)
    model.stage_backward_weight(0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_what_each_mode_keeps(arch):
    """full keeps the block input alone; selective drops h1, h2 (C values per token each)
    and g (F values per token) from what none keeps."""
    cfg = _config(arch)
    ids, tgt = _batch(7)
    B, T = ids.shape
    kept = {}
    for mode in ("none", "selective", "full"):
        model = build_model(cfg, seed=5)
        model.recompute = mode
        model.stage_forward(0, ids, targets=tgt)
        kept[mode] = [b.saved_bytes(0) for b in model.blocks]
        model.release(0)
        assert all(b.saved_bytes(0) == 0 for b in model.blocks)
    C, F = cfg.n_embd, cfg.ffn_hidden
    assert kept["full"] == [B * T * C * 4] * cfg.n_layer
    assert [n - s for n, s in zip(kept["none"], kept["selective"])] == [B * T * (2 * C + F) * 4] * cfg.n_layer
