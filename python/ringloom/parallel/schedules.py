"""Pipeline schedules as per-rank action lists, generated and checked without processes.

A pipeline of ``p`` ranks with ``v`` chunks per rank has S = p * v *virtual stages*; virtual
stage s = c * p + r is chunk c of rank r (round-robin: with v > 1 each rank holds every p-th
slice of the layers, Narayanan et al. 2021). A step pushes ``m`` micro-batches through.

Compute actions (per micro-batch ``mb`` and chunk ``c``):

  F  forward                       needs F(mb, s-1) (its activation)
  B  input-gradient half           needs F(mb, s) and B(mb, s+1) (its output gradient)
  W  weight-gradient half          needs B(mb, s)

Schedules that do not split the backward (GPipe, 1F1B, interleaved) put W right after its B;
the executor fuses such a pair into one per-layer backward. ZB-H1 (Qi et al. 2023, "Zero
Bubble Pipeline Parallelism") defers W into what would be bubbles.

Communication actions are inserted around the compute: SEND_F after an F whose activation
another stage needs, RECV_F right before the F that needs one, SEND_B / RECV_B likewise for
input gradients. The executor issues sends asynchronously and blocks in recvs, so a schedule
is correct when :func:`simulate` (buffered sends, blocking recvs, FIFO channels per
(kind, src, dst)) runs every rank's list to the end with every recv matching the message at
the head of its channel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb-h1")
COMPUTE = ("F", "B", "W")


@dataclass(frozen=True)
class Action:
    """One step of a rank's list. ``peer`` is the pipeline rank sent to / received from."""

    kind: str    # F, B, W, SEND_F, RECV_F, SEND_B, RECV_B
    mb: int
    chunk: int = 0
    peer: int = -1

    def __str__(self) -> str:
        s = f"{self.kind}{self.mb}" + (f".{self.chunk}" if self.chunk else "")
        return s + (f"@{self.peer}" if self.peer >= 0 else "")


@dataclass(frozen=True)
class Schedule:
    name: str
    pp: int
    micro_batches: int
    chunks: int
    actions: list[list[Action]]   # per pipeline rank

    @property
    def virtual_stages(self) -> int:
        return self.pp * self.chunks

    def stage_of(self, rank: int, chunk: int) -> int:
        return chunk * self.pp + rank

    def splits_backward(self) -> bool:
        """True when some W does not follow its own B directly (ZB)."""
        for acts in self.actions:
            comp = [a for a in acts if a.kind in COMPUTE]
            for i, a in enumerate(comp):
                if a.kind == "B" and not (i + 1 < len(comp) and comp[i + 1] == Action("W", a.mb, a.chunk)):
                    return True
        return False


# ---------------------------------------------------------------- compute orders per rank

def _gpipe(p: int, m: int, r: int) -> list[tuple[str, int, int]]:
    """All forwards, then all backwards (Huang et al. 2019)."""
    return [("F", i, 0) for i in range(m)] + [x for i in range(m) for x in (("B", i, 0), ("W", i, 0))]


def _1f1b(p: int, m: int, r: int) -> list[tuple[str, int, int]]:
    """PipeDream-flush / 1F1B: p-r-1 warm-up forwards, then one forward and one backward
    alternately, then the remaining backwards; at most p-r micro-batches in flight."""
    warm = min(p - r - 1, m)
    out = [("F", i, 0) for i in range(warm)]
    f, b = warm, 0
    while f < m:
        out.append(("F", f, 0))
        f += 1
        out += [("B", b, 0), ("W", b, 0)]
        b += 1
    while b < m:
        out += [("B", b, 0), ("W", b, 0)]
        b += 1
    return out


