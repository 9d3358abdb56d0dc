"""Loader: real windows, seed determinism, epoch coverage, the same global batch under any
data-parallel layout, exact resume, fixed val windows, and errors for impossible layouts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ringloom.data.loader import TokenLoader, ValLoader, local_rows, split_micro_batches
from ringloom.data.shards import write_shard


def positions(n: int) -> np.ndarray:
    """Token i is i: every window says where it came from."""
    return np.arange(n, dtype=np.int64)


def test_batches_are_windows():
    N, B, T = 1009, 5, 13
    loader = TokenLoader(positions(N), B, T, seed=3)
    for _ in range(40):  # several epochs (77 windows each)
        x, y = loader.next_batch()
        assert x.dtype == np.int32 and y.dtype == np.int32
        assert x.shape == (B, T) and y.shape == (B, T)
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
        np.testing.assert_array_equal(x, x[:, :1] + np.arange(T))  # contiguous text
        np.testing.assert_array_equal(y, x + 1)
        assert (y[:, -1] < N).all()


def test_epoch_covers_each_window_once():
    N, T = 1000, 7
    loader = TokenLoader(positions(N), 1, T, seed=11)
    orders = []
    for epoch in range(3):
        count = loader.windows_per_epoch
        starts = [int(loader.next_batch()[0][0, 0]) for _ in range(count)]
        orders.append(starts)
        assert loader.epoch == epoch + 1 and loader.index == 0
        offset = min(starts)
        assert offset < T
        assert sorted(starts) == list(range(offset, offset + count * T, T))
        assert offset + count * T + 1 > N - T  # no room for another window
        assert starts != sorted(starts)  # shuffled
    assert orders[0] != orders[1] != orders[2]  # reshuffled every epoch


def test_epoch_offsets_stay_below_seq_len():
    T = 3
    offsets = set()
    for seed in range(40):
        loader = TokenLoader(positions(100), 1, T, seed=seed)
        offsets.add(min(int(loader.next_batch()[0][0, 0]) for _ in range(loader.windows_per_epoch)))
    assert offsets == set(range(T))  # every cut is used, none past T - 1


def test_seed_determinism():
    data = positions(2001)
    a = TokenLoader(data, 4, 9, seed=5)
    b = TokenLoader(data, 4, 9, seed=5)
    c = TokenLoader(data, 4, 9, seed=6)
    xa = [a.next_batch()[0] for _ in range(30)]
    xb = [b.next_batch()[0] for _ in range(30)]
    xc = [c.next_batch()[0] for _ in range(30)]
    for p, q in zip(xa, xb):
        np.testing.assert_array_equal(p, q)
    assert any(not np.array_equal(p, q) for p, q in zip(xa, xc))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_distributed_equals_global_batch(world):
    data = positions(3001)
    B, T = 6, 11
    single = TokenLoader(data, B, T, seed=21)
    ranks = [TokenLoader(data, B, T, seed=21, rank=r, world=world) for r in range(world)]
    for _ in range(100):  # crosses epoch boundaries (272 windows / epoch)
        gx, gy = single.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert all(p[0].shape == (B // world, T) for p in parts)
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), gx)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), gy)
        for r, (px, _) in enumerate(parts):
            np.testing.assert_array_equal(px, gx[local_rows(B, r, world)])


def test_micro_batches_of_rank_batch():
    x, y = TokenLoader(positions(500), 12, 5, seed=1).next_batch()
    micro = split_micro_batches(x, y, 3)
    assert len(micro) == 3 and all(m[0].shape == (4, 5) for m in micro)
    np.testing.assert_array_equal(np.concatenate([m[0] for m in micro]), x)
    np.testing.assert_array_equal(np.concatenate([m[1] for m in micro]), y)
    with pytest.raises(ValueError, match="12 rows cannot be split into 5"):
        split_micro_batches(x, y, 5)


def test_resume_exact():
    data = positions(1501)
    B, T = 3, 17
    ref = TokenLoader(data, B, T, seed=9)
    for _ in range(37):
        ref.next_batch()
    state = json.loads(json.dumps(ref.state_dict()))  # survives a checkpoint's JSON
    expected = [ref.next_batch() for _ in range(60)]
    resumed = TokenLoader(data, B, T, seed=9)
    resumed.load_state_dict(state)
    for ex, got in zip(expected, (resumed.next_batch() for _ in range(60))):
        np.testing.assert_array_equal(ex[0], got[0])
        np.testing.assert_array_equal(ex[1], got[1])
    # The position is layout independent: a 3-rank loader resumes from it as well.
    rank1 = TokenLoader(data, B, T, seed=9, rank=1, world=3)
    rank1.load_state_dict(state)
    np.testing.assert_array_equal(rank1.next_batch()[0], expected[0][0][1:2])


def test_resume_mismatch():
    state = TokenLoader(positions(500), 2, 8, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        TokenLoader(positions(500), 2, 8, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="seq_len"):
        TokenLoader(positions(500), 2, 9, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="num_tokens"):
        TokenLoader(positions(501), 2, 8, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="outside the data"):
        TokenLoader(positions(500), 2, 8, seed=1).load_state_dict({**state, "index": 10**6})


def test_multiple_shards_from_files(tmp_path):
    # Two shards with disjoint id ranges: a window never mixes them.
    a, b = np.arange(0, 301), np.arange(1000, 1000 + 157)
    write_shard(tmp_path / "a.bin", a, 2000)
    write_shard(tmp_path / "b.bin", b, 2000)
    T = 10
    loader = TokenLoader([tmp_path / "a.bin", tmp_path / "b.bin"], 4, T, seed=0)
    seen_b = False
    for _ in range(30):
        x, y = loader.next_batch()
        full = np.concatenate([x, y[:, -1:]], axis=1)
        from_b = full[:, 0] >= 1000
        seen_b |= from_b.any()
        assert ((full >= 1000) == from_b[:, None]).all()
        np.testing.assert_array_equal(full, full[:, :1] + np.arange(T + 1))
    assert seen_b
    # A shard too short for one window is skipped; all too short is an error.
    TokenLoader([np.arange(5), np.arange(50)], 2, 10)


@pytest.mark.parametrize("n", [0, 1, 10])
def test_too_short(n):
    with pytest.raises(ValueError, match=r"seq_len \+ 1 = 11 tokens.*" + f"{n} tokens"):
        TokenLoader(np.arange(n), 1, 10)
    with pytest.raises(ValueError, match="too short"):
        ValLoader(np.arange(n), 1, 10, 4)


def test_bad_layouts():
    data = positions(100)
    with pytest.raises(ValueError, match="batch size 7 is not divisible.*world size 2"):
        TokenLoader(data, 7, 4, rank=0, world=2)
    with pytest.raises(ValueError, match="rank 3 is not in a world of size 3"):
        TokenLoader(data, 6, 4, rank=3, world=3)
    with pytest.raises(ValueError, match="seq_len"):
        TokenLoader(data, 6, 0)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_val_fixed_and_distributed(world):
    data = positions(2003)
    B, T = 6, 19
    val = ValLoader(data, B, T, num_batches=5)
    first = list(val)
    again = list(val)
    assert len(first) == len(val) == 5
    for (x, y), (x2, _) in zip(first, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, x + 1)
    starts = np.concatenate([x[:, 0] for x, _ in first])
    assert len(set(starts.tolist())) == len(starts)  # no window twice
    assert (starts % T == 0).all() and starts.max() > 2003 // 2  # spread over the data
    parts = [list(ValLoader(data, B, T, 5, rank=r, world=world)) for r in range(world)]
    for k, (x, _) in enumerate(first):
        np.testing.assert_array_equal(np.concatenate([p[k][0] for p in parts]), x)


def test_val_caps_batches_to_data():
    val = ValLoader(positions(100), 4, 9, num_batches=50)  # 11 windows -> 2 batches of 4
    assert len(val) == 2 and len(list(val)) == 2
