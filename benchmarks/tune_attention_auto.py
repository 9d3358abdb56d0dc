"""Measures the table behind `--attention auto` (csrc/ops/attention_auto_table.h).

For each bf16 shape in SHAPES (head dim, causal or not, sequence length; B x T = 16384
tokens and H x D = 2048, MHA), times the forward alone and the backward alone (on that
backend's own forward outputs) of every candidate backend this build has
(ops.attention_backend_candidates(): "ours", "cudnn", and any backend added there later),
and records the fastest per direction. auto then runs, for a problem, the winners of the
row with the same head dim and causality whose sequence length is nearest in log2.

  python benchmarks/tune_attention_auto.py --json out.json [--write]
      on the GPU: prints the table; --write rewrites the header in this tree
  python benchmarks/tune_attention_auto.py --from-json out.json --write
      rewrites the header from a JSON measured elsewhere (the device copy of the tree)

Rebuild after rewriting the header.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

HEADER = os.path.join(os.path.dirname(__file__), "..", "csrc", "ops", "attention_auto_table.h")
SHAPES = [(d, causal, t) for d in (64, 128) for causal in (True, False) for t in (512, 1024, 2048, 4096)]
TOKENS, WIDTH = 16384, 2048


def measure(reps: int) -> dict:
    import torch

    import ringloom as rl
    from common import device_info, time_ms

    ops = rl._C.ops
    candidates = list(ops.attention_backend_candidates())
    before = ops.get_attention_backend()
    rows = []
    torch.manual_seed(0)
    try:
        for D, causal, T in SHAPES:
            B, H = max(1, TOKENS // T), WIDTH // D
            qkv = torch.randn(B, T, 3 * H, D, device="cuda", dtype=torch.bfloat16)
            dout = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
            torch.cuda.synchronize()
            x, go = rl.from_dlpack(qkv), rl.from_dlpack(dout)
            row = {"head_dim": D, "causal": causal, "seq_len": T, "batch": B, "heads": H, "fwd_ms": {}, "bwd_ms": {}}
            for name in candidates:
                ops.set_attention_backend(name)
                try:
                    out, lse = ops.attention_forward(x, H, H, causal)
                    row["fwd_ms"][name] = time_ms(lambda i: ops.attention_forward(x, H, H, causal), reps=reps)
                    row["bwd_ms"][name] = time_ms(lambda i: ops.attention_backward(go, x, out, lse, H, H, causal),
                                                  reps=reps)
                except Exception as e:  # a backend that cannot run this shape is no candidate for it
                    print(f"  {name} failed at D{D} T{T}: {type(e).__name__}: {str(e)[:120]}")
            for d in ("fwd", "bwd"):
                times = row[f"{d}_ms"]
                row[f"{d}_best"] = min(times, key=times.get) if times else "ours"
            rows.append(row)
            cells = "  ".join(f"{n} {row['fwd_ms'].get(n, float('nan')):.3f}/{row['bwd_ms'].get(n, float('nan')):.3f}"
                              for n in candidates)
            print(f"D{D:<4} {'causal' if causal else 'full  '} T{T:<5} B{B:<3} H{H:<3} fwd/bwd ms: {cells}  "
                  f"-> fwd {row['fwd_best']}, bwd {row['bwd_best']}", flush=True)
    finally:
        ops.set_attention_backend(before)
    # What "ours" ran at D64/D128: the Hopper kernels on compute capability 9.0 when built, else flash.
    hopper = ops.hopper_attention_built() and torch.cuda.get_device_capability() == (9, 0)
    return {**device_info(), "candidates": candidates, "ours_kernels": "hopper" if hopper else "flash",
            "tokens": TOKENS, "width": WIDTH, "rows": rows}


def header_text(res: dict) -> str:
    lines = [
        "// The measured table behind the auto attention backend (ops/attention_backend.h).",
        "// Written by benchmarks/tune_attention_auto.py; re-measure there rather than edit.",
        f"// Measured on {res['device']}, torch {res['torch']}, commit {res['commit']}, {res['date']};",
        f"// candidates {', '.join(res['candidates'])}; bf16, MHA, B x T = {res['tokens']} tokens, "
        f"H x D = {res['width']}.",
        f"// ours at D64/D128 ran the {res.get('ours_kernels', 'flash')} kernels.",
        "// Per row: the fastest backend for the forward and for the backward, with the times (ms)",
        "// of every candidate as fwd/bwd.",
        "#pragma once",
        "",
        "namespace ringloom::attention_auto {",
        "",
        "struct Row {",
        "  int head_dim;",
        "  bool causal;",
        "  int seq_len;",
        "  const char* forward;   // a backend name (parse_attention_backend)",
        "  const char* backward;",
        "};",
        "",
        "inline constexpr Row kTable[] = {",
    ]
    for r in res["rows"]:
        ms = ", ".join(f"{n} {r['fwd_ms'][n]:.3f}/{r['bwd_ms'][n]:.3f}" for n in r["fwd_ms"] if n in r["bwd_ms"])
        lines.append(f"    {{{r['head_dim']}, {'true' if r['causal'] else 'false'}, {r['seq_len']}, "
                     f"\"{r['fwd_best']}\", \"{r['bwd_best']}\"}},  // {ms}")
    lines += ["};", "", "}  // namespace ringloom::attention_auto", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="write the measurements here")
    ap.add_argument("--from-json", default=None, help="take the measurements from this file instead of the GPU")
    ap.add_argument("--write", action="store_true", help="rewrite csrc/ops/attention_auto_table.h")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            res = json.load(f)
    else:
        res = measure(args.reps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    text = header_text(res)
    if args.write:
        with open(HEADER, "w") as f:
            f.write(text)
        print(f"wrote {os.path.normpath(HEADER)}")
    else:
        print(text)


if __name__ == "__main__":
    main()
