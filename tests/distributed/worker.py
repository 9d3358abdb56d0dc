"""What each rank runs in the multi-process tests: `python worker.py <scenario> [args]`.

A scenario prints "PASS <scenario> rank <r>" when every check held; any failed check
raises, so the rank exits non-zero with the traceback on its output.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

# tests/ on the path: the reference math lives in tests/reference/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ringloom as rl  # noqa: E402
import ringloom.distributed as dist  # noqa: E402
from reference.collectives import DTYPES, FLOATS, check_reduced, make_input  # noqa: E402

SEED = int(os.environ.get("RL_TEST_SEED", "1234"))


def to_rl(a: np.ndarray, dtype: str) -> rl.Tensor:
    if dtype == "bfloat16":
        return rl.tensor(a.astype(np.float32), dtype="bfloat16")  # exact: values are bf16 already
    return rl.tensor(a)


def from_rl(t: rl.Tensor) -> np.ndarray:
    return np.array(t)


def poisoned(count: int, dtype: str) -> rl.Tensor:
    """An output buffer full of NaN (or the dtype's max): an op that skips elements shows."""
    if dtype in ("float32", "bfloat16", "float16"):
        a = np.full(count, np.nan, np.float32 if dtype != "float16" else np.float16)
        return rl.tensor(a, dtype=dtype)
    return rl.tensor(np.full(count, np.iinfo(dtype).max, dtype=dtype))


def same_bits_everywhere(pg, t: rl.Tensor, what: str) -> None:
    """All ranks must hold bit-identical results (the algorithms hand round one result)."""
    raw = np.ascontiguousarray(from_rl(t)).view(np.uint8)
    out = np.empty(raw.size * pg.size, np.uint8)
    pg.all_gather(out, raw.copy())
    for r in range(pg.size):
        assert np.array_equal(out[r * raw.size:(r + 1) * raw.size], raw), f"{what}: rank {r} holds different bits"


def check_all_reduce(pg, backend: str, sizes) -> None:
    n, r = pg.size, pg.rank
    for dtype in DTYPES:
        for count in sizes:
            inputs = [make_input(dtype, count, q, SEED) for q in range(n)]
            for op in ("sum", "max") + (("avg",) if dtype in FLOATS else ()):
                t = to_rl(inputs[r], dtype)
                pg.all_reduce(t, op=op)
                check_reduced(from_rl(t), inputs, op, dtype, f"all_reduce {backend} {op} {dtype}[{count}]")
            if count == 7:
                same_bits_everywhere(pg, t, f"all_reduce {backend} {dtype}[{count}]")


def check_reduce_scatter(pg, backend: str) -> None:
    n, r = pg.size, pg.rank
    for dtype in DTYPES:
        for m in (0, 1, 7, 20011):
            inputs = [make_input(dtype, n * m, q, SEED + 1) for q in range(n)]
            for op in ("sum", "max") + (("avg",) if dtype in FLOATS else ()):
                src = to_rl(inputs[r], dtype)
                out = poisoned(m, dtype)
                pg.reduce_scatter(out, src, op=op)
                check_reduced(from_rl(out), [x[r * m:(r + 1) * m] for x in inputs], op, dtype,
                              f"reduce_scatter {backend} {op} {dtype}[{n}x{m}]")
                assert np.array_equal(from_rl(src).view(np.uint8), inputs[r].view(np.uint8)), "input was modified"


def check_data_movement(pg) -> None:
    """all_gather, broadcast and send/recv copy bytes: every dtype, float16 included."""
    n, r = pg.size, pg.rank
    for dtype in DTYPES + ("float16",):
        for m in (0, 1, 7, 100003):
            inputs = [make_input(dtype, m, q, SEED + 2) for q in range(n)]
            out = poisoned(n * m, dtype)
            pg.all_gather(out, to_rl(inputs[r], dtype))
            assert np.array_equal(from_rl(out).view(np.uint8), np.concatenate(inputs).view(np.uint8)), \
                f"all_gather {dtype}[{m}]"
            for src in range(n):
                t = to_rl(inputs[r], dtype) if r == src else poisoned(m, dtype)
                pg.broadcast(t, src)
                assert np.array_equal(from_rl(t).view(np.uint8), inputs[src].view(np.uint8)), \
                    f"broadcast {dtype}[{m}] from {src}"
    if n > 1:
        # An exchange in both directions at once (pipeline activations forward, gradients
        # back): sends are asynchronous so this cannot deadlock, even past socket buffers.
        for m in (1, 3_000_001):
            nxt, prv = (r + 1) % n, (r - 1) % n
            a = make_input("int32", m, r, SEED + 3)
            got = poisoned(m, "int32")
            w = pg.send(rl.tensor(a), nxt, async_op=True)
            pg.recv(got, prv)
            w.wait(timeout=30)
            assert np.array_equal(from_rl(got), make_input("int32", m, prv, SEED + 3)), f"send/recv [{m}]"


def check_async(pg) -> None:
    n, r = pg.size, pg.rank
    inputs = [[make_input("float32", 50001, q, SEED + 10 + i) for q in range(n)] for i in range(4)]
    ts = [to_rl(x[r], "float32") for x in inputs]
    works = [pg.all_reduce(t, async_op=True) for t in ts]
    for i, w in enumerate(works):
        w.wait(timeout=30)
        assert w.is_completed()
        check_reduced(from_rl(ts[i]), inputs[i], "sum", "float32", f"async all_reduce #{i}")
    pg.barrier(async_op=True).wait(timeout=30)


def check_subgroups(pg) -> None:
    """A 2 x (n/2) mesh: data-parallel groups across pipeline stages, pipeline groups within."""
    n, r = pg.size, pg.rank
    if n < 4:
        return
    pp = 2
    dp = n // pp
    stage = r % pp if r < dp * pp else None
    dp_groups = [[s + pp * i for i in range(dp)] for s in range(pp)]
    pp_groups = [[pp * i + s for s in range(pp)] for i in range(dp)]
    mine_dp = [pg.new_group(g, backend="ring") for g in dp_groups]
    mine_pp = [pg.new_group(g, backend="tree") for g in pp_groups]
    for groups, sub in ((dp_groups, mine_dp), (pp_groups, mine_pp)):
        for g, s in zip(groups, sub):
            if r not in g:
                assert s is None
                continue
            assert s.size == len(g) and s.members == g and s.rank == g.index(r)
            inputs = [make_input("int64", 1001, q, SEED + 20) for q in g]
            t = rl.tensor(inputs[s.rank])
            s.all_reduce(t)
            check_reduced(from_rl(t), inputs, "sum", "int64", f"sub-group {g} all_reduce")
    assert stage is None or stage in (0, 1)
    pg.barrier()


def check_bad_calls(pg) -> None:
    """Refused in the caller (the group stays usable): wrong dtype, op, sizes, ranks."""
    n = pg.size

    def raises(exc, needle, fn):
        try:
            fn()
        except exc as e:
            assert needle in str(e), f"message {str(e)!r} lacks {needle!r}"
            return
        raise AssertionError(f"expected {exc.__name__} containing {needle!r}")

    raises(TypeError, "float16", lambda: pg.all_reduce(rl.tensor(np.ones(3, np.float16))))
    raises(ValueError, "avg", lambda: pg.all_reduce(rl.tensor(np.ones(3, np.int32)), op="avg"))
    raises(ValueError, "unknown reduce op", lambda: pg.all_reduce(rl.tensor(np.ones(3, np.float32)), op="prod"))
    raises(ValueError, "size x output", lambda: pg.reduce_scatter(rl.tensor(np.ones(2, np.float32)),
                                                                  rl.tensor(np.ones(2 * n + 1, np.float32))))
    raises(TypeError, "differ in dtype", lambda: pg.all_gather(rl.tensor(np.ones(n, np.float32)),
                                                               rl.tensor(np.ones(1, np.int32))))
    raises(IndexError, "src=", lambda: pg.broadcast(rl.tensor(np.ones(2, np.float32)), n))
    raises(IndexError, "dst=", lambda: pg.send(rl.tensor(np.ones(2, np.float32)), pg.rank))
    raises(TypeError, "numpy.ndarray", lambda: pg.all_reduce([1.0, 2.0]))
    t = rl.tensor(np.ones(5, np.float32))
    pg.all_reduce(t)  # still usable
    assert np.all(from_rl(t) == n)


def scenario_collectives(argv) -> None:
    pg = dist.init(backend="auto", timeout=60)
    check_bad_calls(pg)
    for backend in ("ring", "tree", "auto"):
        g = pg.new_group(range(pg.size), backend=backend)
        assert g.backend == backend
        check_all_reduce(g, backend, (0, 1, 7, 1000003) if backend != "tree" else (0, 1, 7, 100003))
        check_reduce_scatter(g, backend)
        g.shutdown()
    check_data_movement(pg)
    check_async(pg)
    check_subgroups(pg)
    # One large message: 16 MiB of int64 must sum exactly.
    big = [make_input("int64", 2 << 20, q, SEED + 30) for q in range(pg.size)]
    t = rl.tensor(big[pg.rank])
    pg.all_reduce(t)
    check_reduced(from_rl(t), big, "sum", "int64", "all_reduce int64 16 MiB")


def scenario_peer_dies(argv) -> None:
    """The last rank SIGKILLs itself after one op; the others must raise, naming the op."""
    timeout = float(argv[0])
    pg = dist.init(backend=argv[1], timeout=timeout)
    t = rl.tensor(np.ones(200003, np.float32))
    pg.all_reduce(t)
    if pg.rank == pg.size - 1:
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    try:
        for _ in range(100):
            pg.all_reduce(t)
    except (RuntimeError, TimeoutError) as e:
        print(f"RAISED {type(e).__name__} after {time.monotonic() - t0:.2f}s: {e}", flush=True)
        # The group is now broken: later ops repeat the cause at once.
        try:
            pg.barrier()
        except (RuntimeError, TimeoutError) as e2:
            assert "earlier error" in str(e2), e2
            print("BROKEN-OK", flush=True)
        return
    raise AssertionError("no error although a peer died")


def scenario_peer_stuck(argv) -> None:
    """The last rank stops (SIGSTOP) instead of dying: the others must time out."""
    timeout = float(argv[0])
    pg = dist.init(backend="ring", timeout=timeout)
    pg.barrier()
    pg.all_reduce(rl.tensor(np.ones(3, np.int64)))
    if pg.rank == pg.size - 1:
        print("STOPPING", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    t0 = time.monotonic()
    try:
        pg.all_reduce(rl.tensor(np.ones(1000, np.float32)))
    except TimeoutError as e:
        print(f"RAISED TimeoutError after {time.monotonic() - t0:.2f}s: {e}", flush=True)
        return
    except RuntimeError as e:  # a peer that itself timed out and closed first
        print(f"RAISED RuntimeError after {time.monotonic() - t0:.2f}s: {e}", flush=True)
        return
    raise AssertionError("no error although a peer is stuck")


def scenario_join(argv) -> None:
    """init with the environment as given; report the error if joining fails."""
    try:
        pg = dist.init(timeout=float(argv[0]))
    except (RuntimeError, TimeoutError) as e:
        print(f"JOIN-FAILED {type(e).__name__}: {e}", flush=True)
        return
    pg.barrier()
    print(f"JOINED rank {pg.rank}", flush=True)


def scenario_launcher(argv) -> None:
    """For the launcher tests: print, then exit with the code asked of this rank."""
    rank = int(os.environ["RANK"])
    print(f"hello from {rank} of {os.environ['WORLD_SIZE']} restart {os.environ['RINGLOOM_RESTART_COUNT']}")
    print(f"to stderr {rank}", file=sys.stderr)
    codes = dict(kv.split("=") if "=" in kv else (kv, "") for kv in argv)  # "1=3": rank 1 exits with 3
    if str(rank) in codes:
        if os.environ["RINGLOOM_RESTART_COUNT"] == "0" or "always" in codes:
            sys.exit(int(codes[str(rank)]))
    if "hang" in codes and str(rank) not in codes:
        time.sleep(60)  # must be ended by the launcher


# ---- CUDA IPC (tests/distributed/test_cuda_ipc.py: 2 or more GPUs) ----

IPC_ALGO_TAG = {"ring": "[ipc ring]", "tree": "[ipc tree]", "oneshot": "[ipc one-shot]"}


def ipc_region_bytes() -> int:
    """One region of the IPC buffer (as csrc/comm/cuda/ipc_group.cpp cuts it): the most a
    one-shot all-reduce can carry."""
    total = int(os.environ.get("RINGLOOM_IPC_BUFFER_BYTES") or 64 << 20)
    return total // 4 // 4096 * 4096


def to_dev(a: np.ndarray, dtype: str, dev: str) -> rl.Tensor:
    return to_rl(a, dtype).to(dev)


def ipc_group(algo: str, timeout: float):
    """The world, and a group whose CUDA all_reduce runs `algo` (ring, tree or oneshot)."""
    pg = dist.init(backend="auto", timeout=timeout)
    dev = f"cuda:{pg.info.local_rank % rl.cuda_device_count()}"
    g = pg.new_group(range(pg.size), backend="tree" if algo == "tree" else "ring")
    g.ipc_oneshot_max_bytes = (1 << 62) if algo == "oneshot" else 0
    t = to_dev(np.ones(5, np.float32), "float32", dev)
    g.all_reduce(t)  # the first CUDA op sets the transport up
    assert g.cuda_transport == "ipc", f"rank {g.rank}: {g.cuda_transport}"
    assert np.all(from_rl(t) == g.size)
    return pg, g, dev


def scenario_ipc(argv) -> None:
    """Every all_reduce op and dtype through one IPC algorithm; with ring, also the other
    collectives (check_cuda_collectives)."""
    algo = argv[0]
    pg, g, dev = ipc_group(algo, 120.0)
    check_cuda_collectives(pg, g, dev, algo)


def nccl_one_rank_unwritten(count: int, esize: int) -> int:
    """Elements NCCL's one-rank reduction kernel (oneRankReduce, which runs avg when a
    communicator has one rank) leaves unwritten: it launches min(32, ceil(bytes / 16 KiB))
    blocks of alignUp(count // blocks, 16 B of elements) elements each, so when the floor
    drops elements and the alignment does not make them up, the tail is never written."""
    blocks = min(32, -(-count * esize // (16 << 10)))
    if blocks == 0:
        return 0
    per_pack = 16 // esize
    per_block = -(-(count // blocks) // per_pack) * per_pack
    return max(0, count - blocks * per_block)


# Sizes at which that kernel would leave the tail unwritten (tests/distributed/test_nccl_avg.py
# checks that they do): avg must still write every element, in place and out of place.
AVG_TAIL_SIZES = {"float32": 131073, "bfloat16": 262145}


def check_avg_tails(g, dev: str, label: str) -> None:
    n, r = g.size, g.rank
    for dtype, m in AVG_TAIL_SIZES.items():
        inputs = [make_input(dtype, m, q, SEED + 70) for q in range(n)]
        t = to_dev(inputs[r], dtype, dev)
        g.all_reduce(t, op="avg")
        check_reduced(from_rl(t), inputs, "avg", dtype, f"{label} all_reduce avg {dtype}[{m}]")
        inputs = [make_input(dtype, n * m, q, SEED + 71) for q in range(n)]
        out = poisoned(m, dtype).to(dev)
        g.reduce_scatter(out, to_dev(inputs[r], dtype, dev), op="avg")
        check_reduced(from_rl(out), [x[r * m:(r + 1) * m] for x in inputs], "avg", dtype,
                      f"{label} reduce_scatter avg {dtype}[{n}x{m}]")


def scenario_nccl(argv) -> None:
    """Every op and dtype through the NCCL backend on CUDA tensors (check_cuda_collectives),
    avg at the sizes NCCL's one-rank kernel gets wrong, then send/recv between rank pairs."""
    pg = dist.init(backend="nccl", timeout=120.0)
    dev = f"cuda:{pg.info.local_rank % rl.cuda_device_count()}"
    assert pg.cuda_transport == "nccl", pg.cuda_transport
    check_avg_tails(pg, dev, "nccl")
    check_cuda_collectives(pg, pg, dev, None)
    n, r = pg.size, pg.rank
    if n % 2 == 0:
        peer = r ^ 1
        for dtype in DTYPES:
            mine, theirs = make_input(dtype, 1001, r, SEED + 60), make_input(dtype, 1001, peer, SEED + 60)
            out = poisoned(1001, dtype).to(dev)
            if r % 2 == 0:
                pg.send(to_dev(mine, dtype, dev), peer)
                pg.recv(out, peer)
            else:
                pg.recv(out, peer)
                pg.send(to_dev(mine, dtype, dev), peer)
            assert np.array_equal(from_rl(out).view(np.uint8), theirs.view(np.uint8)), f"nccl send/recv {dtype}"


def check_cuda_collectives(pg, g, dev: str, algo: str | None) -> None:
    """Every all_reduce op and dtype of `g` on CUDA tensors; unless algo names an IPC
    algorithm other than ring, also reduce_scatter, all_gather, broadcast and overlapping
    async ops. Sizes 0, 1, 7, odd and 64 MiB (of the tensor's own bytes; sum only at that
    size). algo: the IPC algorithm the ops must report running ("ring", "tree", "oneshot"),
    or None for NCCL."""
    label = f"ipc {algo}" if algo else "nccl"
    n, r = g.size, g.rank
    big = 64 << 20
    for dtype in DTYPES:
        es = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        for count in (0, 1, 7, 100003, big // es + 3):
            inputs = [make_input(dtype, count, q, SEED) for q in range(n)]
            ops = ("sum",) if count > (1 << 20) else ("sum", "max") + (("avg",) if dtype in FLOATS else ())
            for op in ops:
                t = to_dev(inputs[r], dtype, dev)
                w = g.all_reduce(t, op=op, async_op=True)
                if count and algo:
                    expect = algo if algo != "oneshot" or count * es <= ipc_region_bytes() else "ring"
                    assert IPC_ALGO_TAG[expect] in w.op, w.op
                w.wait(timeout=120)
                check_reduced(from_rl(t), inputs, op, dtype, f"{label} all_reduce {op} {dtype}[{count}]")
            if count == 7 or count == 100003:
                same_bits_everywhere(pg, t, f"{label} all_reduce {dtype}[{count}]")
    if algo not in (None, "ring"):
        return
    for dtype in DTYPES:
        es = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        for m in (0, 1, 7, 20011, (16 << 20) // es + 1):
            inputs = [make_input(dtype, n * m, q, SEED + 1) for q in range(n)]
            for op in ("sum", "max") + (("avg",) if dtype in FLOATS else ()):
                src = to_dev(inputs[r], dtype, dev)
                out = poisoned(m, dtype).to(dev)
                w = g.reduce_scatter(out, src, op=op, async_op=True)
                assert algo is None or "[ipc ring]" in w.op, w.op
                w.wait(timeout=120)
                check_reduced(from_rl(out), [x[r * m:(r + 1) * m] for x in inputs], op, dtype,
                              f"{label} reduce_scatter {op} {dtype}[{n}x{m}]")
                assert np.array_equal(from_rl(src).view(np.uint8), inputs[r].view(np.uint8)), "input was modified"
    for dtype in DTYPES + ("float16",):
        for m in (0, 1, 7, 100003, (8 << 20) + 5):
            inputs = [make_input(dtype, m, q, SEED + 2) for q in range(n)]
            out = poisoned(n * m, dtype).to(dev)
            g.all_gather(out, to_dev(inputs[r], dtype, dev))
            assert np.array_equal(from_rl(out).view(np.uint8), np.concatenate(inputs).view(np.uint8)), \
                f"{label} all_gather {dtype}[{m}]"
            for root in range(n):
                t = to_dev(inputs[r], dtype, dev) if r == root else poisoned(m, dtype).to(dev)
                g.broadcast(t, root)
                assert np.array_equal(from_rl(t).view(np.uint8), inputs[root].view(np.uint8)), \
                    f"{label} broadcast {dtype}[{m}] from {root}"
    # Several ops in flight at once, of different algorithms and channel counts, then a
    # barrier (TCP) that completes after them.
    if algo:
        g.ipc_oneshot_max_bytes = 64 << 10
    sizes = (3, 50001, 9, 2_000_003, 1)
    inputs = [[make_input("float32", k, q, SEED + 40 + i) for q in range(n)] for i, k in enumerate(sizes)]
    ts = [to_dev(x[r], "float32", dev) for x in inputs]
    works = [g.all_reduce(t, async_op=True) for t in ts]
    g.barrier()
    for i, w in enumerate(works):
        assert w.is_completed(), f"async op {i} not done after a later barrier"
        w.wait(timeout=60)
        check_reduced(from_rl(ts[i]), inputs[i], "sum", "float32", f"{label} async all_reduce #{i}")


def scenario_nccl_shared_gpu(argv) -> None:
    """Every rank on one GPU with backend='nccl': init must refuse, naming the shared GPU."""
    try:
        dist.init(backend="nccl", timeout=60.0)
    except ValueError as e:
        print(f"REFUSED {e}", flush=True)
        return
    raise AssertionError("backend='nccl' accepted two ranks on one GPU")


def scenario_ipc_peer_dies(argv) -> None:
    """The last rank SIGKILLs itself after one IPC (or, with algo "nccl", NCCL) op; the
    others must raise within the timeout, naming the op (and, over IPC, a peer)."""
    algo, timeout = argv[0], float(argv[1])
    if algo == "nccl":
        pg = g = dist.init(backend="nccl", timeout=timeout)
        dev = f"cuda:{pg.info.local_rank % rl.cuda_device_count()}"
    else:
        pg, g, dev = ipc_group(algo, timeout)
    t = to_dev(np.ones(300007, np.float32), "float32", dev)
    g.all_reduce(t)
    if g.rank == g.size - 1:
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    try:
        for _ in range(100):
            g.all_reduce(t)
    except (RuntimeError, TimeoutError) as e:
        print(f"RAISED {type(e).__name__} after {time.monotonic() - t0:.2f}s: {e}", flush=True)
        try:
            g.all_reduce(t)
        except (RuntimeError, TimeoutError) as e2:
            assert "earlier error" in str(e2) or "aborted" in str(e2), e2
            print("BROKEN-OK", flush=True)
        return
    raise AssertionError("no error although a peer died")


def scenario_ipc_fallback(argv) -> None:
    """IPC refused (RINGLOOM_IPC=0, or ranks reporting different hosts): CUDA tensors still
    reduce correctly through host memory, and the group says why."""
    expect = argv[0]
    pg = dist.init(backend="ring", timeout=60)
    dev = f"cuda:{pg.info.local_rank % rl.cuda_device_count()}"
    n, r = pg.size, pg.rank
    inputs = [make_input("int64", 100003, q, SEED + 50) for q in range(n)]
    t = to_dev(inputs[r], "int64", dev)
    w = pg.all_reduce(t, async_op=True)
    w.wait(timeout=60)
    assert "[ipc" not in w.op, w.op
    assert pg.cuda_transport.startswith("tcp (") and expect in pg.cuda_transport, pg.cuda_transport
    check_reduced(from_rl(t), inputs, "sum", "int64", "fallback all_reduce")
    print(f"TRANSPORT {pg.cuda_transport}", flush=True)


def scenario_disagree(argv) -> None:
    """Rank 1 passes another element count (or dtype) than rank 0 to all_reduce, or a
    broadcast names another root: every rank must raise naming both sides, and the group
    must stay usable."""
    what = argv[0]
    pg = dist.init(backend=argv[1], timeout=20)
    other = pg.rank == 1
    if what == "count":
        t, expect = rl.tensor(np.ones(12 if other else 8, np.float32)), "element count: 8 on one rank, 12 on another"
        call = lambda: pg.all_reduce(t)  # noqa: E731
    elif what == "dtype":
        t = rl.tensor(np.ones(8, np.int32 if other else np.float32))
        expect = "dtype: float32 on one rank, int32 on another"
        call = lambda: pg.all_reduce(t)  # noqa: E731
    else:
        t, expect = rl.tensor(np.ones(4, np.float32)), "root: 0 on one rank, 1 on another"
        call = lambda: pg.broadcast(t, src=1 if other else 0)  # noqa: E731
    try:
        call()
    except ValueError as e:
        assert expect in str(e) and "different collectives" in str(e), e
        print(f"DISAGREE rank {pg.rank}: {e}", flush=True)
    else:
        raise AssertionError("no error although the ranks disagree")
    u = rl.tensor(np.full(5, pg.rank + 1, np.float32))
    pg.all_reduce(u)
    assert np.asarray(u).tolist() == [pg.size * (pg.size + 1) / 2] * 5, np.asarray(u)
    print("STILL-USABLE", flush=True)


def scenario_join_late(argv) -> None:
    """Ranks above 0 start `delay` seconds late (strangers may connect meanwhile)."""
    timeout, delay = float(argv[0]), float(argv[1])
    if int(os.environ["RANK"]) > 0:
        time.sleep(delay)
    t0 = time.monotonic()
    pg = dist.init(timeout=timeout)
    # Read before the barrier: rank 0 serves the store and may exit as soon as it passes it.
    addr = pg.store.get("pg/world/addr/0").decode()
    pg.barrier()
    print(f"JOINED rank {pg.rank} in {time.monotonic() - t0:.2f}s mesh {addr}", flush=True)


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items() if name.startswith("scenario_")}

if __name__ == "__main__":
    name = sys.argv[1]
    SCENARIOS[name](sys.argv[2:])
    if name not in ("launcher",):
        print(f"PASS {name} rank {os.environ.get('RANK', '?')}", flush=True)
