"""Parallel training throughput and pipeline bubbles, ours beside PyTorch in the same run.

    ringloom launch -n 4 benchmarks/bench_parallel.py dp --preset gpt2-124m --batch 16 --seq 1024 --device cuda
    ringloom launch -n 4 benchmarks/bench_parallel.py pp --layers 24 --width 2048 --micro-batches 8 --device cuda

dp: tokens/s of ParallelEngine (bucketed all-reduce) on the world's ranks; with torch
importable, PyTorch DDP on the same GPT-2 shape (torch.nn.TransformerEncoderLayer blocks,
the closest stock equivalent) measured in the same processes afterwards. Run with -n 1, 2, 4
for the scaling rows (efficiency = per-GPU rate / the -n 1 rate).
pp: for each schedule, the measured bubble fraction (trace.Timeline: 1 - compute / step
time, mean over ranks) beside the ideal (p-1)/(m+p-1), and tokens/s.

Rows are printed as ``ours | peer | ratio`` and written to --json. UNMEASURED so far: the
multi-GPU machines were not available when this was written; it has only been run on the
CPU with tiny shapes to check that it works.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import ringloom.distributed as dist
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


def _torch_ddp(args, cfg, rank: int, world: int, B: int) -> float | None:
    try:
        import torch
        import torch.distributed as tdist
        from torch.nn.parallel import DistributedDataParallel as DDP
    except ImportError:
        return None
    dev = torch.device(f"cuda:{rank % max(1, torch.cuda.device_count())}" if args.device != "cpu" else "cpu")
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    layer = torch.nn.TransformerEncoderLayer(cfg.n_embd, cfg.n_head, 4 * cfg.n_embd, 0.0, activation="gelu",
                                             batch_first=True, norm_first=True)
    model = torch.nn.Sequential(torch.nn.Embedding(cfg.vocab_size, cfg.n_embd),
                                torch.nn.TransformerEncoder(layer, cfg.n_layer, enable_nested_tensor=False),
                                torch.nn.LayerNorm(cfg.n_embd), torch.nn.Linear(cfg.n_embd, cfg.vocab_size))
    model = model.to(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
    ddp = DDP(model, bucket_cap_mb=args.bucket_mb)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4, fused=dev.type == "cuda")
    rows = B // world

    def step():
        ids = torch.randint(0, cfg.vocab_size, (rows, args.seq + 1), device=dev)
        out = ddp(ids[:, :-1])  # (no causal mask through nn.Sequential: same FLOPs, a throughput peer only)
        loss = torch.nn.functional.cross_entropy(out.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    tdist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    tdist.barrier()
    return B * args.seq * args.steps / (time.perf_counter() - t0)


def bench_pp(args, pg) -> list[dict]:
    cfg = get_preset("gpt2-124m", n_layer=args.layers or 24, n_embd=args.width, n_head=max(1, args.width // 128))
    mesh = DeviceMesh(1, pg.size, pg)
    rows = []
    for name in args.schedules.split(","):
        engine = ParallelEngine(cfg, mesh, device=args.device, schedule=name, micro_batches=args.micro_batches,
                                lr=1e-4, trace=True)
        B = args.batch * args.micro_batches
        dt = _time_engine(engine, _batches(B, args.seq, cfg.vocab_size, 0, 1), args.steps, args.warmup)
        bubble = float(np.mean(_gather_floats(pg, engine.trace.bubble_fraction)))
        rows.append({"bench": "pp", "schedule": name, "pp": pg.size, "micro_batches": args.micro_batches,
                     "bubble": bubble, "ideal_1f1b_bubble": ideal_bubble(pg.size, args.micro_batches),
                     "tokens_per_s": B * args.seq * args.steps / dt,
                     "torch_pipelining": None})  # TODO: torch.distributed.pipelining beside it (not written yet)
        del engine
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
