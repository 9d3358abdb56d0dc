"""Parallel training throughput and pipeline bubbles, ours beside PyTorch in the same run.

    ringloom launch -n 4 benchmarks/bench_parallel.py dp --preset gpt2-124m --batch 16 --seq 1024 --device cuda
    ringloom launch -n 4 benchmarks/bench_parallel.py pp --layers 24 --width 2048 --micro-batches 8 --device cuda

dp: tokens/s of ParallelEngine (bucketed all-reduce) on the world's ranks; with torch
importable, PyTorch DDP on the same GPT-2 model and initialisation (benchmarks/torch_gpt2.py,
bf16 autocast, fused AdamW) measured in the same processes afterwards. Run with -n 1, 2, 4
for the scaling rows (efficiency = per-GPU rate / the -n 1 rate).
pp: for each schedule, the measured bubble fraction (trace.Timeline: 1 - compute / step
time, mean over ranks) beside the ideal (p-1)/(m+p-1), and tokens/s; with torch importable,
torch.distributed.pipelining with the same schedule (GPipe, 1F1B, interleaved 1F1B, and
its interleaved zero-bubble schedule for zb-h1), the same stages and micro-batches.

torch's process group rendezvous on MASTER_PORT + 1 (ours holds MASTER_PORT). Rows are
printed as ``ours | peer | ratio`` and written to --json. No GPU numbers are recorded yet
(benchmarks/RESULTS.md); on the CPU (gloo) it runs with tiny shapes.
"""
from __future__ import annotations

import argparse
import json
import time

import os

import numpy as np

import ringloom.distributed as dist
from torch_gpt2 import torch_gpt2, torch_modules
from ringloom.models import get_preset
from ringloom.parallel import SCHEDULES, DeviceMesh, ParallelEngine, ideal_bubble


def _batches(B: int, T: int, V: int, dp_index: int, dp: int, seed: int = 0):
    g = np.random.default_rng(seed)
    rows = B // dp
    while True:
        ids = g.integers(0, V, size=(B, T + 1), dtype=np.int32)
        yield ids[dp_index * rows:(dp_index + 1) * rows, :-1], ids[dp_index * rows:(dp_index + 1) * rows, 1:]


