"""Each layer against finite differences of the float64 reference (ringloom/testing/reference.py),
and the slot protocol: split backward == backward, interleaved micro-batches == sequential."""
from types import SimpleNamespace

import numpy as np
import pytest

import ringloom as rl
from gradcheck import check_grad
from ringloom.testing import reference as ref
from ringloom import nn
from tolerances import REL_ERR, assert_close

TOL = REL_ERR["float32_grad"]

# Small odd shapes: C=12 with 3 heads of 4; LLaMA with one shared key/value head (GQA).
ARCHS = {
    "gpt2": dict(norm="layernorm", mlp="gelu", bias=True, rope=False, n_kv_head=3),
    "llama": dict(norm="rmsnorm", mlp="swiglu", bias=False, rope=True, n_kv_head=1),
}
C, H, F = 12, 3, 7


def make_block(arch, rng):
    a = ARCHS[arch]
    cfg = nn.BlockConfig(n_embd=C, n_head=H, n_kv_head=a["n_kv_head"], ffn_hidden=F, norm=a["norm"], mlp=a["mlp"],
                         bias=a["bias"], rope=a["rope"], rope_base=500.0, norm_eps=1e-5)
    block = nn.TransformerBlock(cfg)
    for p in block.params():  # random values everywhere (gains away from 1, biases from 0)
        np.asarray(p.value)[...] = rng.standard_normal(p.value.shape) * (0.3 if p.decay else 0.5) + (
            1.0 if p.name.endswith("ln1.weight") or p.name.endswith("ln2.weight") else 0.0)
    ref_cfg = SimpleNamespace(arch=arch, n_head=H, n_kv_head=a["n_kv_head"], norm_eps=1e-5, rope_base=500.0)
    P = {f"blocks.0.{p.name}": np.asarray(p.value, np.float64).copy() for p in block.params()}
    return block, ref_cfg, P


def grads_of(layer):
    return {p.name: np.array(p.grad) for p in layer.params()}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_block_forward_and_backward_vs_finite_differences(rng, arch):
    block, rcfg, P = make_block(arch, rng)
    x = rng.standard_normal((2, 5, C)).astype(np.float32)
    dy = rng.standard_normal((2, 5, C)).astype(np.float32)
    y = block.forward(0, rl.tensor(x))
    assert_close(np.asarray(y), ref.block_forward(rcfg, P, 0, x.astype(np.float64))[0], what="block forward")

    block.zero_grad()
    dx = np.asarray(block.backward(0, rl.tensor(dy)))
    x64 = x.astype(np.float64)
    check_grad(dx, lambda xx: ref.block_forward(rcfg, P, 0, xx)[0], x64, dy, tol=TOL, max_entries=40, rng=rng,
               what="dx")
    for name, g in grads_of(block).items():
        full = f"blocks.0.{name}"

        def f(w, full=full):
            return ref.block_forward(rcfg, {**P, full: w}, 0, x64)[0]

        check_grad(g, f, P[full], dy, tol=TOL, max_entries=25, rng=rng, what=f"d{name}")
    assert block.slots() == []


