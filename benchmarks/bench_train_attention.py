"""`ringloom train` end to end with each attention backend: tokens/s of the CLI as a user runs
it (built-in corpus, byte tokenizer), one run per backend in the same call, and whether
`auto` is within reach of the fastest fixed backend.

    bench_train_attention.py [--preset gpt2-124m] [--device cuda] [--steps 60] [--json out.json]

Each run is `python -m ringloom train --preset P --device D --attention A --steps N
--log-every L ...` in a fresh process and directory; tokens/s is the median of the logged
intervals after the first (which holds the warm-up: kernel plans, allocator growth).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

BACKENDS = ("ours", "cudnn", "auto")


def run_train(args: argparse.Namespace, attention: str, out: str) -> float:
    cmd = [sys.executable, "-m", "ringloom", "train", "--preset", args.preset, "--device", args.device,
           "--attention", attention, "--steps", str(args.steps), "--batch-size", str(args.batch),
           "--seq-len", str(args.seq), "--log-every", str(args.log_every), "--eval-every", str(10 * args.steps),
           "--sample-every", "0", "--no-progress", "--out", out]
    print("  " + " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"attention={attention}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rates = [r["tokens_per_s"] for r in map(json.loads, f) if r.get("tokens_per_s")]
    if len(rates) < 2:
        raise RuntimeError(f"attention={attention}: {len(rates)} logged intervals; raise --steps")
    return float(np.median(rates[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2-124m")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise SystemExit(f"bench_train_attention: unknown backend(s) {bad}; choose from {list(BACKENDS)}")
    rates = {}
    with tempfile.TemporaryDirectory(prefix="rl-train-attn-") as tmp:
        for b in backends:
            rates[b] = run_train(args, b, os.path.join(tmp, b))
            print(f"  attention={b}: {rates[b]:,.0f} tokens/s", flush=True)
    best = max(rates.values())
    print(f"\nringloom train --preset {args.preset} --device {args.device}, B{args.batch} T{args.seq}, "
          f"{args.steps} steps")
    print(f"{'attention':<10} {'tokens/s':>12} {'vs fastest':>11}")
    for b, r in rates.items():
        print(f"{b:<10} {r:>12,.0f} {r / best:>10.3f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "device": args.device, "batch": args.batch, "seq": args.seq,
                       "steps": args.steps, "tokens_per_s": rates}, f, indent=1)


if __name__ == "__main__":
    main()
