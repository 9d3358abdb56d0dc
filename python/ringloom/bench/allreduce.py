"""All-reduce benchmark in the manner of nccl-tests' all_reduce_perf.

    python -m ringloom.bench.allreduce -n 4 -b 8 -e 64M -f 2 --backends ring,tree,auto
    python -m ringloom.bench.allreduce -n 4 -b 8 -e 1G     # GPU: nccl beside ipc-ring/tree/oneshot

Started without launcher variables it relaunches itself with ``-n`` ranks through
ringloom.launch. On GPUs the rows "ipc-ring", "ipc-tree" and "ipc-oneshot" are our kernels
over CUDA IPC (ring and tree with the one-shot turned off, one-shot up to --oneshot-max),
"ring"/"tree"/"auto" the groups as users get them (one-shot below 256 KiB), beside "nccl". Each row: size (bytes), count, type, backend, time (us, the slowest
rank's mean), algbw = size / time, busbw = algbw * 2(n-1)/n (the per-link rate a
bandwidth-optimal algorithm needs: comparable across rank counts) and #wrong (elements
differing from the exact sum in a separate checked run). With PyTorch importable, gloo is
measured in the same run on the same sizes ("peer"); the closing table gives ours | peer |
ratio of busbw.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(s: str) -> int:
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    unit = s[-1] if s and s[-1] in "KMG" else ""
    return int(float(s[: len(s) - len(unit)]) * _UNITS[unit])


def sizes(lo: int, hi: int, factor: int) -> list[int]:
    out, s = [], lo
    while s <= hi:
        out.append(s)
        s *= factor
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ringloom.bench.allreduce", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--nproc", type=int, default=4, help="ranks to launch when not started by a launcher")
    p.add_argument("-b", "--minbytes", default="8", help="smallest message (default 8)")
    p.add_argument("-e", "--maxbytes", default=None, help="largest message (default 1G on GPU, 64M with --cpu)")
    p.add_argument("-f", "--stepfactor", type=int, default=2, help="size multiplier between rows (default 2)")
    p.add_argument("--cpu", action="store_true", help="CPU tensors (the default where no GPU or NCCL is usable)")
    p.add_argument("--backends", default=None,
                   help="comma-separated from ring, tree, auto, nccl, ipc-ring, ipc-tree, ipc-oneshot (default: "
                        "nccl,ipc-ring,ipc-tree,ipc-oneshot on GPU; ring,tree,auto on CPU)")
    p.add_argument("--oneshot-max", default="4M", help="largest size for the ipc-oneshot rows (default 4M)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations at most (fewer for slow sizes)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--time-per-size", type=float, default=0.3, help="seconds aimed at per size and backend")
    p.add_argument("--no-peer", action="store_true", help="skip torch.distributed gloo")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--json", default=None, help="write the rows to this JSON file (rank 0)")
    return p


def _relaunch(argv: list[str], nproc: int) -> int:
    from ringloom.launch import main as launch_main
    # Only rank 0 prints, so no "[rank N] " prefixes.
    return launch_main(["-n", str(nproc), "--no-prefix", "-m", "ringloom.bench.allreduce", *argv])


class _Buffers:
    """Message buffers on the benchmark's device: NumPy arrays on the CPU, ringloom tensors
    on the GPU (our TCP backends stage those through host memory; NCCL reads them in place)."""

    def __init__(self, device: str):
        self.device = device

    def make(self, values: np.ndarray):
        if self.device == "cpu":
            return values.copy()
        import ringloom as rl
        return rl.tensor(values, device=self.device)

    def read(self, buf) -> np.ndarray:
        return np.asarray(buf)


class _Ours:
    """ringloom's all_reduce on one backend; "ipc-<algo>" pins the CUDA IPC algorithm."""

    def __init__(self, pg, backend: str, oneshot_max: int):
        self.name = backend
        self.max_bytes = None
        algo = backend.removeprefix("ipc-") if backend.startswith("ipc-") else None
        if algo not in (None, "ring", "tree", "oneshot"):
            raise ValueError(f"unknown backend {backend!r}")
        self.g = pg.new_group(range(pg.size), backend={"oneshot": "ring"}.get(algo, algo) or backend)
        if algo in ("ring", "tree"):
            self.g.ipc_oneshot_max_bytes = 0
        elif algo == "oneshot":
            self.g.ipc_oneshot_max_bytes = oneshot_max
            self.max_bytes = oneshot_max

    def run(self, buf) -> None:
        self.g.all_reduce(buf)

    def covers(self, nbytes: int) -> bool:
        return self.max_bytes is None or nbytes <= self.max_bytes


class _Gloo:
    """torch.distributed with gloo on the same host tensors (the peer we measure against)."""

    def __init__(self, pg):
        import torch
        import torch.distributed as tdist
        self.name, self.torch, self.tdist = "gloo", torch, tdist
        store = pg.store
        if pg.rank == 0:
            from ringloom.launch import free_port
            store.set("bench/gloo_port", str(free_port(pg.info.master_addr)).encode())
        port = int(store.get("bench/gloo_port"))
        tdist.init_process_group("gloo", init_method=f"tcp://{pg.info.master_addr}:{port}", rank=pg.rank,
                                 world_size=pg.size)

    def run(self, buf) -> None:
        self.tdist.all_reduce(self.torch.from_numpy(np.asarray(buf)) if isinstance(buf, np.ndarray) else
                              self.torch.from_dlpack(buf))


