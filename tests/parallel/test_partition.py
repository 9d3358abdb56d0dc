"""Stage splits and the mesh layout (no processes)."""
from __future__ import annotations

import itertools

import pytest

from ringloom.models import get_preset
from ringloom.parallel import balanced_split, check_split, mesh_coord, mesh_rank, stage_blocks
from ringloom.parallel.partition import _costs


def _max_cost(cfg, counts):
    emb, blocks, head = _costs(cfg)
    out, start = [], 0
    for s, c in enumerate(counts):
        out.append(sum(blocks[start:start + c]) + (emb if s == 0 else 0) + (head if s == len(counts) - 1 else 0))
        start += c
    return max(out)


@pytest.mark.parametrize("n_layer,stages", [(7, 3), (4, 2), (5, 5), (9, 4), (1, 1)])
@pytest.mark.parametrize("vocab", [61, 4099])
def test_balanced_split_is_optimal(n_layer, stages, vocab):
    cfg = get_preset("tiny", n_layer=n_layer, n_embd=32, vocab_size=vocab, max_seq_len=16)
    counts = balanced_split(cfg, stages)
    assert sum(counts) == n_layer and all(c >= 1 for c in counts)
    best = min(_max_cost(cfg, c) for c in itertools.product(range(1, n_layer + 1), repeat=stages)
               if sum(c) == n_layer)
    assert _max_cost(cfg, counts) == best


def test_split_errors():
    cfg = get_preset("tiny", n_layer=7, n_embd=32, vocab_size=61, max_seq_len=16)
    assert check_split(cfg, [3, 2, 2], 3) == [3, 2, 2]
    assert stage_blocks([3, 2, 2]) == [[0, 1, 2], [3, 4], [5, 6]]
    with pytest.raises(ValueError, match="covers 6 layers"):
        check_split(cfg, [2, 2, 2], 3)
    with pytest.raises(ValueError, match="has 2 entries for 3"):
        check_split(cfg, [4, 3], 3)
    with pytest.raises(ValueError, match="needs at least one"):
        check_split(cfg, [7, 0, 0], 3)
    with pytest.raises(ValueError, match="cannot split 7 layers into 8"):
        balanced_split(cfg, 8)


def test_mesh_layout():
    dp, pp = 3, 2
    ranks = {mesh_rank(dp, pp, d, s) for d in range(dp) for s in range(pp)}
    assert ranks == set(range(dp * pp))
    for r in range(dp * pp):
        c = mesh_coord(dp, pp, r)
        assert mesh_rank(dp, pp, c.dp_index, c.pp_index) == r
    with pytest.raises(ValueError, match="outside"):
        mesh_rank(dp, pp, 3, 0)
