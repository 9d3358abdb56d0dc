"""GPT-2 124M training step, B16 T1024 bf16: ringloom vs PyTorch eager and torch.compile,
same model shape and initialisation, in one run on one GPU (step_bench.py: how each side
is timed, and the --breakdown of where the time goes).

--graph adds ringloom's captured step (CUDA Graph, train/graph.py) and torch.compile with
mode="reduce-overhead" (CUDA Graphs for forward and backward); with --layers/--embd/--batch/
--seq it measures a small model, where kernel launch gaps dominate, e.g.
    bench_gpt2_step.py --graph --layers 4 --embd 256 --batch 8 --seq 128 --steps 50

Reports tokens/s, MFU (model FLOPs 6*N*tokens + attention 12*L*T*C*tokens/2 for causal,
over the bf16 dense peak) and peak memory.
"""
from __future__ import annotations

import argparse

from step_bench import bench_ringloom, bench_torch, ringloom_rows, model_flops_per_token, progress, report
from torch_gpt2 import torch_gpt2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--recompute", default="none,selective",
                    help="ringloom rows, one per activation-recompute mode (comma-separated; the first is the "
                         "reference of the speedup column)")
    ap.add_argument("--attention", choices=["ours", "cudnn", "auto"], default="auto",
                    help="ringloom's attention backend (default: auto, as ringloom train)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--breakdown", action="store_true", help="profile one step of each side: time per kernel category")
    ap.add_argument("--graph", action="store_true", help="add the CUDA Graph rows (ours captured, torch reduce-overhead)")
    ap.add_argument("--layers", type=int, default=None, help="override the preset's n_layer")
    ap.add_argument("--embd", type=int, default=None, help="override n_embd (heads of 64)")
    args = ap.parse_args()

    from ringloom.models import get_preset

    over = {}
    if args.layers:
        over["n_layer"] = args.layers
    if args.embd:
        over.update(n_embd=args.embd, n_head=args.embd // 64)
    cfg = get_preset("gpt2-124m", **over)
    B, T, bd = args.batch, args.seq, args.breakdown
    rows, n_params = ringloom_rows(cfg, B, T, args.steps, args.warmup, bd, args.attention, args.recompute)
    if args.graph:
        g_s, g_mem, _, _ = bench_ringloom(cfg, B, T, args.steps, args.warmup, graph=True, attention=args.attention)
        rows.append(("ringloom graph", g_s, g_mem, None))
        progress(*rows[-1])
    rows.append(("torch eager", *bench_torch(torch_gpt2, cfg, B, T, args.steps, args.warmup, False, breakdown=bd)))
    progress(*rows[-1])
    compiles = [] if args.no_compile else [("torch.compile", None)]
    if args.graph:
        compiles.append(("torch.compile ro", "reduce-overhead"))
    for label, mode in compiles:
        try:
            rows.append((label, *bench_torch(torch_gpt2, cfg, B, T, args.steps, args.warmup, True, mode,
                                             breakdown=bd and mode is None)))
            progress(*rows[-1])
        except Exception as e:  # report, do not hide
            print(f"{label} failed: {type(e).__name__}: {e}")
    flops = model_flops_per_token(n_params, cfg.n_layer, cfg.n_embd, T) * B * T
    report(f"GPT-2 {cfg.n_layer}L {cfg.n_embd}C ({n_params/1e6:.1f}M params)", rows, B, T, flops, args.json)


if __name__ == "__main__":
    main()