@pytest.mark.parametrize("learned_positions", [True, False])
def test_embedding_backward_vs_finite_differences(rng, learned_positions):
    V, T_max = 11, 7
    emb = nn.Embedding(V, 5, T_max, learned_positions)
    for p in emb.params():
        np.asarray(p.value)[...] = rng.standard_normal(p.value.shape)
    ids = rng.integers(0, V, (3, 6)).astype(np.int32)
    ids[0, :3] = 4  # repeated ids must accumulate
    dy = rng.standard_normal((3, 6, 5)).astype(np.float32)
    wte = np.asarray(emb.params()[0].value, np.float64).copy()
    wpe = np.asarray(emb.params()[1].value, np.float64).copy() if learned_positions else None

    def f(wte_, wpe_=wpe):
        out = wte_[ids]
        return out + wpe_[: ids.shape[1]] if wpe_ is not None else out

    y = emb.forward(3, rl.tensor(ids))
    assert_close(np.asarray(y), f(wte), what="embedding forward")
    assert emb.backward(3, rl.tensor(dy)) is None  # ids have no gradient
    g = grads_of(emb)
    check_grad(g["wte.weight"], f, wte, dy, tol=TOL, max_entries=None, what="dwte")
    if learned_positions:
        check_grad(g["wpe.weight"], lambda w: f(wte, w), wpe, dy, tol=TOL, max_entries=None, what="dwpe")


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_lm_head_vs_finite_differences(rng, norm):
    V, B, T = 13, 2, 5
    head = nn.LMHead(C, V, norm, 1e-5)
    for p in head.params():
        np.asarray(p.value)[...] = rng.standard_normal(p.value.shape) * 0.5 + (1.0 if p.name == "norm.weight" else 0)
    P = {f"head.{p.name}": np.asarray(p.value, np.float64).copy() for p in head.params()}
    rcfg = SimpleNamespace(arch="gpt2" if norm == "layernorm" else "llama", norm_eps=1e-5)

    def logits(x, P=P):
        h, _ = ref._norm_forward(rcfg, P, "head.norm", x)
        return h @ P["head.out.weight"].T

    x = rng.standard_normal((B, T, C)).astype(np.float32)
    x64 = x.astype(np.float64)
    # forward/backward_input with an upstream gradient on the logits
    dl = rng.standard_normal((B, T, V)).astype(np.float32)
    assert_close(np.asarray(head.forward(0, rl.tensor(x))), logits(x64), what="logits")
    dx = np.asarray(head.backward(0, rl.tensor(dl)))
    check_grad(dx, logits, x64, dl, tol=TOL, max_entries=40, rng=rng, what="dx")
    for name, g in grads_of(head).items():
        full = f"head.{name}"
        check_grad(g, lambda w, full=full: logits(x64, {**P, full: w}), P[full], dl, tol=TOL, max_entries=30,
                   rng=rng, what=f"d{name}")

    # forward_loss: per-position losses, gradient of grad_scale * sum(losses)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    targets[1, 2] = -100
    scale = 0.37
    head.zero_grad()
    losses = np.asarray(head.forward_loss(1, rl.tensor(x), rl.tensor(targets), scale, -100))
    _, rows, _ = ref.cross_entropy_forward(logits(x64).reshape(B * T, V), targets.reshape(-1))
    assert_close(losses, rows.reshape(B, T), what="per-position losses")
    assert losses[1, 2] == 0.0
    dx = np.asarray(head.backward(1, None))

    def loss_of(x_, P=P):
        _, r, _ = ref.cross_entropy_forward(logits(x_, P).reshape(B * T, V), targets.reshape(-1))
        return np.array(scale * r.sum())

    check_grad(dx, loss_of, x64, np.array(1.0), tol=TOL, max_entries=40, rng=rng, what="dx (loss)")
    g = grads_of(head)
    check_grad(g["out.weight"], lambda w: loss_of(x64, {**P, "head.out.weight": w}), P["head.out.weight"],
               np.array(1.0), tol=TOL, max_entries=30, rng=rng, what="dW (loss)")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_split_backward_equals_backward(rng, arch):
    block, _, _ = make_block(arch, rng)
    x = rl.tensor(rng.standard_normal((2, 5, C)).astype(np.float32))
    dy = rl.tensor(rng.standard_normal((2, 5, C)).astype(np.float32))
    block.zero_grad()
    block.forward(0, x)
    dx_full = np.array(block.backward(0, dy))
    g_full = grads_of(block)

    block.zero_grad()
    block.forward(0, x)
    dx = np.array(block.backward_input(0, dy))
    # The input half must not touch the parameter gradients (zero-bubble schedules and
    # data-parallel reducers rely on it).
    assert all(not np.any(g) for g in grads_of(block).values()), "backward_input changed a parameter gradient"
    block.backward_weight(0)
    assert_close(dx, dx_full, what="dx")
    for name, g in grads_of(block).items():
        assert_close(g, g_full[name], what=name)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_interleaved_slots_equal_sequential(rng, arch):
    block, _, _ = make_block(arch, rng)
    xs = [rl.tensor(rng.standard_normal((2, 5, C)).astype(np.float32)) for _ in range(2)]
    dys = [rl.tensor(rng.standard_normal((2, 5, C)).astype(np.float32)) for _ in range(2)]

    block.zero_grad()
    seq_dx = []
    for x, dy in zip(xs, dys):
        block.forward(0, x)
        seq_dx.append(np.array(block.backward(0, dy)))
    g_seq = grads_of(block)

    # forward s0, forward s1, backward s1 (input half only), backward s0, then s1's weights
    block.zero_grad()
    block.forward(10, xs[0])
    block.forward(11, xs[1])
    assert block.slots() == [10, 11]
    dx1 = np.array(block.backward_input(11, dys[1]))
    dx0 = np.array(block.backward(10, dys[0]))
    block.backward_weight(11)
    assert block.slots() == []
    assert_close(dx0, seq_dx[0], what="dx slot 0")
    assert_close(dx1, seq_dx[1], what="dx slot 1")
    for name, g in grads_of(block).items():
        assert_close(g, g_seq[name], what=name)