def _measure(pg, impl, count: int, args, bufs: _Buffers) -> tuple[float, int]:
    """Mean seconds per all-reduce (slowest rank), and #wrong elements over all ranks."""
    n, r = pg.size, pg.rank
    buf = bufs.make(np.ones(count, np.float32))
    for _ in range(args.warmup):
        impl.run(buf)
    # One timed op sets the iteration count; every rank must agree on it.
    pg.barrier()
    t0 = time.perf_counter()
    impl.run(buf)
    one = np.array([time.perf_counter() - t0], np.float32)
    pg.all_reduce(one, op="max")
    iters = int(max(3, min(args.iters, args.time_per_size / max(float(one[0]), 1e-9))))
    buf = bufs.make(np.ones(count, np.float32))  # values grow n-fold per op: stay far from overflow
    pg.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        impl.run(buf)
    dt = np.array([(time.perf_counter() - t0) / iters], np.float32)
    pg.all_reduce(dt, op="max")
    # Checked run: small integers in fp32 sum exactly, whatever the order.
    pattern = (np.arange(count) % 13 + 1).astype(np.float32)
    buf = bufs.make(pattern * (r + 1))
    impl.run(buf)
    wrong = np.array([np.count_nonzero(bufs.read(buf) != pattern * (n * (n + 1) // 2))], np.int64)
    pg.all_reduce(wrong)
    return float(dt[0]), int(wrong[0])


def run(args) -> int:
    import ringloom
    import ringloom.distributed as dist
    gpu = not args.cpu and ringloom.cuda_available()
    nccl = gpu and ringloom._C.comm.has_nccl
    pg = dist.init(backend="nccl" if nccl else "auto", timeout=args.timeout)
    n, r = pg.size, pg.rank
    device = f"cuda:{pg.info.local_rank % ringloom.cuda_device_count()}" if gpu else "cpu"
    bufs = _Buffers(device)
    hi = parse_size(args.maxbytes) if args.maxbytes else ((1 << 30) if gpu else (64 << 20))
    lo = max(4, parse_size(args.minbytes))
    backends = args.backends or ((("nccl," if nccl else "") + "ipc-ring,ipc-tree,ipc-oneshot") if gpu
                                 else "ring,tree,auto")
    impls = [_Ours(pg, b.strip(), parse_size(args.oneshot_max)) for b in backends.split(",") if b.strip()]
    if gpu:
        # The first CUDA op of each group decides its transport; say so where it is not IPC.
        for impl in impls:
            impl.run(bufs.make(np.ones(1, np.float32)))
            transport = impl.g.cuda_transport
            if r == 0 and impl.name != "nccl" and transport != "ipc":
                print(f"# {impl.name}: CUDA tensors go {transport}")
    peer = None
    if not args.no_peer and not gpu:
        try:
            peer = _Gloo(pg)
        except ImportError:
            if r == 0:
                print("# torch not importable: no gloo comparison")
    rows = []
    if r == 0:
        print(f"# ringloom all_reduce: {n} ranks, float32, {device if gpu else 'cpu (TCP)'}, sizes {lo} B .. {hi} B")
        print(f"# {'size':>12} {'count':>12} {'type':>6} {'backend':>8} {'time(us)':>11} {'algbw(GB/s)':>12} "
              f"{'busbw(GB/s)':>12} {'#wrong':>7}")
    for size in sizes(lo, hi, args.stepfactor):
        count = size // 4
        for impl in impls + ([peer] if peer else []):
            if not getattr(impl, "covers", lambda _: True)(count * 4):
                continue
            dt, wrong = _measure(pg, impl, count, args, bufs)
            algbw = count * 4 / dt / 1e9
            busbw = algbw * 2 * (n - 1) / n
            rows.append(dict(size=count * 4, count=count, type="float", backend=impl.name, time_us=dt * 1e6,
                             algbw=algbw, busbw=busbw, wrong=wrong))
            if r == 0:
                print(f"  {count * 4:>12} {count:>12} {'float':>6} {impl.name:>8} {dt * 1e6:>11.1f} {algbw:>12.3f} "
                      f"{busbw:>12.3f} {wrong:>7}", flush=True)
    if r == 0:
        peer_name = "gloo" if peer else ("nccl" if any(i.name == "nccl" for i in impls) else None)
        ours_names = [i.name for i in impls if i.name != peer_name]
        if peer_name and ours_names:
            print(f"#\n# ours (best backend) | peer ({peer_name}) | ratio, by busbw (time for the latency-bound)")
            print(f"# {'size':>12} {'ours':>11} {'us':>9} {'GB/s':>9} {peer_name + ' us':>9} {peer_name + ' GB/s':>10} "
                  f"{'ratio':>7}")
            for size in sorted({row["size"] for row in rows}):
                mine = [x for x in rows if x["size"] == size and x["backend"] in ours_names]
                ref = next((x for x in rows if x["size"] == size and x["backend"] == peer_name), None)
                if not mine or ref is None:
                    continue
                ours = max(mine, key=lambda x: x["busbw"])
                print(f"  {size:>12} {ours['backend']:>11} {ours['time_us']:>9.1f} {ours['busbw']:>9.3f} "
                      f"{ref['time_us']:>9.1f} {ref['busbw']:>10.3f} {ours['busbw'] / max(ref['busbw'], 1e-12):>7.2f}")
        bad = sum(x["wrong"] for x in rows)
        print(f"# out of bounds values: {bad} {'OK' if bad == 0 else 'FAILED'}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(ranks=n, device=device, rows=rows), f, indent=1)
    dist.destroy()
    return 0 if all(x["wrong"] == 0 for x in rows) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if "RANK" not in os.environ and "SLURM_PROCID" not in os.environ and "OMPI_COMM_WORLD_RANK" not in os.environ:
        return _relaunch(argv, args.nproc)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
