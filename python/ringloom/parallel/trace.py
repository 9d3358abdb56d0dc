"""A per-rank timeline of compute and communication, written as Chrome trace JSON
(chrome://tracing or https://ui.perfetto.dev): one process row per rank, thread 0 for
compute (F/B/W of each micro-batch and chunk), thread 1 for communication (waits in recvs,
gradient bucket waits, optimizer).

The measured bubble fraction of a rank is 1 - (time in compute) / (wall time of its steps):
the share of the step it spent waiting. Times come from time.perf_counter (CLOCK_MONOTONIC
on Linux, one clock for every process of the machine, so the ranks' rows line up). On a
GPU the engine synchronises the device at each span's end while tracing, so spans measure
the work and not its launch.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Sequence

COMPUTE_TID, COMM_TID = 0, 1


class Span:
    def __init__(self, tl: "Timeline", name: str, cat: str, args: dict | None):
        self.tl, self.name, self.cat, self.args = tl, name, cat, args
        self.t0 = time.perf_counter()

    def close(self) -> None:
        if self.tl.sync is not None:
            self.tl.sync()
        t1 = time.perf_counter()
        self.tl._add(self.name, self.cat, self.t0, t1, self.args)

    def __enter__(self) -> "Span":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Timeline:
    def __init__(self, rank: int, sync: Callable[[], None] | None = None):
        self.rank, self.sync = rank, sync
        self.events: list[dict] = []
        self.compute_s = 0.0
        self.step_s = 0.0
        self._step_t0: float | None = None

    def _add(self, name: str, cat: str, t0: float, t1: float, args: dict | None) -> None:
        ev = {"name": name, "cat": cat, "ph": "X", "ts": t0 * 1e6, "dur": (t1 - t0) * 1e6, "pid": self.rank,
              "tid": COMPUTE_TID if cat == "compute" else COMM_TID}
        if args:
            ev["args"] = args
        self.events.append(ev)
        if cat == "compute" and self._step_t0 is not None:
            self.compute_s += t1 - t0

    def span(self, name: str, cat: str = "compute", args: dict | None = None) -> Span:
        return Span(self, name, cat, args)

    def instant(self, name: str, cat: str = "comm") -> None:
        self.events.append({"name": name, "cat": cat, "ph": "i", "s": "t", "ts": time.perf_counter() * 1e6,
                            "pid": self.rank, "tid": COMM_TID})

    def step_begin(self) -> None:
        if self.sync is not None:
            self.sync()
        self._step_t0 = time.perf_counter()

    def step_end(self, step: int) -> None:
        if self._step_t0 is None:
            return
        if self.sync is not None:
            self.sync()
        t1 = time.perf_counter()
        self.step_s += t1 - self._step_t0
        self.events.append({"name": f"step {step}", "cat": "step", "ph": "X", "ts": self._step_t0 * 1e6,
                            "dur": (t1 - self._step_t0) * 1e6, "pid": self.rank, "tid": 2})
        self._step_t0 = None

    @property
    def bubble_fraction(self) -> float:
        """1 - compute time / step time over the steps recorded so far."""
        return 1.0 - self.compute_s / self.step_s if self.step_s > 0 else float("nan")

    def to_json(self) -> dict:
        meta = [{"name": "process_name", "ph": "M", "pid": self.rank, "args": {"name": f"rank {self.rank}"}},
                {"name": "thread_name", "ph": "M", "pid": self.rank, "tid": COMPUTE_TID, "args": {"name": "compute"}},
                {"name": "thread_name", "ph": "M", "pid": self.rank, "tid": COMM_TID, "args": {"name": "comm"}},
                {"name": "thread_name", "ph": "M", "pid": self.rank, "tid": 2, "args": {"name": "steps"}}]
        return {"traceEvents": meta + self.events, "displayTimeUnit": "ms",
                "otherData": {"rank": self.rank, "bubble_fraction": self.bubble_fraction}}

    def write(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.to_json(), f)
        os.replace(tmp, path)


def rank_path(path: str, rank: int) -> str:
    """trace.json -> trace.rank3.json (each rank writes its own file)."""
    root, ext = os.path.splitext(path)
    return f"{root}.rank{rank}{ext or '.json'}"


def merge_traces(paths: Sequence[str], out: str) -> dict[int, float]:
    """Merges per-rank trace files into one; returns {rank: bubble fraction}."""
    events: list[dict] = []
    bubbles: dict[int, float] = {}
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        events += d["traceEvents"]
        other = d.get("otherData", {})
        bubbles[int(other.get("rank", len(bubbles)))] = other.get("bubble_fraction")
    with open(out + ".tmp", "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"bubble_fraction": bubbles}}, f)
    os.replace(out + ".tmp", out)
    return bubbles


def _noop(*a: Any, **k: Any) -> None:
    return None