def test_slot_protocol_errors(rng):
    block, _, _ = make_block("gpt2", rng)
    x = rl.tensor(rng.standard_normal((1, 3, C)).astype(np.float32))
    with pytest.raises(RuntimeError, match="slot 5 has no activations"):
        block.backward(5, x)
    block.forward(5, x)
    with pytest.raises(RuntimeError, match="slot 5 still holds activations"):
        block.forward(5, x)
    with pytest.raises(RuntimeError, match="has not run backward_input"):
        block.backward_weight(5)
    with pytest.raises(ValueError, match=r"dy must have shape \[1, 3, 12\]"):
        block.backward_input(5, rl.zeros([1, 4, C]))
    block.backward_input(5, x)  # the failed call above left the slot usable
    with pytest.raises(RuntimeError, match="already ran backward_input"):
        block.backward_input(5, x)
    block.release(5)
    assert block.slots() == []
    with pytest.raises(ValueError, match=r"x must be \[B, T, 12\]"):
        block.forward(0, rl.zeros([1, 3, 8]))
    with pytest.raises(TypeError, match="dtype and device"):
        block.forward(0, rl.zeros([1, 3, C], dtype="int32"))
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        nn.BlockConfig(n_embd=12, n_head=3, n_kv_head=2)
    head = nn.LMHead(C, 7)
    head.forward_loss(0, rl.zeros([1, 3, C]), rl.zeros([1, 3], dtype="int32"))
    with pytest.raises(ValueError, match="pass None as dlogits"):
        head.backward_input(0, rl.zeros([1, 3, 7]))
    head.forward(1, rl.zeros([1, 3, C]))
    with pytest.raises(ValueError, match="dlogits of shape"):
        head.backward_input(1, None)


def test_tied_head_shares_and_accumulates(rng):
    V, T = 9, 4
    emb = nn.Embedding(V, C, 8, learned_positions=False)
    head = nn.LMHead(tied=emb, norm="rmsnorm")
    assert head.tied and [p.name for p in head.params()] == ["norm.weight"]
    wte = emb.params()[0]
    assert head.weight.value.shares_memory(wte.value) and head.weight.grad.shares_memory(wte.grad)
    np.asarray(wte.value)[...] = rng.standard_normal((V, C))
    ids = rl.tensor(rng.integers(0, V, (2, T)).astype(np.int32))
    dl = rl.tensor(rng.standard_normal((2, T, V)).astype(np.float32))

    emb.zero_grad()
    head.forward(0, emb.forward(0, ids))
    dx = head.backward(0, dl)
    head_only = np.array(wte.grad)  # the head's use: dlogits^T h
    emb.backward(0, dx)
    both = np.array(wte.grad)
    # The embedding's use adds the scatter of dx into the same tensor.
    emb_only = both - head_only
    expect = np.zeros((V, C))
    np.add.at(expect, np.asarray(ids).reshape(-1), np.asarray(dx, np.float64).reshape(-1, C))
    assert_close(emb_only, expect, what="embedding part of the tied grad")
    assert np.linalg.norm(head_only) > 0 and np.linalg.norm(expect) > 0
