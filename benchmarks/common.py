"""Timing and reporting shared by the benchmarks (ours vs a peer, measured in one run).

ringloom's CUDA ops run on ringloom's own stream and PyTorch's on PyTorch's, so CUDA events
recorded on one stream would not bracket the other's work. Both sides are therefore timed
the same way: a device-wide synchronize (torch.cuda.synchronize waits for every stream of
the device), a host clock around `n` back-to-back iterations, another device-wide
synchronize; time per iteration = elapsed / n. With n chosen so that a repetition lasts
>= 20 ms, launch latency is amortised and the host runs ahead of the GPU as long as one
iteration's GPU work outlasts its Python overhead (true for every shape benchmarked here).
Report the median of several repetitions after a warm-up.

Inputs are rotated over several copies (`fn(i)` gets the iteration index) where one copy
would fit in L2, so repeated iterations do not measure the cache.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Callable


def device_sync() -> None:
    import torch

    torch.cuda.synchronize()


def time_ms(fn: Callable[[int], object], warmup: int = 10, reps: int = 7, min_rep_s: float = 0.02) -> float:
    """Median milliseconds per call of fn(i) (see the module docstring)."""
    for i in range(warmup):
        fn(i)
    device_sync()
    # Calibrate the iteration count on one timed pass.
    t0 = time.perf_counter()
    fn(0)
    device_sync()
    one = max(time.perf_counter() - t0, 1e-6)
    n = max(3, min(2000, int(min_rep_s / one) + 1))
    times = []
    for _ in range(reps):
        device_sync()
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        device_sync()
        times.append((time.perf_counter() - t0) * 1e3 / n)
    return median(times)


@dataclass
class Row:
    shape: str
    ours_ms: float
    peer_ms: float
    work: float = 0.0  # bytes (unit "GB/s") or flops ("TFLOP/s") per call of ours
    unit: str = "GB/s"
    note: str = ""
    ratio: float = field(init=False)
    ours_rate: float = field(init=False)
    peer_rate: float = field(init=False)

    def __post_init__(self):
        self.ratio = self.peer_ms / self.ours_ms
        scale = 1e9 if self.unit == "GB/s" else 1e12
        self.ours_rate = self.work / (self.ours_ms * 1e-3) / scale if self.work else 0.0
        self.peer_rate = self.work / (self.peer_ms * 1e-3) / scale if self.work else 0.0


def device_info() -> dict:
    import torch

    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    # RINGLOOM_COMMIT names the tree measured where git would answer for another one (a
    # worktree copied below the main checkout on the device machine).
    info["commit"] = os.environ.get("RINGLOOM_COMMIT", "")
    if not info["commit"]:
        try:
            info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            check=True, cwd=os.path.dirname(__file__)).stdout.strip()
        except Exception:  # the device copy of the tree carries no .git
            info["commit"] = "unknown"
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return info


def copy_bandwidth_gbs(nbytes: int = 2 << 30, copies: int = 1) -> float:
    """The device's copy rate in GB/s (bytes read + bytes written), measured now: a
    device-to-device copy of nbytes, timed like everything else here, rotating over
    `copies` source/destination pairs (so that a copy smaller than L2 comes from memory)."""
    import torch

    n = max(nbytes // 4, 1)
    src = [torch.empty(n, dtype=torch.float32, device="cuda").uniform_() for _ in range(copies)]
    dst = [torch.empty_like(a) for a in src]
    ms = time_ms(lambda i: dst[i % copies].copy_(src[i % copies]))
    return 2.0 * 4 * n / (ms * 1e-3) / 1e9


def same_size_copy_gbs(work_bytes: float) -> float:
    """The copy rate for a copy moving `work_bytes` (read + write) in all, the inputs rotated
    as the kernels' are: at tens of MB a kernel's launch, ramp and tail weigh on the copy
    too, so this is the rate a kernel of that size could reach."""
    return copy_bandwidth_gbs(int(work_bytes // 2), copies=4)


def report(title: str, peer: str, rows: list[Row], json_path: str | None) -> None:
    """Prints `shape | ours ms | peer ms | ratio (peer/ours) | rate`, plus, for memory-bound
    rows (GB/s), our rate as a share of the copy rate measured in the same run; writes JSON."""
    info = device_info()
    copy = copy_bandwidth_gbs() if any(r.unit == "GB/s" and r.work for r in rows) else None
    print(f"\n{title}  ({info['device']}, torch {info['torch']}, commit {info['commit']})")
    if copy:
        print(f"device copy rate measured in this run: {copy:.0f} GB/s (read + write)")
    head = f"{'shape':<34} | {'ours ms':>9} | {peer + ' ms':>12} | {'ratio':>6} | {'ours':>8} | {'peer':>8} |"
    print(head + (" % of copy (of a same-size copy)" if copy else ""))
    print("-" * len(head))
    out = []
    for r in rows:
        pct = same = None
        if copy and r.unit == "GB/s" and r.work:
            pct = 100.0 * r.ours_rate / copy
            same = 100.0 * r.ours_rate / same_size_copy_gbs(r.work)
        print(f"{r.shape:<34} | {r.ours_ms:9.4f} | {r.peer_ms:12.4f} | {r.ratio:5.2f}x | "
              f"{r.ours_rate:8.1f} | {r.peer_rate:8.1f} | {r.unit}"
              + (f" {pct:5.1f}% ({same:5.1f}%)" if pct is not None else "") + (f" {r.note}" if r.note else ""))
        out.append({**asdict(r), "pct_of_copy": pct, "pct_of_same_size_copy": same})
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"title": title, "peer": peer, **info, "copy_gbs": copy, "rows": out}, f, indent=1)


def parse_args(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--json", default=None, help="write the results here")
    return ap.parse_args()


def rl_view(t):
    """A zero-copy ringloom view of a torch CUDA tensor (synchronised before use)."""
    import ringloom as rl

    return rl.from_dlpack(t.contiguous())


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """rows: dicts; columns: (key, format) pairs; prints `a | b | c` lines."""
    print(" | ".join(k for k, _ in columns))
    for r in rows:
        print(" | ".join(format(r[k], f) if r.get(k) is not None else "-" for k, f in columns))


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
