import numpy as np
import pytest

import ringloom as rl
from gradcheck import check_grad
from reference.embedding import embedding
from tolerances import REL_ERR, assert_close


def _ids(rng, B, T, V):
    return rng.integers(0, V, size=(B, T)).astype(np.int32)


# (B, T, V, C, max_positions); the last case is large enough for the threaded path.
SIZES = [(1, 1, 1, 1, 1), (2, 7, 5, 3, 9), (3, 33, 11, 37, 33), (1, 5, 50, 129, 8), (4, 65, 13, 130, 70)]


@pytest.mark.parametrize("B,T,V,C,P", SIZES)
@pytest.mark.parametrize("with_wpe", [True, False])
def test_embedding_values_and_grads(rng, B, T, V, C, P, with_wpe):
    ids = _ids(rng, B, T, V)
    wte = rng.standard_normal((V, C)).astype(np.float32)
    wpe = rng.standard_normal((P, C)).astype(np.float32) if with_wpe else None
    out = rl.ops.embedding_forward(rl.tensor(ids), rl.tensor(wte), rl.tensor(wpe) if with_wpe else None)
    assert_close(np.asarray(out), embedding(ids, wte, wpe))

    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    dwte = rl.zeros([V, C])
    dwpe = rl.zeros([P, C]) if with_wpe else None
    rl.ops.embedding_backward(rl.tensor(ids), rl.tensor(dout), dwte, dwpe)
    tol = REL_ERR["float32_grad"]
    check_grad(np.asarray(dwte), lambda w: embedding(ids, w, wpe), wte, dout, tol=tol, rng=rng, what="dwte")
    if with_wpe:
        check_grad(np.asarray(dwpe), lambda p: embedding(ids, wte, p), wpe, dout, tol=tol, rng=rng, what="dwpe")


def test_embedding_reads_only_used_rows(rng):
    # Vocabulary rows no id names and position rows past T are poisoned: none may leak in.
    B, T, V, C, P = 2, 6, 9, 17, 10
    ids = rng.integers(0, 4, size=(B, T)).astype(np.int32)
    wte = rng.standard_normal((V, C)).astype(np.float32)
    wte[4:] = np.nan
    wpe = rng.standard_normal((P, C)).astype(np.float32)
    wpe[T:] = np.nan
    out = rl.ops.embedding_forward(rl.tensor(ids), rl.tensor(wte), rl.tensor(wpe))
    assert_close(np.asarray(out), embedding(ids, wte, wpe[:T]))


def test_embedding_backward_accumulates_deterministically(rng):
    # Few tokens, many rows: every dwte row gathers many contributions. The sum must be the
    # fp32 sum taken in row order (np.add.at applies its updates in index order), whatever
    # the thread count, and wpe rows past T must stay as they were.
    B, T, V, C, P = 4, 64, 3, 160, 70
    ids = _ids(rng, B, T, V)
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    dwte0 = rng.standard_normal((V, C)).astype(np.float32)
    dwpe0 = rng.standard_normal((P, C)).astype(np.float32)
    dwte, dwpe = rl.tensor(dwte0), rl.tensor(dwpe0)
    rl.ops.embedding_backward(rl.tensor(ids), rl.tensor(dout), dwte, dwpe)

    want_te = dwte0.copy()
    np.add.at(want_te, ids.reshape(-1), dout.reshape(-1, C))
    np.testing.assert_array_equal(np.asarray(dwte), want_te)
    want_pe = dwpe0.astype(np.float64)
    want_pe[:T] += dout.astype(np.float64).sum(axis=0)
    assert_close(np.asarray(dwpe), want_pe, what="dwpe")
    np.testing.assert_array_equal(np.asarray(dwpe)[T:], dwpe0[T:])

    again = rl.tensor(dwte0)
    rl.ops.embedding_backward(rl.tensor(ids), rl.tensor(dout), again, None)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(dwte))


