"""ringloom.models: presets, initialisation, parameters and state dicts, bad inputs."""
import math

import numpy as np
import pytest

import ringloom as rl
from ringloom.models import PRESETS, ModelConfig, build_model, get_preset, param_specs
from tolerances import assert_close

SMALL = dict(n_layer=3, n_embd=24, vocab_size=37, max_seq_len=11)


def test_presets_have_the_promised_shapes():
    for name in ("tiny", "llama-tiny", "gpt2-124m", "gpt2-350m", "llama-1b"):
        assert name in PRESETS
    t = PRESETS["tiny"]
    assert (t.arch, t.n_layer, t.n_head, t.n_embd, t.max_seq_len, t.vocab_size) == ("gpt2", 4, 4, 128, 256, 256)
    lt = PRESETS["llama-tiny"]
    assert (lt.arch, lt.n_layer, lt.n_head, lt.n_kv_head, lt.n_embd, lt.ffn_hidden) == ("llama", 4, 4, 2, 128, 384)
    g = PRESETS["gpt2-124m"]
    assert (g.n_layer, g.n_head, g.n_embd, g.max_seq_len, g.vocab_size, g.ffn_hidden) == (12, 12, 768, 1024, 50304, 3072)
    assert (PRESETS["gpt2-350m"].n_layer, PRESETS["gpt2-350m"].n_head, PRESETS["gpt2-350m"].n_embd) == (24, 16, 1024)
    lb = PRESETS["llama-1b"]
    assert (lb.n_layer, lb.n_embd, lb.n_head, lb.n_kv_head, lb.ffn_hidden, lb.vocab_size, lb.max_seq_len) == (
        16, 2048, 32, 8, 8192, 128256, 2048)
    # The parameter counts follow from the shapes (GPT-2 small: 124M with a 50304 vocab).
    n124 = sum(math.prod(s) for _, s, _ in param_specs(g))
    assert 123e6 < n124 < 126e6, n124


def test_get_preset_overrides_and_errors():
    c = get_preset("tiny", n_embd=32, n_head=2)
    assert c.ffn_hidden == 128 and c.n_kv_head == 2  # derived fields follow the override
    assert get_preset("tiny") == PRESETS["tiny"]
    with pytest.raises(ValueError, match=r"unknown preset 'gpt5'.*tiny.*llama-tiny.*gpt2-124m"):
        get_preset("gpt5")
    with pytest.raises(ValueError, match="unknown config fields \\['n_layers'\\]"):
        get_preset("tiny", n_layers=2)
    with pytest.raises(ValueError, match="multiple of n_head"):
        ModelConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="arch must be one of"):
        ModelConfig(arch="bert")
    with pytest.raises(ValueError, match="even head dim"):
        ModelConfig(arch="llama", n_embd=12, n_head=4)
    assert ModelConfig.from_dict(c.to_dict()) == c


def test_init_statistics_and_determinism():
    cfg = get_preset("tiny", n_layer=6)
    sd = build_model(cfg, seed=11).state_dict()
    assert abs(sd["embedding.wte.weight"].std() - 0.02) < 0.001
    assert abs(sd["blocks.2.attn.qkv.weight"].std() - 0.02) < 0.001
    resid = 0.02 / math.sqrt(2 * 6)
    assert abs(sd["blocks.4.mlp.proj.weight"].std() - resid) < 0.1 * resid
    assert abs(sd["blocks.0.attn.proj.weight"].std() - resid) < 0.1 * resid
    assert np.all(sd["blocks.1.ln2.weight"] == 1) and np.all(sd["blocks.1.mlp.fc.bias"] == 0)
    again = build_model(cfg, seed=11).state_dict()
    other = build_model(cfg, seed=12).state_dict()
    assert all(np.array_equal(sd[k], again[k]) for k in sd)
    assert not np.array_equal(sd["blocks.0.mlp.fc.weight"], other["blocks.0.mlp.fc.weight"])


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_parameters_names_and_tying(preset):
    cfg = get_preset(preset, **SMALL)
    model = build_model(cfg)
    names = [n for n, _ in model.parameters()]
    assert len(names) == len(set(names))
    assert names == [n for n, _, _ in param_specs(cfg)]
    assert "blocks.2.attn.qkv.weight" in names
    assert ("head.out.weight" in names) == (not cfg.tie_embeddings)
    assert model.num_parameters() == sum(math.prod(s) for _, s, _ in param_specs(cfg))
    for _, p in model.parameters():
        assert p.grad.dtype == rl.float32 and p.grad.shape == p.value.shape


