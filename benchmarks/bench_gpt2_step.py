"""GPT-2 124M training step, B16 T1024 bf16: ringloom vs PyTorch eager and torch.compile,
same model shape and initialisation, in one run on one GPU.

--graph adds ringloom's captured step (CUDA Graph, train/graph.py) and torch.compile with
mode="reduce-overhead" (CUDA Graphs for forward and backward); with --layers/--embd/--batch/
--seq it measures a small model, where kernel launch gaps dominate, e.g.
    bench_gpt2_step.py --graph --layers 4 --embd 256 --batch 8 --seq 128 --steps 50

Reports tokens/s, MFU (model FLOPs 6*N*tokens + attention 12*L*T*C*tokens/2 for causal,
over the bf16 dense peak) and peak memory. Each side: fp32 master weights, bf16 compute,
fused AdamW, global-norm clipping at 1.0, one loss read back to the host per step.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from torch_gpt2 import torch_gpt2

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}


def model_flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    return 6.0 * n_params + 6.0 * n_layer * n_embd * seq_len  # causal attention: half of 12*L*C*T


def bench_ringloom(cfg, B, T, steps, warmup, graph: bool = False):
    import ringloom as rl
    from ringloom.models import build_model
    from ringloom.optim import AdamW
    from ringloom.train.graph import CapturedStep

    model = build_model(cfg, device="cuda:0", dtype="bfloat16", seed=0)
    opt = AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, max_grad_norm=1.0)
    captured = CapturedStep(model, opt, (B, T)) if graph else None
    rng = np.random.default_rng(0)
    data = rng.integers(0, cfg.vocab_size, size=(steps + warmup, B, T + 1)).astype(np.int32)
    rl._C.cuda_reset_peak_memory(0)
    times = []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        if captured is not None:
            loss = captured.step(data[i, :, :-1], data[i, :, 1:])  # reads the loss: syncs
        else:
            model.zero_grad()
            loss = model.forward_backward(data[i, :, :-1], data[i, :, 1:])  # reads the loss: syncs
            opt.step()
        rl._C.cuda_synchronize(0)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        assert math.isfinite(loss), loss
    peak = rl._C.cuda_memory_stats(0)["peak_allocated_bytes"]
    n_params = sum(int(np.prod(p.value.shape)) for _, p in model.parameters())
    return float(np.median(times)), peak, n_params


def bench_torch(cfg, B, T, steps, warmup, compile_: bool, mode: str | None = None):
    import torch

    torch.manual_seed(0)
    model = torch_gpt2(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=True)
    fwd = torch.compile(model, mode=mode) if compile_ else model
    data = torch.randint(0, cfg.vocab_size, (steps + warmup, B, T + 1), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + warmup):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(data[i, :, :-1], data[i, :, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated()
    del model, opt
    torch.cuda.empty_cache()
    return float(np.median(times)), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--graph", action="store_true", help="add the CUDA Graph rows (ours captured, torch reduce-overhead)")
    ap.add_argument("--layers", type=int, default=None, help="override the preset's n_layer")
    ap.add_argument("--embd", type=int, default=None, help="override n_embd (heads of 64)")
    args = ap.parse_args()

    import torch
    from ringloom.models import get_preset

    over = {}
    if args.layers:
        over["n_layer"] = args.layers
    if args.embd:
        over.update(n_embd=args.embd, n_head=args.embd // 64)
    cfg = get_preset("gpt2-124m", **over)
    B, T = args.batch, args.seq
    name = torch.cuda.get_device_name()
    peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), 989.0)
    rows = []
    ours_s, ours_mem, n_params = bench_ringloom(cfg, B, T, args.steps, args.warmup)
    flops = model_flops_per_token(n_params, cfg.n_layer, cfg.n_embd, T) * B * T
    rows.append(("ringloom", ours_s, ours_mem))
    if args.graph:
        g_s, g_mem, _ = bench_ringloom(cfg, B, T, args.steps, args.warmup, graph=True)
        rows.append(("ringloom graph", g_s, g_mem))
    rows.append(("torch eager", *bench_torch(cfg, B, T, args.steps, args.warmup, False)))
    compiles = [] if args.no_compile else [("torch.compile", None)]
    if args.graph:
        compiles.append(("torch.compile ro", "reduce-overhead"))
    for label, mode in compiles:
        try:
            rows.append((label, *bench_torch(cfg, B, T, args.steps, args.warmup, True, mode)))
        except Exception as e:  # report, do not hide
            print(f"{label} failed: {type(e).__name__}: {e}")
    print(f"GPT-2 {cfg.n_layer}L {cfg.n_embd}C ({n_params/1e6:.1f}M params), B{B} T{T} bf16 on {name}")
    print(f"{'impl':16s} {'ms/step':>9s} {'tokens/s':>11s} {'MFU':>6s} {'peak GiB':>9s} {'ours speedup':>13s}")
    out = []
    for impl, s, mem in rows:
        tps = B * T / s
        mfu = flops / s / (peak_tflops * 1e12)
        print(f"{impl:16s} {s*1e3:9.1f} {tps:11,.0f} {mfu:6.1%} {mem/2**30:9.2f} {s/ours_s:12.2f}x")
        out.append(dict(impl=impl, ms_per_step=s * 1e3, tokens_per_s=tps, mfu=mfu, peak_bytes=mem,
                        ours_speedup=s / ours_s))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "batch": B, "seq": T, "rows": out}, f, indent=2)


if __name__ == "__main__":
    main()
