"""Whole-model check: one training step of the tiny GPT-2 and LLaMA presets (shrunk for
speed, odd sizes) equals the float64 NumPy model of ringloom/testing/reference.py: the loss,
every gradient and every parameter after AdamW."""
import numpy as np
import pytest

import ringloom as rl
from ringloom.testing import reference as ref
from ringloom.models import build_model, get_preset
from tolerances import assert_close

SMALL = {
    "tiny": dict(n_layer=2, n_embd=32, vocab_size=61, max_seq_len=13),
    "llama-tiny": dict(n_layer=2, n_embd=32, vocab_size=61, ffn_hidden=40, max_seq_len=13),
}
B, T = 3, 9
LR, BETAS, EPS, WD, STEP = 1e-2, (0.9, 0.95), 1e-8, 0.1, 4


def make_batch(rng, cfg, n_ignored=2):
    ids = rng.integers(0, cfg.vocab_size, (B, T))
    targets = rng.integers(0, cfg.vocab_size, (B, T))
    targets.flat[rng.choice(B * T, n_ignored, replace=False)] = -100  # ignored positions
    return ids, targets


def perturbed_model(cfg, rng):
    """A model whose parameters are the GPT-2 init plus noise, so biases are not 0 and
    gains not 1 (a wrong bias gradient or decay on a gain would show)."""
    model = build_model(cfg, seed=int(rng.integers(1 << 30)))
    state = {k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model, {k: v.astype(np.float64) for k, v in state.items()}


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_one_training_step_matches_reference(rng, preset):
    cfg = get_preset(preset, **SMALL[preset])
    model, P = perturbed_model(cfg, rng)
    ids, targets = make_batch(rng, cfg)

    # Gradients: poison first, so a gradient that is never written shows up.
    for _, p in model.parameters():
        np.asarray(p.grad)[...] = np.nan
    model.zero_grad()
    loss = model.forward_backward(ids, targets)
    ref_loss, cache = ref.forward(cfg, P, ids, targets)
    ref_grads = ref.backward(cfg, P, cache)
    assert_close(loss, ref_loss, what="loss")
    names = [n for n, _ in model.parameters()]
    assert sorted(names) == sorted(P), "model and reference disagree on the parameter names"
    for name, p in model.parameters():
        assert_close(np.asarray(p.grad), ref_grads[name], what=f"grad of {name}")

    # AdamW, continuing from a mid-training state (step 4, non-zero moments): at step 1
    # Adam's update is ~ lr * sign(g), which is ill-conditioned where g is ~0 (the key bias
    # has an exactly zero gradient: softmax ignores a shift shared by all keys).
    decay = {n: p.decay for n, p in model.parameters()}
    m0, v0 = {}, {}
    for name, g in ref_grads.items():
        scale = np.sqrt(np.mean(g * g)) + 1e-3
        m0[name] = 0.5 * scale * rng.standard_normal(g.shape)
        v0[name] = scale**2 * (0.5 + rng.random(g.shape))
    params = [p for _, p in model.parameters()]
    m = [rl.tensor(m0[n].astype(np.float32)) for n in names]
    v = [rl.tensor(v0[n].astype(np.float32)) for n in names]
    rl.ops.adamw_step([p.value for p in params], [p.grad for p in params], m, v,
                      [WD if p.decay else 0.0 for p in params], lr=LR, beta1=BETAS[0], beta2=BETAS[1], eps=EPS,
                      step=STEP)
    m_ref, v_ref = dict(m0), dict(v0)
    ref.adamw_step(P, ref_grads, m_ref, v_ref, decay, LR, BETAS[0], BETAS[1], EPS, WD, STEP)
    for name, p in model.parameters():
        assert_close(np.asarray(p.value), P[name], what=f"{name} after AdamW")


def test_decay_flags():
    cfg = get_preset("tiny", **SMALL["tiny"])
    for name, p in build_model(cfg).parameters():
        is_matrix = len(p.value.shape) == 2
        assert p.decay == is_matrix, f"{name}: decay={p.decay} but it is {'a matrix' if is_matrix else 'a vector'}"


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_micro_batches_accumulate_like_one_batch(rng, preset):
    """Two micro-batches with grad_scale = 1/(all counted targets) give the full batch's gradient."""
    cfg = get_preset(preset, **SMALL[preset])
    model = build_model(cfg, seed=3)
    ids, targets = make_batch(rng, cfg, n_ignored=4)
    model.zero_grad()
    full_loss = model.forward_backward(ids, targets)
    full = {n: np.array(p.grad) for n, p in model.parameters()}
    model.zero_grad()
    total = int(np.sum(targets != -100))
    for rows in (slice(0, 1), slice(1, 3)):
        model.forward_backward(ids[rows], targets[rows], slot=7, grad_scale=1.0 / total)
    for name, p in model.parameters():
        assert_close(np.asarray(p.grad), full[name], what=f"accumulated grad of {name}")
    assert abs(model.loss(ids, targets) - full_loss) < 1e-5 * full_loss


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_logits_and_loss_match_reference(rng, preset):
    cfg = get_preset(preset, **SMALL[preset])
    model = build_model(cfg, seed=5)
    P = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    ids, targets = make_batch(rng, cfg)
    assert_close(np.asarray(model.logits(ids)), ref.forward(cfg, P, ids), what="logits")
    assert_close(model.loss(ids, targets), ref.forward(cfg, P, ids, targets)[0], what="loss")
    # Forward-only calls leave no activations behind.
    assert all(layer.slots() == [] for layer in model.layers())


def test_all_targets_ignored_gives_zero_loss_and_grads(rng):
    cfg = get_preset("tiny", **SMALL["tiny"])
    model = build_model(cfg)
    ids, _ = make_batch(rng, cfg)
    model.zero_grad()
    assert model.forward_backward(ids, np.full((B, T), -100)) == 0.0
    for name, p in model.parameters():
        assert not np.any(np.asarray(p.grad)), f"{name} got a gradient from ignored targets"
