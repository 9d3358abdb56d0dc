"""LLaMA training step, llama-1b preset (16 layers, 2048 wide, 32 query / 8 key-value heads
of 64, SwiGLU 8192, vocab 128256, RoPE theta 500000, tied embeddings) at B4 T2048 bf16:
ringloom vs PyTorch eager and torch.compile on the same model (torch_llama.py: RMSNorm,
SwiGLU, RoPE, GQA through SDPA, autocast bf16, fused AdamW, clipping), same shape and
initialisation, in one run on one GPU. Timing, peak memory and the breakdown of where the
time goes as in step_bench.py (the breakdown is on by default here; --no-breakdown).

    bench_llama_step.py [--untied] [--preset llama-tiny --batch 8 --seq 256] [--json out.json]
"""
from __future__ import annotations

import argparse

from step_bench import bench_torch, ringloom_rows, model_flops_per_token, progress, report
from torch_llama import torch_llama


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="llama-1b")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--untied", action="store_true", help="untied input and output embeddings")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--recompute", default="none,selective",
                    help="ringloom rows, one per activation-recompute mode (comma-separated; the first is the "
                         "reference of the speedup column)")
    ap.add_argument("--attention", choices=["ours", "cudnn", "auto"], default="auto",
                    help="ringloom's attention backend (default: auto, as ringloom train)")
    args = ap.parse_args()

    from ringloom.models import get_preset

    over = {"tie_embeddings": False} if args.untied else {}
    cfg = get_preset(args.preset, **over)
    if cfg.arch != "llama":
        raise SystemExit(f"bench_llama_step: preset {args.preset!r} is not a LLaMA ({cfg.arch})")
    B, T, bd = args.batch, args.seq, not args.no_breakdown
    rows, n_params = ringloom_rows(cfg, B, T, args.steps, args.warmup, bd, args.attention, args.recompute)
    rows.append(("torch eager", *bench_torch(torch_llama, cfg, B, T, args.steps, args.warmup, False, breakdown=bd)))
    progress(*rows[-1])
    if not args.no_compile:
        try:
            rows.append(("torch.compile", *bench_torch(torch_llama, cfg, B, T, args.steps, args.warmup, True,
                                                       breakdown=bd)))
            progress(*rows[-1])
        except Exception as e:  # report, do not hide
            print(f"torch.compile failed: {type(e).__name__}: {e}")
    flops = model_flops_per_token(n_params, cfg.n_layer, cfg.n_embd, T) * B * T
    tie = "tied" if cfg.tie_embeddings else "untied"
    report(f"LLaMA {args.preset} ({n_params/1e6:.1f}M params, {tie})", rows, B, T, flops, args.json)


if __name__ == "__main__":
    main()