def _time_engine(engine: ParallelEngine, batches, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        engine.train_step(*next(batches))
    engine.mesh.world.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.train_step(*next(batches))
    engine.mesh.world.barrier()
    return time.perf_counter() - t0


def bench_dp(args, pg) -> list[dict]:
    cfg = get_preset(args.preset, n_layer=args.layers or get_preset(args.preset).n_layer)
    mesh = DeviceMesh(pg.size, 1, pg)
    B = args.batch * pg.size  # --batch is per GPU, as in the B16 T1024 per GPU
    engine = ParallelEngine(cfg, mesh, device=args.device, micro_batches=1, bucket_mb=args.bucket_mb, lr=1e-4)
    dt = _time_engine(engine, _batches(B, args.seq, cfg.vocab_size, mesh.dp_index, mesh.dp), args.steps, args.warmup)
    ours = B * args.seq * args.steps / dt
    peer = _torch_ddp(args, cfg, pg.rank, pg.size, B)
    return [{"bench": "dp", "world": pg.size, "preset": args.preset, "tokens_per_s": ours, "torch_ddp": peer,
             "ratio": ours / peer if peer else None}]


def _torch_init(args, rank: int, world: int):
    """torch.distributed beside our process group (rendezvous on MASTER_PORT + 1); returns
    (torch, device) or None without torch."""
    try:
        import torch
        import torch.distributed as tdist
    except ImportError:
        return None
    if args.device != "cpu":
        torch.cuda.set_device(rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if not tdist.is_initialized():
        addr, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500")) + 1
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method=f"tcp://{addr}:{port}",
                                 rank=rank, world_size=world)
    return torch, dev


def _timed(torch, dev, step, steps: int, warmup: int) -> float:
    import torch.distributed as tdist

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    tdist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    tdist.barrier()
    return time.perf_counter() - t0


def _torch_ddp(args, cfg, rank: int, world: int, B: int) -> float | None:
    init = _torch_init(args, rank, world)
    if init is None:
        return None
    torch, dev = init
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    ddp = DDP(torch_gpt2(cfg, dev), bucket_cap_mb=args.bucket_mb)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4, weight_decay=0.1, fused=dev.type == "cuda")
    rows = B // world

    def step():
        ids = torch.randint(0, cfg.vocab_size, (rows, args.seq + 1), device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = ddp(ids[:, :-1], ids[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return B * args.seq * args.steps / _timed(torch, dev, step, args.steps, args.warmup)


# Our schedule -> torch.distributed.pipelining's. torch has no single-stage ZB-H1; its
# interleaved zero-bubble schedule (ZB1P of Qi et al.) with one stage per rank is the peer.
_TORCH_SCHEDULES = {"gpipe": "ScheduleGPipe", "1f1b": "Schedule1F1B", "interleaved": "ScheduleInterleaved1F1B",
                    "zb-h1": "ScheduleInterleavedZeroBubble"}


def _torch_pipelining(args, cfg, rank: int, world: int, name: str, chunks: int) -> float | None:
    init = _torch_init(args, rank, world)
    if init is None:
        return None
    torch, dev = init
    import torch.nn.functional as F
    from torch.distributed import pipelining

    v = chunks if name == "interleaved" else 1
    S = world * v
    bounds = np.linspace(0, cfg.n_layer, S + 1).round().astype(int)
    Stage = torch_modules(cfg)[2]
    torch.manual_seed(0)
    mine = [c * world + rank for c in range(v)]  # loop placement: rank r holds stages r, r + p, ...
    mods = [Stage(int(bounds[s]), int(bounds[s + 1]), s == 0, s == S - 1, dev.type == "cuda").to(dev) for s in mine]
    stages = [pipelining.PipelineStage(m, s, S, dev) for m, s in zip(mods, mine)]
    cls = getattr(pipelining, _TORCH_SCHEDULES[name])

    def loss_fn(logits, targets):
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    multi = cls.__name__ in ("ScheduleInterleaved1F1B", "ScheduleInterleavedZeroBubble")
    sched = cls(stages if multi else stages[0], n_microbatches=args.micro_batches, loss_fn=loss_fn)
    opt = torch.optim.AdamW([p for m in mods for p in m.parameters()], lr=1e-4, weight_decay=0.1,
                            fused=dev.type == "cuda")
    B = args.batch * args.micro_batches

    def step():
        ids = torch.randint(0, cfg.vocab_size, (B, args.seq + 1), device=dev)
        inputs = (ids[:, :-1].contiguous(),) if 0 in mine else ()
        target = ids[:, 1:].contiguous() if S - 1 in mine else None
        sched.step(*inputs, target=target, losses=[] if target is not None else None)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return B * args.seq * args.steps / _timed(torch, dev, step, args.steps, args.warmup)


def bench_pp(args, pg) -> list[dict]:
    cfg = get_preset("gpt2-124m", n_layer=args.layers or 24, n_embd=args.width, n_head=max(1, args.width // 128))
    mesh = DeviceMesh(1, pg.size, pg)
    rows = []
    for name in args.schedules.split(","):
        engine = ParallelEngine(cfg, mesh, device=args.device, schedule=name, micro_batches=args.micro_batches,
                                chunks=args.chunks if name == "interleaved" else None,
                                lr=1e-4, trace=True)
        B = args.batch * args.micro_batches
        dt = _time_engine(engine, _batches(B, args.seq, cfg.vocab_size, 0, 1), args.steps, args.warmup)
        bubble = float(np.mean(_gather_floats(pg, engine.trace.bubble_fraction)))
        ours = B * args.seq * args.steps / dt
        del engine
        try:
            peer = _torch_pipelining(args, cfg, pg.rank, pg.size, name, args.chunks)
        except Exception as e:  # report, do not hide: the row keeps ours
            print(f"rank {pg.rank}: torch.distributed.pipelining {name} failed: {type(e).__name__}: {e}")
            peer = None
        rows.append({"bench": "pp", "schedule": name, "pp": pg.size, "micro_batches": args.micro_batches,
                     "bubble": bubble, "ideal_1f1b_bubble": ideal_bubble(pg.size, args.micro_batches),
                     "tokens_per_s": ours, "torch_pipelining": peer, "ratio": ours / peer if peer else None})
    return rows


def _gather_floats(pg, x: float) -> np.ndarray:
    out = np.zeros(pg.size, np.float32)
    out[pg.rank] = x
    pg.all_reduce(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["dp", "pp"])
    ap.add_argument("--preset", default="gpt2-124m")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=16, help="sequences per GPU (dp) or per micro-batch (pp)")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--micro-batches", type=int, default=8)
    ap.add_argument("--chunks", type=int, default=2, help="virtual stages per rank (interleaved)")
    ap.add_argument("--schedules", default=",".join(SCHEDULES))
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    pg = dist.init(backend="nccl" if args.device != "cpu" else "auto")
    rows = bench_dp(args, pg) if args.mode == "dp" else bench_pp(args, pg)
    if pg.rank == 0:
        for r in rows:
            print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
