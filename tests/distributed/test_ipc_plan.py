"""CPU tests of the CUDA IPC transport's host logic: chunk plans, flag numbering, round
bookkeeping, the set-up decision and algorithm choice, and a randomized simulation of the
kernels' flag protocol over those plans (tests/distributed/ipc_sim.py). The kernels
themselves run in test_cuda_ipc.py, on machines with 2 or more GPUs."""
from __future__ import annotations

import numpy as np
import pytest

from ringloom import _C

from ipc_sim import Sim

ipc = _C.comm.ipc
ALIGN = ipc.ALIGN


def pieces(plan):
    for k in range(plan.rounds):
        for seg in range(plan.nseg):
            for c in range(plan.channels):
                for s in range(plan.nsub):
                    yield (k, seg, c, s), plan.piece(k, seg, c, s)


def ring_plan(count, n, region_elems=4096, sub_bytes=256, min_ch=512, esize=8):
    return ipc.make_plan(ipc.all_reduce_segments(count, n), region_elems, esize, sub_bytes, min_ch, 2 * n - 1)


@pytest.mark.parametrize("count,n", [(0, 2), (1, 2), (7, 3), (16, 4), (4999, 3), (20011, 5), (65537, 2), (3, 16)])
def test_all_reduce_plan_covers_every_element_once(count, n):
    off = ipc.all_reduce_segments(count, n)
    assert off[0] == 0 and off[-1] == count and len(off) == n + 1
    assert all(o % ALIGN == 0 or o == count for o in off), off  # segments start aligned
    plan = ring_plan(count, n)
    seen = np.zeros(count, np.int32)
    region = plan.nseg * plan.per_round
    for (k, seg, c, s), (elem, buf, cnt) in pieces(plan):
        assert 0 <= cnt <= plan.sub_elems
        if cnt:
            assert off[seg] <= elem and elem + cnt <= off[seg + 1], (k, seg, c, s, elem, cnt)
            assert 0 <= buf and buf + cnt <= region <= 4096
            assert elem % ALIGN == 0 and buf % ALIGN == 0  # 16-byte vectors for every dtype
            seen[elem:elem + cnt] += 1
    assert np.all(seen == 1), f"elements moved {np.unique(seen)} times"
    assert plan.rounds == (0 if count == 0 else -(-max(np.diff(off)) // plan.per_round))


@pytest.mark.parametrize("m,n", [(1, 2), (7, 3), (1001, 4), (3001, 5)])
def test_equal_segment_plan_and_region_disjoint_per_round(m, n):
    plan = ipc.make_plan(ipc.equal_segments(m, n), 2048, 4, 128, 256, n)
    seen = np.zeros(m * n, np.int32)
    for k in range(plan.rounds):
        used = np.zeros(plan.nseg * plan.per_round, np.int32)  # a round's region slots: each used once
        for seg in range(plan.nseg):
            for c in range(plan.channels):
                for s in range(plan.nsub):
                    elem, buf, cnt = plan.piece(k, seg, c, s)
                    seen[elem:elem + cnt] += 1
                    used[buf:buf + cnt] += 1
        assert used.max(initial=0) <= 1
    assert np.all(seen == 1)


def test_plan_limits_and_errors():
    # Tiny sub-chunks in a wide channel: the step index (steps * nsub) must still fit 16 bits.
    plan = ipc.make_plan([0, 1 << 22], 1 << 22, 4, 16, 1 << 30, 31, 1)
    assert plan.channels == 1 and plan.steps * plan.nsub < (1 << ipc.STEP_BITS)
    assert plan.sub_elems % ALIGN == 0
    plan = ipc.make_plan([0, 100], 1 << 20, 4, 1 << 20, 64, 1)
    assert plan.rounds == 1 and plan.channels <= ipc.MAX_CHANNELS and plan.nsub == 1
    with pytest.raises(ValueError, match="cannot hold"):
        ipc.make_plan(ipc.all_reduce_segments(100, 4), 32, 4, 64, 64, 7)
    with pytest.raises(ValueError, match="segments"):
        ipc.make_plan([0] * 18, 1 << 20, 4, 64, 64, 1)
    with pytest.raises(ValueError, match="decrease"):
        ipc.make_plan([0, 10, 5], 1 << 20, 4, 64, 64, 1)
    with pytest.raises(IndexError, match="out of range"):
        ipc.make_plan([0, 100], 1 << 20, 4, 64, 64, 1).piece(1, 0, 0, 0)


def test_ready_values_grow_along_each_producers_order():
    """Across a sequence of ops with different plans, every value a producer emits is larger
    than all it emitted before, and below the next round's values: a consumer waiting for
    (round, step, sub) is released by that emission and by nothing earlier."""
    rounds = ipc.Rounds()
    prev = 0
    for n, count in [(2, 5000), (4, 17), (3, 100003), (5, 0), (2, 1)]:
        plan = ring_plan(count, n, region_elems=8192)
        g0 = rounds.take(plan.rounds)
        for g in range(g0, g0 + plan.rounds):
            for j in range(2 * n - 1):
                for s in range(plan.nsub):
                    v = ipc.ready_value(g, j, s, plan.nsub)
                    assert v > prev and v < (g + 1) << ipc.STEP_BITS and v >> ipc.STEP_BITS == g
                    prev = v
    assert rounds.next == g0 + plan.rounds


def test_rounds_and_acks():
    r = ipc.Rounds()
    assert r.take(0) == 1 and r.take(3) == 1 and r.take(2) == 4 and r.next == 6
    assert [ipc.ack_needed(g) for g in range(1, 6)] == [0, 0, 1, 2, 3]


def test_refusal_decisions():
    gpus = ["0000:19:00.0", "0000:3b:00.0", "0000:4c:00.0"]
    assert ipc.refusal(["a"] * 3, gpus) == ""
    msg = ipc.refusal(["a", "a", "b"], gpus)
    assert "rank 2" in msg and "'b'" in msg and "one host" in msg
    shared = [gpus[0], gpus[1], gpus[0]]
    msg = ipc.refusal(["a"] * 3, shared)
    assert "ranks 0 and 2" in msg and gpus[0] in msg and "Multi-Process Service" in msg
    assert "RINGLOOM_IPC=0" in ipc.refusal(["a"] * 3, gpus, disabled=True)


def test_ranks_share_a_gpu_only_as_mps_clients():
    """Ranks on one GPU: accepted when every one of them runs under MPS, refused naming the
    rank that does not otherwise; ranks with GPUs of their own need no MPS."""
    gpus = ["0000:19:00.0"] * 4
    assert ipc.refusal(["a"] * 4, gpus, mps=[True] * 4) == ""
    msg = ipc.refusal(["a"] * 4, gpus, mps=[True, True, False, True])
    assert "ranks 0 and 2" in msg and "rank 2 is not a client" in msg and "nvidia-cuda-mps-control -d" in msg
    msg = ipc.refusal(["a"] * 4, gpus, mps=[False, True, True, True])
    assert "ranks 0 and 1" in msg and "rank 0 is not a client" in msg
    assert ipc.refusal(["a"] * 2, ["0000:19:00.0", "0000:3b:00.0"], mps=[False, True]) == ""
    mixed = ["0000:19:00.0", "0000:3b:00.0", "0000:19:00.0", "0000:3b:00.0"]
    assert ipc.refusal(["a"] * 4, mixed, mps=[True] * 4) == ""
    assert "ranks 1 and 3" in ipc.refusal(["a"] * 4, mixed, mps=[True, False, True, False])
    with pytest.raises(ValueError):
        ipc.refusal(["a", "a"], ["x", "x"], mps=[True])
    assert "one rank" in ipc.refusal(["a"], gpus[:1])
    assert "17 ranks" in ipc.refusal(["a"] * 17, [str(i) for i in range(17)])
    assert "no GPU" in ipc.refusal(["a", "a"], ["x", ""])
    with pytest.raises(ValueError):
        ipc.refusal(["a", "a"], ["x"])
    assert "/" in ipc.host_id()


def test_host_id_override(monkeypatch):
    monkeypatch.setenv("RINGLOOM_HOST_ID", "node-7")
    assert ipc.host_id() == "node-7"


def test_choose_algo():
    kib = 1 << 10
    assert ipc.choose_algo(False, 0, 256 * kib, 16 << 20) == "one-shot"
    assert ipc.choose_algo(True, 256 * kib, 256 * kib, 16 << 20) == "one-shot"
    assert ipc.choose_algo(False, 256 * kib + 1, 256 * kib, 16 << 20) == "ring"
    assert ipc.choose_algo(True, 256 * kib + 1, 256 * kib, 16 << 20) == "tree"
    assert ipc.choose_algo(False, 1 << 20, 1 << 30, 512 * kib) == "ring"  # one-shot needs one region
    assert ipc.choose_algo(True, 8, 0, 16 << 20) == "tree"


def tree_plan(count, region_elems=4096):
    return ipc.make_plan([0, count], region_elems, 8, 256, 512, 2)


def oneshot_plan(count, region_elems=4096):
    return ipc.make_plan([0, count], region_elems, 8, region_elems * 8, 128, 1)


def chain_plan(count, region_elems=4096):
    return ipc.make_plan([0, count], region_elems, 8, 256, 512, 1)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_simulated_protocol_every_op_in_sequence(n, seed):
    """All op kinds one after another on each rank (so plans with different channel counts
    and slots share the flags), random interleavings, several rounds per op."""
    rng = np.random.default_rng([n, seed])
    sim = Sim(n, 4096, seed)
    checks = []

    def ints(k):
        return rng.integers(-(1 << 40), 1 << 40, k)

    for count in (0, 1, 7, 4999):
        inputs = [ints(count) for _ in range(n)]
        outs = [np.full(count, -1, np.int64) for _ in range(n)]
        for r in range(n):
            sim.launch(r, ring_plan(count, n), sim.ring, first=0, last=2 * n - 2, inp=inputs[r], out=outs[r])
        checks.append(("ring all_reduce", outs, sum(inputs)))

        m = count // 2 + 1
        rs_in = [ints(m * n) for _ in range(n)]
        rs_out = [np.full(m, -1, np.int64) for _ in range(n)]
        plan = ipc.make_plan(ipc.equal_segments(m, n), 4096, 8, 256, 512, n)
        for r in range(n):
            sim.launch(r, plan, sim.ring, first=0, last=n - 1, inp=rs_in[r], out=rs_out[r], out_sub=m * r)
        total = sum(rs_in)
        checks.append(("reduce_scatter", rs_out, [total[r * m:(r + 1) * m] for r in range(n)]))

        ag_in = [ints(m) for _ in range(n)]
        ag_out = [np.full(m * n, -1, np.int64) for _ in range(n)]
        for r in range(n):
            sim.launch(r, plan, sim.ring, first=n - 1, last=2 * n - 2, inp=ag_in[r], out=ag_out[r], in_sub=m * r,
                       copy=True)
        checks.append(("all_gather", ag_out, np.concatenate(ag_in)))

        t_in = [ints(count) for _ in range(n)]
        t_out = [np.full(count, -1, np.int64) for _ in range(n)]
        for r in range(n):
            sim.launch(r, tree_plan(count), sim.tree, inp=t_in[r], out=t_out[r])
        checks.append(("tree all_reduce", t_out, sum(t_in)))

        small = min(count, 3000)
        o_in = [ints(small) for _ in range(n)]
        o_out = [np.full(small, -1, np.int64) for _ in range(n)]
        for r in range(n):
            sim.launch(r, oneshot_plan(small), sim.oneshot, inp=o_in[r], out=o_out[r])
        checks.append(("one-shot all_reduce", o_out, sum(o_in)))

        root = (count + seed) % n
        b = [ints(count) if r == root else np.full(count, -1, np.int64) for r in range(n)]
        want = b[root].copy()
        for r in range(n):
            sim.launch(r, chain_plan(count), sim.broadcast, root=root, buf_t=b[r])
        checks.append(("broadcast", b, want))
    sim.run()
    for what, outs, want in checks:
        for r, got in enumerate(outs):
            exp = want[r] if isinstance(want, list) else want
            assert np.array_equal(got, exp), f"{what} wrong on rank {r}"


def test_simulation_catches_a_missing_slot_guard():
    """The simulation can fail: a broadcast root depends on nobody, so without the ack wait
    it runs ahead and overwrites a slot (round g + 2) that the next rank is still reading
    (round g). With the wait, the same interleavings give the right bytes."""
    n, count = 3, 5000

    def run(seed, guard):
        sim = Sim(n, 1024, seed)  # small regions: every broadcast takes several rounds
        if not guard:
            sim.wait_acks = lambda me, g: iter(())
        rng = np.random.default_rng(seed)
        checks = []
        for _ in range(3):
            b = [rng.integers(0, 1000, count) if r == 0 else np.full(count, -1, np.int64) for r in range(n)]
            checks.append((b, b[0].copy()))
            for r in range(n):
                sim.launch(r, chain_plan(count, 1024), sim.broadcast, root=0, buf_t=b[r])
        try:
            sim.run()
        except AssertionError:
            return False
        return all(np.array_equal(o, want) for outs, want in checks for o in outs)

    assert all(run(seed, True) for seed in range(3))
    assert not any(run(seed, False) for seed in range(3)), "removing the ack wait went unnoticed"


def test_group_reports_cuda_transport(monkeypatch):
    """Before any CUDA op the transport is undecided; the one-shot threshold is per group."""
    import ringloom.distributed as dist
    monkeypatch.delenv("RINGLOOM_IPC_ONESHOT_MAX_BYTES", raising=False)
    pg = dist.init(backend="ring", timeout=10)
    try:
        assert pg.cuda_transport == "undecided"
        a = np.arange(5, dtype=np.int64)
        pg.all_reduce(a)
        assert pg.cuda_transport == "undecided" and np.array_equal(a, np.arange(5))
        assert pg.ipc_oneshot_max_bytes == 256 << 10
        pg.ipc_oneshot_max_bytes = 1000
        assert pg.ipc_oneshot_max_bytes == 1000
    finally:
        dist.destroy()


def test_channel_limit_divides_by_the_ranks_sharing_a_gpu():
    """Every channel spins on its peers, so all must be resident at once: ranks sharing a GPU
    split the channels, by the most ranks on any one GPU (the same answer on every rank)."""
    a, b = "0000:19:00.0", "0000:3b:00.0"
    top = ipc.channel_limit([a, b])
    assert top == ipc.channel_limit([a]) and top >= 2
    assert ipc.channel_limit([a, a]) == top // 2
    assert ipc.channel_limit([a] * 4) == top // 4
    assert ipc.channel_limit([a, a, a, b]) == top // 3  # the busiest GPU decides
    assert ipc.channel_limit([a] * (4 * top)) == 1
    plan = ipc.make_plan([0, 1 << 24], 1 << 22, 4, 1 << 16, 1 << 10, 7, max_channels=ipc.channel_limit([a] * 4))
    assert 1 <= plan.channels <= top // 4