def test_pipeline_stage_gets_the_same_weights():
    cfg = get_preset("tiny", **SMALL)
    full = build_model(cfg, seed=4).state_dict()
    first = build_model(cfg, seed=4, blocks=[0], head=False)
    last = build_model(cfg, seed=4, blocks=[1, 2], embedding=False)
    s1, s2 = first.state_dict(), last.state_dict()
    assert set(s1) | set(s2) == set(full)
    assert "embedding.wte.weight" in s1 and "embedding.wte.weight" in s2  # each stage holds a copy of the tied wte
    assert all(np.array_equal(full[k], v) for k, v in {**s1, **s2}.items())
    assert not last.head.tied
    with pytest.raises(RuntimeError, match="only part of the layers"):
        last.forward_backward(np.zeros((1, 2), int), np.zeros((1, 2), int))


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_state_dict_round_trip(rng, preset):
    cfg = get_preset(preset, **SMALL)
    a = build_model(cfg, seed=1)
    b = build_model(cfg, seed=2)
    ids = rng.integers(0, cfg.vocab_size, (2, 7))
    sd = a.state_dict()
    sd["blocks.0.ln1.weight"][0] = 123.0  # a copy: editing it leaves the model alone
    assert a.state_dict()["blocks.0.ln1.weight"][0] == 1.0
    b.load_state_dict(a.state_dict())
    sb = b.state_dict()
    assert all(np.array_equal(v, sb[k]) for k, v in a.state_dict().items())
    assert np.array_equal(np.asarray(a.logits(ids)), np.asarray(b.logits(ids)))
    if cfg.tie_embeddings:  # loading wte also changes the tied output projection
        assert b.head.weight.value.shares_memory(b.embedding.wte.value)


def test_load_state_dict_mismatches_are_named():
    cfg = get_preset("tiny", **SMALL)
    model = build_model(cfg)
    sd = model.state_dict()
    del sd["blocks.1.ln2.bias"]
    sd["blocks.9.mlp.fc.weight"] = np.zeros((3, 3), np.float32)
    sd["embedding.wpe.weight"] = np.zeros((5, cfg.n_embd), np.float32)
    with pytest.raises(ValueError) as e:
        model.load_state_dict(sd)
    msg = str(e.value)
    assert "missing keys ['blocks.1.ln2.bias']" in msg
    assert "unexpected keys ['blocks.9.mlp.fc.weight']" in msg
    assert "embedding.wpe.weight: expected (11, 24), got (5, 24)" in msg


def test_bad_inputs_raise_with_messages(rng):
    cfg = get_preset("llama-tiny", **SMALL)
    model = build_model(cfg)
    ids = rng.integers(0, cfg.vocab_size, (2, 5))
    with pytest.raises(TypeError, match="ids must be integers, got float64"):
        model.forward_backward(ids.astype(np.float64), ids)
    with pytest.raises(ValueError, match=r"ids must be \[B, T\], got shape \(10,\)"):
        model.forward_backward(ids.reshape(-1), ids.reshape(-1))
    with pytest.raises(TypeError, match="ids must be int32, got int64"):
        model.logits(rl.tensor(ids))
    with pytest.raises(ValueError, match=r"targets shape \(2, 4\) must equal ids shape \(2, 5\)"):
        model.forward_backward(ids, ids[:, :4])
    long = rng.integers(0, cfg.vocab_size, (1, cfg.max_seq_len + 1))
    with pytest.raises(ValueError, match="sequence length 12 exceeds the model's max_seq_len of 11"):
        model.forward_backward(long, long)
    with pytest.raises(ValueError, match="sequence length 12 exceeds"):
        model.logits(long)
    with pytest.raises(ValueError, match="sequence length 12 exceeds the model's max_seq_len of 11"):
        model.embedding.forward(0, rl.tensor(long.astype(np.int32)))  # the layer checks too (no wpe here)
    bad = ids.copy()
    bad[1, 3] = cfg.vocab_size
    with pytest.raises(ValueError, match=r"ids: token id 37 at \(1, 3\) is outside the vocabulary \[0, 37\)"):
        model.loss(bad, ids)
    with pytest.raises(ValueError, match="token id 37 .* outside the vocabulary"):
        model.logits(rl.tensor(bad.astype(np.int32)))  # from the embedding op
    with pytest.raises(ValueError, match="targets: token id -1"):
        model.forward_backward(ids, np.full_like(ids, -1))
    with pytest.raises(ValueError, match="CPU layers compute in float32"):
        build_model(cfg, dtype="bfloat16")
    # A failed step leaves no activations behind.
    assert all(layer.slots() == [] for layer in model.layers())


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_pipeline_stages_reproduce_the_full_model(rng, preset):
    """Two stages driven with stage_forward / stage_backward_input / stage_backward_weight,
    two micro-batches in flight (1F1B-like order), give the full model's loss and gradients;
    the tied wte's two copies' gradients add up to the full model's."""
    cfg = get_preset(preset, **SMALL)
    full = build_model(cfg, seed=6)
    s0 = build_model(cfg, seed=6, blocks=[0, 1], head=False)
    s1 = build_model(cfg, seed=6, blocks=[2], embedding=False)
    ids = rng.integers(0, cfg.vocab_size, (4, 7))
    targets = rng.integers(0, cfg.vocab_size, (4, 7))
    targets[0, :2] = -100
    count = int(np.sum(targets != -100))
    full.zero_grad()
    loss = full.forward_backward(ids, targets)

    s0.zero_grad()
    s1.zero_grad()
    total = 0.0
    acts = [s0.stage_forward(mb, ids[2 * mb:2 * mb + 2]) for mb in (0, 1)]
    for mb in (1, 0):
        losses = s1.stage_forward(mb, acts[mb], targets[2 * mb:2 * mb + 2], grad_scale=1.0 / count)
        total += float(np.asarray(losses, np.float64).sum())
        dx = s1.stage_backward_input(mb)
        assert s0.stage_backward_input(mb, dx) is None
    for mb in (0, 1):
        s1.stage_backward_weight(mb)
        s0.stage_backward_weight(mb)
    assert abs(total / count - loss) < 1e-5 * loss
    g = {n: np.asarray(p.grad, np.float64) for m in (s0, s1) for n, p in m.parameters() if n != "embedding.wte.weight"}
    wte = sum(np.asarray(p.grad, np.float64) for m in (s0, s1) for n, p in m.parameters()
              if n == "embedding.wte.weight")
    g["embedding.wte.weight"] = wte
    for name, p in full.parameters():
        assert_close(g[name], np.asarray(p.grad), what=name)
    assert all(layer.slots() == [] for m in (s0, s1) for layer in m.layers())


