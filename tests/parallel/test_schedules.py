"""The schedule generators, checked without processes: every rank's list runs to the end
under the executor's semantics (simulate raises on a deadlock, a recv that would get the
wrong message, or a compute action before its inputs), counts are right, and the idealised
bubbles order as the papers say."""
from __future__ import annotations

import pytest

from ringloom.parallel.schedules import SCHEDULES, Action, Schedule, ideal_bubble, make_schedule, simulate

LAYOUTS = [(1, 1), (1, 3), (2, 1), (2, 2), (2, 5), (3, 3), (3, 7), (4, 4), (4, 8), (5, 13), (8, 16)]


def _valid(name, p, m):
    return not (name == "interleaved" and (p < 2 or m % p))


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("p,m", LAYOUTS)
def test_schedule_runs_and_orders(name, p, m):
    if not _valid(name, p, m):
        with pytest.raises(ValueError, match="interleaved"):
            make_schedule(name, p, m)
        return
    s = make_schedule(name, p, m)
    res = simulate(s)
    v = s.chunks
    for r, acts in enumerate(s.actions):
        seen = {}
        for i, a in enumerate(acts):
            if a.kind in ("F", "B", "W"):
                seen[(a.kind, a.mb, a.chunk)] = i
        # Each micro-batch: exactly one F, B, W per chunk, in that order on this rank.
        assert len(seen) == 3 * m * v
        for mb in range(m):
            for c in range(v):
                assert seen[("F", mb, c)] < seen[("B", mb, c)] < seen[("W", mb, c)], (r, mb, c)
        sends = sum(a.kind.startswith("SEND") for a in acts)
        recvs = sum(a.kind.startswith("RECV") for a in acts)
        stages = [c * p + r for c in range(v)]
        want = sum((s_ > 0) + (s_ < p * v - 1) for s_ in stages) * m
        assert sends == want and recvs == want, (r, sends, recvs, want)
    assert 0 <= res.bubble_fraction < 1


@pytest.mark.parametrize("p,m", [(2, 4), (3, 6), (4, 8), (4, 16), (8, 16)])
def test_bubbles(p, m):
    """GPipe and 1F1B with equal stage times have (p-1)/(m+p-1) idle; ZB-H1 (W in the
    bubbles) and interleaving have less."""
    b = {n: simulate(make_schedule(n, p, m)).bubble_fraction for n in SCHEDULES}
    assert b["1f1b"] == pytest.approx(ideal_bubble(p, m))
    assert b["gpipe"] == pytest.approx(ideal_bubble(p, m))
    assert b["zb-h1"] < b["1f1b"]
    assert b["interleaved"] < b["1f1b"]
    # ZB-H1 with F = B = W: makespan 3m + p - 1 (bubble p - 1 units instead of 3(p - 1)).
    assert simulate(make_schedule("zb-h1", p, m)).makespan == 3 * m + p - 1


def test_zb_h1_memory_bound():
    """No rank of ZB-H1 holds more micro-batches (F run, W not yet) than 1F1B's first rank."""
    p, m = 4, 12
    s = make_schedule("zb-h1", p, m)
    for acts in s.actions:
        live = peak = 0
        for a in acts:
            live += (a.kind == "F") - (a.kind == "W")
            peak = max(peak, live)
        assert peak <= p


def test_simulate_catches_broken_schedules():
    good = make_schedule("1f1b", 2, 3)
    # Swap two recvs of the last rank: it would read micro-batch 1's activation as 0's.
    acts = [list(a) for a in good.actions]
    i = next(k for k, a in enumerate(acts[1]) if a.kind == "RECV_F" and a.mb == 0)
    j = next(k for k, a in enumerate(acts[1]) if a.kind == "RECV_F" and a.mb == 1)
    acts[1][i], acts[1][j] = acts[1][j], acts[1][i]
    with pytest.raises(ValueError, match="expects micro-batch"):
        simulate(Schedule("bad", 2, 3, 1, acts))
    # A backward before its forward.
    acts = [list(a) for a in good.actions]
    acts[0].insert(0, Action("W", 2, 0))
    with pytest.raises(ValueError, match="before its own B2"):
        simulate(Schedule("bad", 2, 3, 1, acts))
    # Both ranks waiting for each other.
    acts = [[Action("RECV_B", 0, 0, 1), Action("F", 0, 0), Action("SEND_F", 0, 0, 1)],
            [Action("RECV_F", 0, 0, 0), Action("F", 0, 0)]]
    with pytest.raises(ValueError, match="deadlocks"):
        simulate(Schedule("bad", 2, 1, 1, acts))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown pipeline schedule 'pipedream'"):
        make_schedule("pipedream", 2, 4)
    with pytest.raises(ValueError, match="must be positive"):
        make_schedule("1f1b", 2, 0)
    with pytest.raises(ValueError, match="multiple of pp"):
        make_schedule("interleaved", 4, 6)
    with pytest.raises(ValueError, match="needs 'interleaved'"):
        make_schedule("1f1b", 2, 4, chunks=2)
