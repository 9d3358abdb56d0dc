"""tokens/s of each way of combining gradients (ringloom.bench.comm_methods) with two ranks on
the visible GPUs: one GPU each where there are two, else both on one GPU as clients of a
CUDA Multi-Process Service daemon started (and stopped) here. Two ranks sharing one GPU
measure that the GPU path works and what each method costs beside plain all-reduce on the
same machine; they say nothing about scaling.

    python benchmarks/bench_comm_methods_gpu.py --json out.json [--steps 12]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

METHODS = ["allreduce", "bf16", "topk:0.01", "powersgd:4", "qsgd:7", "localsgd:4"]
MODEL = ["--preset", "tiny", "--n-layer", "4", "--n-embd", "256", "--n-head", "4", "--batch-size", "16",
         "--seq-len", "128"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    import ringloom

    env = dict(os.environ, NCCL_NVLS_ENABLE="0")
    control = shutil.which("nvidia-cuda-mps-control")
    shared = ringloom.cuda_device_count() < 2
    tmp = tempfile.mkdtemp(prefix="rl-mps-")
    if shared:
        if control is None:
            sys.exit("two ranks on one GPU need the CUDA Multi-Process Service (nvidia-cuda-mps-control)")
        env.update(CUDA_MPS_PIPE_DIRECTORY=os.path.join(tmp, "pipe"), CUDA_MPS_LOG_DIRECTORY=os.path.join(tmp, "log"))
        os.makedirs(env["CUDA_MPS_PIPE_DIRECTORY"])
        os.makedirs(env["CUDA_MPS_LOG_DIRECTORY"])
        subprocess.run([control, "-d"], env=env, check=True, timeout=30)
    out = os.path.join(tmp, "methods")
    try:
        cmd = [sys.executable, "-m", "ringloom", "launch", "-n", "2", "-m", "ringloom.bench.comm_methods",
               "--device", "cuda", *MODEL, "--steps", str(args.steps), "--out", out, *METHODS]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
        print(res.stdout[-3000:] + res.stderr[-3000:])
        if res.returncode != 0:
            sys.exit(f"comm_methods failed (rc {res.returncode})")
    finally:
        if shared:
            subprocess.run([control], input="quit\n", env=env, capture_output=True, text=True, timeout=60)
    rows = {}
    for m in METHODS:
        with open(os.path.join(out, m.replace(":", "-") + ".jsonl")) as f:
            last = [json.loads(line) for line in f][-1]
        rows[m] = {"tokens_per_s": last["tokens_per_s"], "val_loss": last["val_loss"]}
    base = rows["allreduce"]["tokens_per_s"]
    where = "one shared GPU" if shared else "2 GPUs"
    print(f"{'method':12s} {'tokens/s':>10s} {'vs all-reduce':>14s}  (2 ranks, {where})")
    for m, r in rows.items():
        print(f"{m:12s} {r['tokens_per_s']:10,.0f} {r['tokens_per_s'] / base:13.2f}x")
    with open(args.json, "w") as f:
        json.dump({"ranks": 2, "shared_gpu": shared, "model": MODEL, "steps": args.steps, "methods": rows}, f,
                  indent=1)


if __name__ == "__main__":
    main()
