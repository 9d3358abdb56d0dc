"""ringloom.testing.reference_model: the float64 model of a config matches ringloom's model,
and planted changes (a changed weight, RoPE rotating the wrong way) are caught."""
import numpy as np
import pytest

from ringloom.models import build_model, get_preset
from ringloom.optim import AdamW
from ringloom.testing import assert_close, reference, reference_model

# GPT-2 without linear biases: the key part of the qkv bias has an exactly zero gradient
# (softmax ignores a shift shared by all keys), pure rounding noise that Adam turns into
# +-lr steps no two implementations share.
CONFIGS = {
    "gpt2": get_preset("tiny", n_layer=2, n_embd=32, n_head=4, vocab_size=53, max_seq_len=12, bias=False),
    "llama": get_preset("llama-tiny", n_layer=2, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=48, vocab_size=53,
                        max_seq_len=12),
}


def batch(rng, cfg, B=3, T=11):
    return rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_reference_matches_ringloom(rng, arch):
    cfg = CONFIGS[arch]
    model = build_model(cfg, seed=5)
    ref = reference_model(cfg, seed=5)                         # the same init, by seed
    ids, targets = batch(rng, cfg)
    assert_close(np.asarray(model.logits(ids)), ref.logits(ids), norm=True, msg="logits")
    assert_close(model.loss(ids, targets), ref.loss(ids, targets), msg="loss")


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_train_steps_match_adamw_with_clipping(rng, arch):
    cfg = CONFIGS[arch]
    model = build_model(cfg, seed=1)
    ref = reference_model(cfg, model.state_dict())
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, max_grad_norm=0.5)  # clipping active
    for _ in range(3):
        ids, targets = batch(rng, cfg)
        model.zero_grad()
        loss = model.forward_backward(ids, targets)
        opt.step()
        ref_loss, ref_norm = ref.train_step(ids, targets, lr=1e-2, weight_decay=0.1, max_grad_norm=0.5)
        assert_close(loss, ref_loss, msg="loss")
        assert_close(opt.grad_norm(), ref_norm, precision="float32_grad", msg="grad norm")
    # Adam divides each gradient by its own running RMS, so float32 rounding in small
    # gradients (LayerNorm biases) reaches the weights at the gradient's tolerance.
    for name, w in model.state_dict().items():
        assert_close(w, ref.params[name], norm=True, precision="float32_grad", msg=name)


def test_planted_weight_change_is_caught(rng):
    cfg = CONFIGS["gpt2"]
    model = build_model(cfg, seed=2)
    state = model.state_dict()
    state["blocks.1.mlp.fc.weight"][3, 4] += 0.05
    ref = reference_model(cfg, state)
    ids, _ = batch(rng, cfg)
    with pytest.raises(AssertionError, match="logits: .* elements"):
        assert_close(np.asarray(model.logits(ids)), ref.logits(ids), msg="logits")


def test_planted_swapped_rope_is_caught(rng, monkeypatch):
    cfg = CONFIGS["llama"]
    model = build_model(cfg, seed=3)
    ids, _ = batch(rng, cfg)
    good = reference_model(cfg, model.state_dict()).logits(ids)
    rotate = reference.rope_rotate
    monkeypatch.setattr(reference, "rope_rotate", lambda x, n, base, inverse=False: rotate(x, n, base, not inverse))
    swapped = reference_model(cfg, model.state_dict()).logits(ids)
    assert_close(np.asarray(model.logits(ids)), good, norm=True)
    with pytest.raises(AssertionError, match="relative norm error"):
        assert_close(np.asarray(model.logits(ids)), swapped, norm=True)