def test_embedding_bad_inputs():
    ids = rl.tensor(np.zeros((2, 4), np.int32))
    wte, wpe = rl.zeros([5, 3]), rl.zeros([4, 3])
    fwd = rl.ops.embedding_forward
    with pytest.raises(ValueError, match=r"embedding_forward: token id 5 at position 6 is outside the vocabulary \[0, 5\)"):
        fwd(rl.tensor(np.array([[0, 1, 2], [3, 4, 0], [5, 0, 0]], np.int32)), wte)
    with pytest.raises(ValueError, match=r"token id -1 at position 1 .*\[0, 5\)"):
        fwd(rl.tensor(np.array([[0, -1]], np.int32)), wte)
    with pytest.raises(ValueError, match="sequence length 5 exceeds the model's maximum of 4 positions"):
        fwd(rl.tensor(np.zeros((1, 5), np.int32)), wte, wpe)
    with pytest.raises(TypeError, match=r"embedding_forward: ids must be int32, got int64\[2, 4\]"):
        fwd(rl.tensor(np.zeros((2, 4), np.int64)), wte)
    with pytest.raises(ValueError, match=r"ids must have 2 dimensions, got int32\[8\]"):
        fwd(rl.tensor(np.zeros(8, np.int32)), wte)
    with pytest.raises(ValueError, match=r"wte must have 2 dimensions, got float32\[15\]"):
        fwd(ids, rl.zeros([15]))
    with pytest.raises(ValueError, match=r"wpe \(float32\[4, 2\].*\) and wte \(float32\[5, 3\].*same embedding width"):
        fwd(ids, wte, rl.zeros([4, 2]))
    with pytest.raises(TypeError, match="CPU implementation takes float32; wte is bfloat16"):
        fwd(ids, rl.zeros([5, 3], dtype="bfloat16"))
    with pytest.raises(TypeError, match="wte must be float32 or bfloat16, got int32"):
        fwd(ids, rl.zeros([5, 3], dtype="int32"))

    bwd = rl.ops.embedding_backward
    with pytest.raises(ValueError, match=r"embedding_backward: dout must have shape \[2, 4, 3\], got float32\[2, 4, 4\]"):
        bwd(ids, rl.zeros([2, 4, 4]), wte, wpe)
    with pytest.raises(ValueError, match="embedding_backward: token id 9"):
        bwd(rl.tensor(np.full((2, 4), 9, np.int32)), rl.zeros([2, 4, 3]), wte, wpe)
    with pytest.raises(ValueError, match="embedding_backward: sequence length 4 exceeds .* maximum of 3"):
        bwd(ids, rl.zeros([2, 4, 3]), wte, rl.zeros([3, 3]))
    with pytest.raises(TypeError, match="CPU implementation takes float32; dout is bfloat16"):
        bwd(ids, rl.zeros([2, 4, 3], dtype="bfloat16"), wte, wpe)


@pytest.mark.parametrize("B,T,V,C,R", [(1, 1, 1, 1, 1), (2, 7, 5, 3, 2), (3, 33, 11, 37, 3), (4, 65, 13, 130, 4)])
@pytest.mark.parametrize("with_wpe", [True, False])
def test_embedding_shard_sums_to_full(rng, B, T, V, C, R, with_wpe):
    """Vocabulary slices (uneven): the slices' outputs, wpe added by slice 0 only, sum to the
    full embedding; each slice's wte gradient is its rows of the full gradient."""
    ids = _ids(rng, B, T, V)
    wte = rng.standard_normal((V, C)).astype(np.float32)
    wpe = rng.standard_normal((T + 2, C)).astype(np.float32) if with_wpe else None
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    base, extra = divmod(V, R)
    starts = [r * base + min(r, extra) for r in range(R + 1)]
    total = np.zeros((B, T, C))
    dwpe_full = rl.zeros([T + 2, C]) if with_wpe else None
    dwte_full = rl.zeros([V, C])
    rl.ops.embedding_backward(rl.tensor(ids), rl.tensor(dout), dwte_full, dwpe_full)
    for r in range(R):
        a, b = starts[r], starts[r + 1]
        piece = np.ascontiguousarray(wte[a:b])
        out = rl.ops.embedding_shard_forward(rl.tensor(ids), rl.tensor(piece),
                                             rl.tensor(wpe) if with_wpe and r == 0 else None, a)
        total += np.asarray(out)
        dwte = rl.zeros([b - a, C])
        dwpe = rl.zeros([T + 2, C]) if with_wpe else None
        rl.ops.embedding_shard_backward(rl.tensor(ids), rl.tensor(dout), dwte, dwpe, a)
        np.testing.assert_array_equal(np.asarray(dwte), np.asarray(dwte_full)[a:b])
        if with_wpe:
            np.testing.assert_array_equal(np.asarray(dwpe), np.asarray(dwpe_full))
    assert_close(total, embedding(ids, wte, wpe))


def test_embedding_shard_ids_outside_the_slice_are_zero(rng):
    ids = np.array([[0, 5, 9, 2]], np.int32)
    wte = rng.standard_normal((3, 4)).astype(np.float32)   # rows 2, 3, 4 of the vocabulary
    out = np.asarray(rl.ops.embedding_shard_forward(rl.tensor(ids), rl.tensor(wte), None, 2))
    np.testing.assert_array_equal(out[0, [0, 1, 2]], np.zeros((3, 4)))
    np.testing.assert_array_equal(out[0, 3], wte[0])
    with pytest.raises(ValueError, match="vocab_start must be >= 0"):
        rl.ops.embedding_shard_forward(rl.tensor(ids), rl.tensor(wte), None, -1)