def test_attention_option_round_trips_and_is_validated():
    """Model.attention (the GPU attention backend of its blocks) is set by build_model or
    later, None means the process-wide setting; unknown names are refused. On the CPU the
    op ignores it, so training is unchanged (the GPU override: tests/gpu/test_attention_cudnn_gpu.py)."""
    config = get_preset("tiny", n_layer=2, n_embd=32, n_head=2)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, config.vocab_size, size=(2, 9))
    plain = build_model(config, seed=1)
    assert plain.attention is None
    pinned = build_model(config, seed=1, attention="cudnn")
    assert pinned.attention == "cudnn" and all(b.attention_backend == "cudnn" for b in pinned.blocks)
    assert pinned.forward_backward(ids, ids) == plain.forward_backward(ids, ids)
    pinned.attention = "auto"
    assert [b.attention_backend for b in pinned.blocks] == ["auto", "auto"]
    pinned.attention = None
    assert pinned.attention is None
    with pytest.raises(ValueError, match="'ours', 'cudnn', 'auto' or None"):
        pinned.attention = "flash"
    with pytest.raises(ValueError, match='"ours", "cudnn" or "auto", got "flash"'):
        pinned.blocks[0].attention_backend = "flash"


def test_deterministic_attention_option_round_trips():
    """Model.deterministic_attention reaches every block (build_model or later) and is a
    bool; the CPU attention backward is deterministic either way, so training is unchanged
    (the GPU path: tests/gpu/test_attention_gpu.py, tests/gpu/test_cuda_graph_gpu.py)."""
    config = get_preset("llama-tiny", n_layer=2, n_embd=32, n_head=2, n_kv_head=1, ffn_hidden=64)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, config.vocab_size, size=(2, 9))
    plain = build_model(config, seed=1)
    assert plain.deterministic_attention is False
    det = build_model(config, seed=1, deterministic_attention=True)
    assert det.deterministic_attention and all(b.deterministic_attention for b in det.blocks)
    assert det.forward_backward(ids, ids) == plain.forward_backward(ids, ids)
    det.deterministic_attention = False
    assert not any(b.deterministic_attention for b in det.blocks)
    with pytest.raises(TypeError, match="must be a bool"):
        det.deterministic_attention = 1


def test_pending_loss_reads_the_same_value():
    """forward_backward(read_loss=False) defers the read, not the work: the same loss and
    gradients as the reading call."""
    from ringloom.models import PendingLoss

    cfg = get_preset("llama-tiny", n_layer=2, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=48, vocab_size=67)
    rows = np.random.default_rng(0).integers(0, 67, size=(3, 12))
    ref, new = build_model(cfg, seed=6), build_model(cfg, seed=6)
    want = ref.forward_backward(rows[:, :-1], rows[:, 1:])
    got = new.forward_backward(rows[:, :-1], rows[:, 1:], read_loss=False)
    assert isinstance(got, PendingLoss) and got.count == 33
    assert float(got) == want == got.item() and math.isfinite(want)
    for (n, a), (_, b) in zip(ref.parameters(), new.parameters()):
        assert np.array_equal(np.asarray(a.grad), np.asarray(b.grad)), n
