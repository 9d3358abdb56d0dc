"""Timing helpers shared by the benchmarks: ours vs a peer, in the same run.

ringloom launches its kernels on its own per-device stream, which torch's CUDA events
cannot see, so both sides are timed the same way: a batch of back-to-back calls between
two device synchronisations, timed on the host. With the batch sized to tens of
milliseconds the launch queue stays full and the batch time is the GPU time; the median
over several batches is reported. Where only torch work is timed, cuda_event_ms gives the
plain CUDA-event median.
"""
from __future__ import annotations

import json
import statistics
import time
from typing import Callable


def batch_ms(fn: Callable[[], object], sync: Callable[[], None], *, warmup: int = 3, batches: int = 7,
             target_ms: float = 40.0) -> float:
    """Median milliseconds per call of fn, from batches of back-to-back calls."""
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max((time.perf_counter() - t0) * 1e3, 1e-3)
    n = max(1, min(1000, int(target_ms / one)))
    times = []
    for _ in range(batches):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3 / n)
    return statistics.median(times)


def cuda_event_ms(fn: Callable[[], object], *, warmup: int = 3, reps: int = 20) -> float:
    """Median milliseconds of fn on torch's current stream, by CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """rows: dicts; columns: (key, format) pairs; prints `a | b | c` lines."""
    print(" | ".join(k for k, _ in columns))
    for r in rows:
        print(" | ".join(format(r[k], f) if r.get(k) is not None else "-" for k, f in columns))


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
