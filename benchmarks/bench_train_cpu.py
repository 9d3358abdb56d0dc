"""CPU training throughput of a preset (default: tiny GPT-2), ours vs PyTorch.

    python benchmarks/bench_train_cpu.py [--preset tiny] [--batch-size 16] [--seq-len 128]
        [--steps 20] [--warmup 3] [--threads 1,2] [--json out.json]

A timed step is what the trainer does per step: zero the gradients, forward + backward of
one batch (random tokens; the cost does not depend on their values), one AdamW step with
global-norm clipping. Reported per thread count: the median over --steps steps after
--warmup untimed ones (ms/step, tokens/s), and the CPU time per step (process time: on a
machine shared with other jobs it shows the work done, where wall time also shows the
waiting). The peer, when ``import torch`` works, is the same model in PyTorch (GPT-2: pre-norm
blocks, LayerNorm, tanh GELU, learned positions, tied embeddings, biases; fused causal
attention; torch.optim.AdamW with the same clipping) on as many threads
(torch.set_num_threads). ratio = peer ms / ours ms (> 1: ours is faster).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

# Uses the ringloom that is importable (installed, or the dev tree through PYTHONPATH=python).
import ringloom as rl  # noqa: E402
from ringloom.models import build_model, get_preset  # noqa: E402
from ringloom.optim import AdamW  # noqa: E402
from torch_gpt2 import torch_gpt2  # noqa: E402

LR, WEIGHT_DECAY, CLIP = 1e-3, 0.1, 1.0


def _time_steps(step, steps: int, warmup: int) -> dict:
    for _ in range(warmup):
        step()
    wall, cpu = [], []
    for _ in range(steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"ms_per_step": 1e3 * float(np.median(wall)), "min_ms_per_step": 1e3 * float(np.min(wall)),
            "cpu_ms_per_step": 1e3 * float(np.median(cpu))}


def bench_ours(cfg, B: int, T: int, threads: int, steps: int, warmup: int, seed: int) -> dict:
    rl.set_num_threads(threads)
    model = build_model(cfg, device="cpu", seed=seed)
    opt = AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=CLIP)
    rng = np.random.default_rng(seed)
    batches = [rng.integers(0, cfg.vocab_size, (2, B, T), dtype=np.int32) for _ in range(4)]
    i = [0]

    def step():
        x, y = batches[i[0] % len(batches)]
        i[0] += 1
        model.zero_grad()
        model.forward_backward(x, y)
        opt.step()

    return _time_steps(step, steps, warmup)


def bench_torch(torch, cfg, B: int, T: int, threads: int, steps: int, warmup: int, seed: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = torch_gpt2(cfg, "cpu")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, cfg.vocab_size, (2, B, T), generator=g) for _ in range(4)]
    i = [0]

    def step():
        x, y = batches[i[0] % len(batches)]
        i[0] += 1
        opt.zero_grad(set_to_none=False)
        model(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()

    return _time_steps(step, steps, warmup)


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except (OSError, subprocess.SubprocessError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores}


def commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fmt(load: float | None) -> str:
    return "n/a" if load is None else f"{load:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--threads", default=None,
                    help="comma-separated thread counts (default: 1 and all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    args = ap.parse_args(argv)

    cfg = get_preset(args.preset)
    if cfg.arch != "gpt2":
        ap.error("the PyTorch peer is written for GPT-2 presets")
    B, T = args.batch_size, args.seq_len
    info = machine()
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, info["cores"]})
    try:
        import torch
        peer = f"torch {torch.__version__}"
    except ImportError:
        torch, peer = None, None

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for n in threads:
        row = {"threads": n, "ours": bench_ours(cfg, B, T, n, args.steps, args.warmup, args.seed)}
        if torch is not None:
            row["peer"] = bench_torch(torch, cfg, B, T, n, args.steps, args.warmup, args.seed)
            row["ratio"] = row["peer"]["ms_per_step"] / row["ours"]["ms_per_step"]
        for side in ("ours", "peer"):
            if side in row:
                row[side]["tokens_per_s"] = B * T / (row[side]["ms_per_step"] / 1e3)
        rows.append(row)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    print(f"# CPU training, preset {args.preset}, batch {B} x {T} tokens, median of {args.steps} steps "
          f"after {args.warmup}")
    print(f"# {info['cpu']}, {info['cores']} cores, commit {commit()}, load average "
          f"{_fmt(load_before)} -> {_fmt(load_after)}")
    print(f"# peer: {peer or 'unavailable (import torch failed)'}")
    head = f"{'threads':>7} | {'ours ms/step':>12} | {'ours tok/s':>10} | {'ours cpu ms':>11}"
    if torch is not None:
        head += f" | {'peer ms/step':>12} | {'peer tok/s':>10} | {'ratio':>5}"
    print(head)
    for r in rows:
        o = r["ours"]
        line = f"{r['threads']:>7} | {o['ms_per_step']:>12.1f} | {o['tokens_per_s']:>10.0f} | {o['cpu_ms_per_step']:>11.1f}"
        if "peer" in r:
            p = r["peer"]
            line += f" | {p['ms_per_step']:>12.1f} | {p['tokens_per_s']:>10.0f} | {r['ratio']:>5.2f}"
        print(line)

    if args.json:
        result = {"benchmark": "train_cpu", "preset": args.preset, "batch_size": B, "seq_len": T,
                  "steps": args.steps, "warmup": args.warmup, "machine": info, "commit": commit(),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "load_average": [load_before, load_after], "peer": peer, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