def _interleaved(p: int, m: int, r: int, v: int) -> list[tuple[str, int, int]]:
    """Interleaved 1F1B (Megatron-LM): the k-th forward of a rank is micro-batch
    (k // (p v)) p + k % p of chunk (k // p) % v, i.e. groups of p micro-batches go through
    chunk 0, then chunk 1, ...; backwards run the chunks in reverse. Warm-up is
    2 (p - r - 1) + (v - 1) p forwards."""
    total = m * v

    def fwd(k: int) -> tuple[int, int]:
        return (k // (p * v)) * p + k % p, (k // p) % v

    def bwd(k: int) -> tuple[int, int]:
        return (k // (p * v)) * p + k % p, v - 1 - (k // p) % v

    warm = min(2 * (p - r - 1) + (v - 1) * p, total)
    out = [("F", *fwd(k)) for k in range(warm)]
    f, b = warm, 0
    while f < total:
        out.append(("F", *fwd(f)))
        f += 1
        mb, c = bwd(b)
        out += [("B", mb, c), ("W", mb, c)]
        b += 1
    while b < total:
        mb, c = bwd(b)
        out += [("B", mb, c), ("W", mb, c)]
        b += 1
    return out


def _zb_h1(p: int, m: int, r: int) -> list[tuple[str, int, int]]:
    """ZB-H1 (Qi et al. 2023, section 3): 1F1B's order of F and B, with the weight half W
    split off and deferred: rank r runs W(j) only once B(j + r) has run (in the cool-down,
    between the backwards; the rest at the end). B's then travel up the pipeline without
    waiting behind W's, and the W's fill the time 1F1B spends idle in its cool-down: with
    F = B = W the bubble drops from 3(p-1) to about (p-1) units. Rank r holds at most p - r
    micro-batches between F and B (as 1F1B) plus r between B and W, so no rank keeps more
    saved activations than 1F1B's first rank (p)."""
    warm = min(p - r - 1, m)
    out = [("F", i, 0) for i in range(warm)]
    f, b, w = warm, 0, 0

    def backward() -> None:
        nonlocal b, w
        out.append(("B", b, 0))
        b += 1
        if b - w > r:
            out.append(("W", w, 0))
            w += 1

    while f < m:
        out.append(("F", f, 0))
        f += 1
        backward()
    while b < m:
        backward()
    out += [("W", j, 0) for j in range(w, m)]
    return out


# ---------------------------------------------------------------- communication

def _with_comm(p: int, v: int, order: list[tuple[str, int, int]], r: int) -> list[Action]:
    """Inserts sends and recvs. A B directly followed by its own W is one fused backward in
    the executor, so its gradient goes out after the W."""
    S = p * v
    out: list[Action] = []
    pending_send: Action | None = None
    for j, (kind, mb, c) in enumerate(order):
        s = c * p + r
        prev_rank, next_rank = (s - 1) % p, (s + 1) % p
        if kind == "F":
            if s > 0:
                out.append(Action("RECV_F", mb, c, prev_rank))
            out.append(Action("F", mb, c))
            if s < S - 1:
                out.append(Action("SEND_F", mb, c, next_rank))
        elif kind == "B":
            if s < S - 1:
                out.append(Action("RECV_B", mb, c, next_rank))
            out.append(Action("B", mb, c))
            if s > 0:
                send = Action("SEND_B", mb, c, prev_rank)
                if j + 1 < len(order) and order[j + 1] == ("W", mb, c):
                    pending_send = send
                else:
                    out.append(send)
        else:
            out.append(Action("W", mb, c))
            if pending_send is not None:
                out.append(pending_send)
                pending_send = None
    return out


def make_schedule(name: str, pp: int, micro_batches: int, chunks: int = 1) -> Schedule:
    """The action lists of every pipeline rank for one step. ``chunks`` (virtual stages per
    rank) is used by "interleaved" only (default 2 there)."""
    p, m = int(pp), int(micro_batches)
    if name not in SCHEDULES:
        raise ValueError(f"unknown pipeline schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    if p < 1 or m < 1:
        raise ValueError(f"make_schedule: pp ({pp}) and micro_batches ({micro_batches}) must be positive")
    if name == "interleaved":
        v = 2 if chunks in (None, 1) else int(chunks)
        if p < 2:
            raise ValueError("the interleaved schedule needs pp >= 2 (its chunks alternate between ranks)")
        if m % p:
            raise ValueError(f"the interleaved schedule needs micro_batches ({m}) to be a multiple of pp ({p})")
        orders = [_interleaved(p, m, r, v) for r in range(p)]
    else:
        if chunks not in (None, 1):
            raise ValueError(f"schedule {name!r} has one chunk per rank; chunks={chunks} needs 'interleaved'")
        v = 1
        gen: Callable = {"gpipe": _gpipe, "1f1b": _1f1b, "zb-h1": _zb_h1}[name]
        orders = [gen(p, m, r) for r in range(p)]
    return Schedule(name, p, m, v, [_with_comm(p, v, orders[r], r) for r in range(p)])


# ---------------------------------------------------------------- checking and timing

@dataclass
class SimResult:
    makespan: float
    busy: list[float]            # compute time per rank
    start: dict                  # (rank, kind, mb, chunk) -> start time

    @property
    def bubble_fraction(self) -> float:
        """Idle share of the ranks' time: 1 - sum(busy) / (p * makespan)."""
        return 1.0 - sum(self.busy) / (len(self.busy) * self.makespan) if self.makespan else 0.0


def simulate(sched: Schedule, cost: dict[str, float] | None = None) -> SimResult:
    """Runs every rank's list with the executor's semantics (sends buffered, recvs blocking,
    FIFO channels per (kind, src, dst), communication free) and checks the dependencies of
    every compute action. Raises ValueError naming the first violation or the deadlock.
    ``cost``: time of F, B, W (default 1 each; a B followed by its own W is fused in
    non-split schedules and costs B + W)."""
    cost = {"F": 1.0, "B": 1.0, "W": 1.0, **(cost or {})}
    p, m, v, S = sched.pp, sched.micro_batches, sched.chunks, sched.virtual_stages
    pos = [0] * p
    clock = [0.0] * p
    busy = [0.0] * p
    channels: dict[tuple[str, int, int], list[tuple[int, int, float]]] = {}
    finished: dict[tuple[str, int, int], float] = {}  # (kind, mb, virtual stage) -> time
    start: dict = {}
    counts = {k: 0 for k in ("F", "B", "W")}
    while True:
        progressed = False
        for r in range(p):
            acts = sched.actions[r]
            while pos[r] < len(acts):
                a = acts[pos[r]]
                s = a.chunk * p + r
                if not (0 <= a.mb < m and 0 <= a.chunk < v):
                    raise ValueError(f"rank {r}: action {a} is outside m={m}, v={v}")
                if a.kind in ("SEND_F", "SEND_B"):
                    key = "F" if a.kind == "SEND_F" else "B"
                    if (key, a.mb, s) not in finished:
                        raise ValueError(f"rank {r}: {a} sends before {key}{a.mb} of chunk {a.chunk} ran")
                    want = s + 1 if key == "F" else s - 1
                    if not 0 <= want < S or want % p != a.peer:
                        raise ValueError(f"rank {r}: {a} goes to rank {a.peer}, but stage {want} is not there")
                    channels.setdefault((key, r, a.peer), []).append((a.mb, want, clock[r]))
                elif a.kind in ("RECV_F", "RECV_B"):
                    key = "F" if a.kind == "RECV_F" else "B"
                    q = channels.get((key, a.peer, r), [])
                    if not q:
                        break  # blocks
                    mb, stage, t = q.pop(0)
                    if (mb, stage) != (a.mb, s):
                        raise ValueError(f"rank {r}: {a} expects micro-batch {a.mb} for stage {s} but the next "
                                         f"message from rank {a.peer} is micro-batch {mb} for stage {stage}")
                    clock[r] = max(clock[r], t)
                else:
                    deps = {"F": [("F", a.mb, s - 1)] if s > 0 else [],
                            "B": [("F", a.mb, s)] + ([("B", a.mb, s + 1)] if s < S - 1 else []),
                            "W": [("B", a.mb, s)]}[a.kind]
                    for d in deps:
                        if d not in finished:
                            if d[2] != s:  # another stage's result: must have come through a recv
                                raise ValueError(f"rank {r}: {a} runs before {d[0]}{d[1]} of stage {d[2]} "
                                                 "(no matching recv)")
                            raise ValueError(f"rank {r}: {a} runs before its own {d[0]}{d[1]}")
                        clock[r] = max(clock[r], finished[d]) if d[2] == s else clock[r]
                    if (a.kind, a.mb, s) in finished:
                        raise ValueError(f"rank {r}: {a} appears twice")
                    start[(r, a.kind, a.mb, a.chunk)] = clock[r]
                    c = cost[a.kind]
                    clock[r] += c
                    busy[r] += c
                    finished[(a.kind, a.mb, s)] = clock[r]
                    counts[a.kind] += 1
                pos[r] += 1
                progressed = True
        if all(pos[r] == len(sched.actions[r]) for r in range(p)):
            break
        if not progressed:
            stuck = ", ".join(f"rank {r} at {sched.actions[r][pos[r]]}" for r in range(p) if pos[r] < len(sched.actions[r]))
            raise ValueError(f"schedule {sched.name} deadlocks: {stuck}")
    for k, n in counts.items():
        if n != m * S:
            raise ValueError(f"schedule {sched.name}: {n} {k} actions, expected m * stages = {m * S}")
    left = {k: len(q) for k, q in channels.items() if q}
    if left:
        raise ValueError(f"schedule {sched.name}: messages never received: {left}")
    return SimResult(max(clock), busy, start)


def ideal_bubble(p: int, m: int) -> float:
    """(p - 1) / (m + p - 1): the bubble of GPipe and 1F1B with equal stage times."""
    return (p - 1) / (m + p - 1)
