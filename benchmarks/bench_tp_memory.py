"""Tensor parallelism's per-rank memory and traffic: llama-1b at tp = 1, 2, 4 on one GPU,
the ranks sharing it under CUDA MPS (on a GPU the script starts the MPS daemon with
`nvidia-cuda-mps-control -d` when the tool is there and stops it at the end; without it
the ranks time-slice the GPU, which changes no memory figure).

    python benchmarks/bench_tp_memory.py [--preset llama-1b] [--tp 1 2 4] [--batch 1] [--seq 2048]
                                         [--device cuda] [--json out.json]

Run without launcher variables, it starts itself with ringloom.launch once per tp value
(`--backend ring`: ranks of one GPU stage their collectives through host memory) and
prints one row per tp with the mean over ranks. Each rank builds its share of the model
(build_tp_model: bf16 weights, fp32 gradients) and AdamW (fp32 master, m, v), then runs
two steps of one micro-batch [batch, seq] and reports, from the caching allocator:

  weights+grads   allocated after building the model
  optimizer       allocated by AdamW's state
  act saved       allocated after forward (the activations kept for backward), before
  act peak        the peak of forward + backward over what was allocated before it
  sent MB/step    bytes this rank handed to its tp group in a step (counted through the
                  group), and the formula of parallel/tp_traffic.py

On the CPU (--device cpu) the same runs with a small model check the logic (no memory
numbers: the allocator statistics are the GPU's).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import ringloom as rl

GIB = 2**30


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="llama-1b")
    p.add_argument("--tp", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", default=None)
    p.add_argument("--rank-out", default=None, help=argparse.SUPPRESS)  # set by the driver for its ranks
    return p.parse_args()


def _allocated(device: str) -> tuple[int, int]:
    if device == "cpu":
        return 0, 0
    rl._C.cuda_synchronize(0)
    s = rl._C.cuda_memory_stats(0)
    return int(s["allocated_bytes"]), int(s["peak_allocated_bytes"])


def rank_main(args: argparse.Namespace) -> None:
    import ringloom.distributed as dist
    from ringloom.models import build_model, get_preset
    from ringloom.optim import AdamW
    from ringloom.parallel.tensor_parallel import build_tp_model
    from ringloom.parallel.tp_traffic import CountingGroup, tp_bytes_per_micro_batch

    pg = dist.init(backend="ring", timeout=600)
    tp = pg.size
    config = get_preset(args.preset)
    device = "cuda:0" if args.device == "cuda" else args.device
    base, _ = _allocated(device)
    t0 = time.perf_counter()
    group = CountingGroup(pg)
    if tp == 1:
        model = build_model(config, device=device)
    else:
        model = build_tp_model(config, group, device=device)
    weights, _ = _allocated(device)
    opt = AdamW(model.parameters(), lr=1e-4)
    with_opt, _ = _allocated(device)
    g = np.random.default_rng(0)
    rows = g.integers(0, config.vocab_size, size=(args.batch, args.seq + 1), dtype=np.int32)
    ids, tgt = rows[:, :-1].copy(), rows[:, 1:].copy()
    build_s = time.perf_counter() - t0
    out = {}
    for step in range(2):   # the second step is the one reported (the allocator has warmed up)
        model.zero_grad()
        before, _ = _allocated(device)
        if device != "cpu":
            rl._C.cuda_reset_peak_memory(0)
        sent0 = group.sent
        x = model.embedding.forward(0, model._tokens(ids, "ids"))
        for b in model.blocks:
            x = b.forward(0, x)
        losses = model.head.forward_loss(0, x, model._tokens(tgt, "targets"), 1.0 / tgt.size, -100)
        saved, _ = _allocated(device)
        dx = model.head.backward(0, None)
        for b in reversed(model.blocks):
            dx = b.backward(0, dx)
        model.embedding.backward(0, dx)
        del x, dx
        _, peak = _allocated(device)
        opt.step()
        out = dict(tp=tp, rank=pg.rank, loss=float(np.asarray(losses.cpu().numpy(), np.float64).mean()),
                   weights_grads_gib=(weights - base) / GIB, optimizer_gib=(with_opt - weights) / GIB,
                   act_saved_gib=(saved - before) / GIB, act_peak_gib=(peak - before) / GIB,
                   sent_mb=(group.sent - sent0) / 1e6, build_s=build_s)
        del losses
    act_bytes = 2 if device != "cpu" else 4
    formula = tp_bytes_per_micro_batch(config, tp, args.batch * args.seq, act_bytes, config.n_layer) if tp > 1 else 0
    out["formula_mb"] = formula / 1e6
    with open(os.path.join(args.rank_out, f"tp{tp}.rank{pg.rank}.json"), "w") as f:
        json.dump(out, f)
    pg.barrier()


def _start_mps() -> bool:
    """Starts the CUDA MPS daemon; True when this call started it (and should stop it)."""
    import shutil

    if shutil.which("nvidia-cuda-mps-control") is None:
        print("bench_tp_memory: no nvidia-cuda-mps-control: the ranks time-slice the GPU")
        return False
    return subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True).returncode == 0


def driver(args: argparse.Namespace) -> None:
    here = os.path.abspath(__file__)
    rows: list[dict] = []
    mps = args.device != "cpu" and _start_mps()
    try:
        rows = _launch_all(args, here)
    finally:
        if mps:
            subprocess.run(["nvidia-cuda-mps-control"], input=b"quit\n", capture_output=True)
    _report(args, rows, mps)


def _launch_all(args: argparse.Namespace, here: str) -> list[dict]:
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tp in args.tp:
            cmd = [sys.executable, "-m", "ringloom.launch", "-n", str(tp), here, "--preset", args.preset,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--device", args.device, "--rank-out", tmp]
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if res.returncode != 0:
                sys.exit(f"bench_tp_memory: tp={tp} failed:\n{(res.stdout + res.stderr)[-4000:]}")
            ranks = [json.load(open(os.path.join(tmp, f"tp{tp}.rank{r}.json"))) for r in range(tp)]
            row = {k: float(np.mean([r[k] for r in ranks])) for k in ranks[0] if k not in ("tp", "rank")}
            row.update(tp=tp, wall_s=time.perf_counter() - t0)
            rows.append(row)
    return rows


def _report(args: argparse.Namespace, rows: list[dict], mps: bool) -> None:
    sharing = " (ranks under MPS)" if mps else ""
    print(f"{args.preset}, batch {args.batch} x {args.seq} tokens, {args.device}{sharing}; per rank (mean over ranks):")
    print(f"{'tp':>3} | {'weights+grads GiB':>17} | {'optimizer GiB':>13} | {'act saved GiB':>13} | "
          f"{'act peak GiB':>12} | {'sent MB/step':>12} | {'formula MB':>10} | {'loss':>7}")
    for r in rows:
        print(f"{r['tp']:>3} | {r['weights_grads_gib']:>17.3f} | {r['optimizer_gib']:>13.3f} | "
              f"{r['act_saved_gib']:>13.3f} | {r['act_peak_gib']:>12.3f} | {r['sent_mb']:>12.1f} | "
              f"{r['formula_mb']:>10.1f} | {r['loss']:>7.4f}")
    for r in rows:
        assert r["tp"] == 1 or abs(r["sent_mb"] - r["formula_mb"]) < 1e-6, "counted bytes differ from the formula"
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "batch": args.batch, "seq": args.seq, "device": args.device,
                       "mps": mps, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    a = _args()
    if a.rank_out is not None:
        rank_main(a)
    else:
        driver(a)
