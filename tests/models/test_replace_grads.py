"""The gradients' life between steps.

forward_backward(accumulate=False) replaces the gradients instead of adding to them: the
same bits as zero_grad() then forward_backward, for a model whose gradients hold an earlier
step's (both architectures, tied and untied embeddings, every recompute mode); the next
accumulate=True call adds to them again, and a call that raises leaves them zeroed.

Model.release_grads frees them until the next backward: afterwards no .grad has memory and
an op given one raises; the next backward gives them memory again with the same bits as
zero_grad() then the backward, whether it replaces or accumulates (the same models, and the
tensor-parallel layers in 2 ranks); zero_grad() brings them back as zeros. Gradients whose
addresses something holds (a data-parallel reducer's buckets, a captured graph) are pinned:
release_grads refuses."""
from __future__ import annotations

import numpy as np
import pytest

import ringloom as rl
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


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("mode", ["none", "selective", "full"])
@pytest.mark.parametrize("accumulate", [False, True])
def test_backward_after_release_equals_zero_grad(arch, tied, mode, accumulate):
    ref = build_model(_config(arch, tie_embeddings=tied, recompute=mode), seed=2)
    new = build_model(_config(arch, tie_embeddings=tied, recompute=mode), seed=2)
    for m in (ref, new):
        m.forward_backward(*_batch(0))  # an earlier step's gradients
    ref.zero_grad()
    ref.forward_backward(*_batch(1))
    new.release_grads()
    assert not any(p.grad.has_memory for _, p in new.parameters())
    new.forward_backward(*_batch(1), accumulate=accumulate)
    assert all(p.grad.has_memory for _, p in new.parameters())
    assert any(np.any(g != 0) for g in _grads(new).values())
    _assert_same(_grads(new), _grads(ref), f"after release, accumulate={accumulate}")


def test_released_gradient_is_refused_by_ops():
    model = build_model(_config("llama"), seed=1)
    model.forward_backward(*_batch(0))
    model.release_grads()
    _, p = model.parameters()[0]
    with pytest.raises(RuntimeError, match="memory is released"):
        np.array(p.grad)
    with pytest.raises(RuntimeError, match="memory is released"):
        rl.ops.add_(p.grad, p.grad)
    model.release_grads()  # twice is harmless


def test_pinned_gradients_are_not_released():
    model = build_model(_config("gpt2"), seed=1)
    model.forward_backward(*_batch(0))
    model.grads_pinned_by = "a test that holds their addresses"
    with pytest.raises(RuntimeError, match="stay allocated for a test that holds"):
        model.release_grads()
    assert all(p.grad.has_memory for _, p in model.parameters())


def test_zero_grad_brings_released_gradients_back_as_zeros():
    model = build_model(_config("gpt2"), seed=1)
    model.forward_backward(*_batch(0))
    model.release_grads()
    model.zero_grad()
    grads = _grads(model)
    assert all(g.size and not np.any(g) for g in grads.values())


def test_optimizer_steps_match_with_released_gradients():
    """Three AdamW steps, gradients released after each (as the trainer's engine does),
    give the bits of the same steps with gradients kept and zeroed."""
    from ringloom.optim import AdamW

    ref = build_model(_config("llama"), seed=5)
    new = build_model(_config("llama"), seed=5)
    opt_ref = AdamW(ref.parameters(), lr=1e-2, max_grad_norm=1.0)
    opt_new = AdamW(new.parameters(), lr=1e-2, max_grad_norm=1.0)
    for k in range(3):
        ref.zero_grad()
        ref.forward_backward(*_batch(k))
        opt_ref.step()
        new.forward_backward(*_batch(k), accumulate=False)
        opt_new.step()
        new.release_grads()
    for (n, a), (_, b) in zip(ref.state_dict().items(), new.state_dict().items()):
        assert np.array_equal(a, b), f"weights of {n} differ"


def tp_release_rank(accumulate: bool):
    """Gradients of a 2-rank tensor-parallel model: (after zero_grad, after release)."""
    import ringloom.distributed as dist
    from ringloom.parallel.tensor_parallel import build_tp_model

    pg = dist.init(timeout=60)
    cfg = _config("llama")
    out = []
    for release in (False, True):
        model = build_tp_model(cfg, pg, seed=3)
        model.forward_backward(*_batch(0, T=12))  # sequence parallelism: T a multiple of tp
        if release:
            model.release_grads()
            if any(p.grad.has_memory for _, p in model.parameters()):
                raise AssertionError("release_grads left memory behind")
            model.forward_backward(*_batch(1, T=12), accumulate=accumulate)
        else:
            model.zero_grad()
            model.forward_backward(*_batch(1, T=12))
        out.append({n: np.array(p.grad.numpy(), copy=True) for n, p in model.parameters()})
    dist.destroy()
    return out


@pytest.mark.multiproc
@pytest.mark.parametrize("accumulate", [False, True])
def test_tensor_parallel_release(rl_ranks, accumulate):
    for zeroed, released in rl_ranks(tp_release_rank, 2, accumulate):
        assert any(np.any(g != 0) for g in released.values())
        _assert_same(released, zeroed, "tensor-parallel, after release")


def dp_release_rank():
    """What release_grads does on a 2-rank data-parallel engine's model (each gradient a
    view of a reduction bucket)."""
    import ringloom.distributed as dist
    from ringloom.parallel import DeviceMesh, ParallelEngine

    pg = dist.init(timeout=60)
    engine = ParallelEngine(_config("gpt2"), DeviceMesh(2, 1, pg), seed=3)
    try:
        engine.chunks[0].release_grads()
        out = "released"
    except RuntimeError as e:
        out = str(e)
    dist.destroy()
    return out


@pytest.mark.multiproc
def test_data_parallel_gradients_are_pinned(rl_ranks):
    for out in rl_ranks(dp_release_rank, 2):
        assert "stay allocated for the data-parallel reducer" in out


@pytest.mark.parametrize("embedding_first", [False, True])
def test_tied_gradient_replaced_by_whichever_layer_writes_first(embedding_first):
    """The tied wte gradient is shared by the head and the embedding: after
    replace_grads_next, the first of the two to write it overwrites and the other adds, in
    either order (a model's backward runs the head's first)."""
    ref = build_model(_config("gpt2", tie_embeddings=True), seed=7)
    new = build_model(_config("gpt2", tie_embeddings=True), seed=7)
    for m in (ref, new):
        m.forward_backward(*_batch(0))  # an earlier step's gradients
    ref.zero_grad()
    ref.forward_backward(*_batch(1))
    new.replace_grads_next()
    ids, tgt, count = new._inputs(*_batch(1), -100)
    x = new.embedding.forward(0, ids)
    for b in new.blocks:
        x = b.forward(0, x)
    new.head.forward_loss(0, x, tgt, 1.0 / count, -100)
    dx = new.head.backward_input(0, None)
    for b in reversed(new.blocks):
        dx = b.backward(0, dx)
    new.embedding.backward_input(0, dx)
    last = [new.head, new.embedding]
    for layer in (last[::-1] if embedding_first else last):
        layer.backward_weight(0)
    got, want = _grads(new), _grads(ref)
    if embedding_first:  # the two contributions are added in the other order
        for n in want:
            np.testing.assert_allclose(got[n], want[n], rtol=1e-5, atol=1e-7, err_msg=n)
    else:
        _assert_same(got, want, "head first")
