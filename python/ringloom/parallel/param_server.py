"""Parameter-server training: the last S ranks of the job hold the parameters, sharded; the
other W ranks compute gradients, push them to the servers and pull the new parameters.

    pg = ringloom.distributed.init()
    layout = PSLayout(pg.size, servers=1)
    if layout.is_server(pg.rank):
        ParameterServer(config, pg, layout, steps, mode="sync", lr=1e-3).serve()
    else:
        w = PSWorker(config, pg, layout, mode="sync")
        loss = w.train_step(ids, targets)         # this worker's rows of the global batch

The model's parameters, in Model.parameters() order, form one flat fp32 vector of N
elements; server s owns elements [s N / S, (s+1) N / S) with its fp32 AdamW moments, and
updates them with the fused ops.adamw_step (one view per parameter piece, so each piece
keeps its parameter's weight decay, as ZeRO-1 does). Gradient clipping uses the global
norm: the servers sum their shards' squared norms (a servers-only group).

Each (server, worker) pair talks over its own two-rank group of our TCP transport: a group
runs its ops one at a time in issue order, so separate pair groups are what lets a server
wait on every worker at once and serve whoever arrives first.

Modes
  sync   a step: every worker pushes its gradient, scaled by 1 / (targets in the global
         batch); each server sums the W gradients in worker order, steps AdamW on its shard
         and sends it back. This equals all-reduce data parallel training (tested to fp32
         tolerance).
  async  bounded staleness (stale synchronous parallel, Ho et al. 2013) with the server
         updating every W gradients (n-softsync, Zhang et al. 2016): gradients are
         applied as they arrive, W at a time, whichever workers they come from, and each
         gradient is its worker's mean over its own rows divided by W. A worker's pull
         after its step k is answered once the slowest worker has pushed step k - s
         (``staleness`` s), so no worker runs more than s steps ahead of the slowest.
         With s = 0 the W gradients of an update are exactly one per worker: async with
         staleness 0 equals sync. The pulled shard carries the server's version (updates
         applied), so a worker can report the staleness it actually saw.

A server that dies makes its workers raise :class:`ParameterServerError` naming the server
rank (the transport sees EOF at once; a hung server is caught by the group timeout).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _C
from ..models import ModelConfig, build_model

ops = _C.ops


class ParameterServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class PSLayout:
    """World ranks: workers 0 .. W-1, servers W .. W+S-1."""

    world: int
    servers: int

    def __post_init__(self) -> None:
        if not 1 <= self.servers < self.world:
            raise ValueError(f"parameter server: {self.servers} server(s) need at least one worker besides them "
                             f"in a world of {self.world} ranks")

    @property
    def workers(self) -> int:
        return self.world - self.servers

    def worker_ranks(self) -> list[int]:
        return list(range(self.workers))

    def server_ranks(self) -> list[int]:
        return list(range(self.workers, self.world))

    def is_server(self, rank: int) -> bool:
        return rank >= self.workers

    def shard(self, total: int, s: int) -> tuple[int, int]:
        """Elements [lo, hi) of the flat parameter vector that server index s owns."""
        return s * total // self.servers, (s + 1) * total // self.servers


def _pair_groups(pg: Any, layout: PSLayout) -> dict[tuple[int, int], Any]:
    """{(server rank, worker rank): two-rank group} for the pairs this rank belongs to.
    Every rank walks the same list in the same order (new_group's contract)."""
    out = {}
    for s in layout.server_ranks():
        for w in layout.worker_ranks():
            g = pg.new_group([w, s])
            if g is not None:
                out[(s, w)] = g
    return out


def _sub_group(pg: Any, ranks: list[int]) -> Any:
    if len(ranks) == 1:
        return None
    return pg.new_group(ranks)


def _sum_f64(group: Any, values: list[float]) -> np.ndarray:
    from .engine import sum_f64

    return sum_f64(group, values)


def _check_mode(mode: str, staleness: int) -> None:
    if mode not in ("sync", "async"):
        raise ValueError(f"parameter server: mode must be sync or async, got {mode!r}")
    if staleness < 0:
        raise ValueError(f"parameter server: staleness must be >= 0, got {staleness}")


def _spec(config: ModelConfig, seed: int) -> tuple[Any, list[tuple[str, Any]], int]:
    model = build_model(config, seed=seed)
    named = model.parameters()
    return model, named, sum(p.value.numel() for _, p in named)


class PSWorker:
    """One worker: holds a full model replica for forward/backward, no optimizer state."""

    def __init__(self, config: ModelConfig, pg: Any, layout: PSLayout, *, mode: str = "sync", staleness: int = 0,
                 seed: int = 0, ignore_index: int = -100):
        _check_mode(mode, staleness)
        if layout.is_server(pg.rank):
            raise ValueError(f"PSWorker: rank {pg.rank} is a server in {layout}")
        self.pg, self.layout, self.mode, self.staleness = pg, layout, mode, int(staleness)
        self.ignore_index = ignore_index
        self.pairs = _pair_groups(pg, layout)
        self.workers = _sub_group(pg, layout.worker_ranks())
        self.model, self.named, self.total = _spec(config, seed)
        self.flat = np.empty(self.total, np.float32)
        self.step_count = 0
        self.comm_bytes_last_step = 0
        self.last_version = 0     # the server version (updates applied) of the last parameters pulled
        # The servers start from worker 0's weights: it pushes them, everyone pulls.
        if pg.rank == 0:
            self._gather_values()
            self._push("push the initial parameters")
        self._pull("pull the initial parameters")

    def _gather_values(self) -> None:
        pos = 0
        for _, p in self.named:
            n = p.value.numel()
            self.flat[pos:pos + n] = np.asarray(p.value.numpy()).reshape(-1)
            pos += n

    def _gather_grads(self) -> None:
        pos = 0
        for _, p in self.named:
            n = p.grad.numel()
            self.flat[pos:pos + n] = np.asarray(p.grad.numpy()).reshape(-1)
            pos += n

    def _scatter_values(self) -> None:
        pos = 0
        for _, p in self.named:
            n = p.value.numel()
            p.value.copy_(_C.from_numpy(np.ascontiguousarray(self.flat[pos:pos + n]).reshape(list(p.value.shape))))
            pos += n

    def _fail(self, server: int, what: str, e: BaseException) -> ParameterServerError:
        return ParameterServerError(f"parameter server rank {server} failed while worker rank {self.pg.rank} was "
                                    f"waiting to {what} (step {self.step_count}): {e}")

    def _push(self, what: str) -> None:
        """Sends each server its slice of self.flat (gradients, or the initial weights)."""
        sends = []
        for i, s in enumerate(self.layout.server_ranks()):
            lo, hi = self.layout.shard(self.total, i)
            try:
                sends.append((s, self.pairs[(s, self.pg.rank)].send(np.ascontiguousarray(self.flat[lo:hi]), 1,
                                                                      async_op=True)))
            except (RuntimeError, TimeoutError) as e:
                raise self._fail(s, what, e) from e
            self.comm_bytes_last_step += 4 * (hi - lo)
        for s, w in sends:
            try:
                w.wait()
            except (RuntimeError, TimeoutError) as e:
                raise self._fail(s, what, e) from e

    def _pull(self, what: str) -> int:
        """Receives every server's shard (plus its version) into the model; returns the
        oldest version among the shards."""
        versions = []
        for i, s in enumerate(self.layout.server_ranks()):
            lo, hi = self.layout.shard(self.total, i)
            buf = np.empty(hi - lo + 1, np.float32)
            try:
                self.pairs[(s, self.pg.rank)].recv(buf, 1)
            except (RuntimeError, TimeoutError) as e:
                raise self._fail(s, what, e) from e
            self.flat[lo:hi] = buf[:-1]
            versions.append(int(buf[-1]))
        self._scatter_values()
        return min(versions)

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """One step on this worker's rows. Returns the global batch's mean loss in sync mode,
        this worker's own mean loss in async mode (workers do not wait for each other)."""
        local = int(np.count_nonzero(np.asarray(targets) != self.ignore_index))
        if self.mode == "sync":
            count = int(round(_sum_f64(self.workers, [local])[0]))
        else:
            count = local * self.layout.workers
        self.model.zero_grad()
        loss = self.model.forward_backward(inputs, targets, grad_scale=1.0 / max(count, 1),
                                           ignore_index=self.ignore_index)
        self._gather_grads()
        self.comm_bytes_last_step = 0
        self.step_count += 1
        self._push("push gradients")
        self.last_version = self._pull("pull parameters")
        self.comm_bytes_last_step += 4 * self.total
        if self.mode == "sync":
            tot = _sum_f64(self.workers, [loss * local, local])
            return float(tot[0] / tot[1]) if tot[1] else 0.0
        return float(loss)

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.model.state_dict()


class ParameterServer:
    """One server: owns a shard of the parameters and its AdamW state; serve() runs the
    whole job (``steps`` steps of every worker) and returns statistics."""

    def __init__(self, config: ModelConfig, pg: Any, layout: PSLayout, steps: int, *, mode: str = "sync",
                 staleness: int = 0, seed: int = 0, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.1, max_grad_norm: float = 0.0, lr_at: Any = None):
        _check_mode(mode, staleness)
        if not layout.is_server(pg.rank):
            raise ValueError(f"ParameterServer: rank {pg.rank} is a worker in {layout}")
        self.pg, self.layout, self.mode, self.staleness = pg, layout, mode, int(staleness)
        self.steps = int(steps)
        self.index = pg.rank - layout.workers
        self.pairs = _pair_groups(pg, layout)
        self.servers = _sub_group(pg, layout.server_ranks())
        _, named, total = _spec(config, seed)
        self.total = total
        self.lo, self.hi = layout.shard(total, self.index)
        L = self.hi - self.lo
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.max_grad_norm = float(max_grad_norm)
        self.lr_at = lr_at   # step -> lr (an LR schedule), or None for a constant lr
        self.master = np.zeros(L + 1, np.float32)   # the shard, then its version
        self.grad = np.zeros(L, np.float32)
        self.m = _C.zeros([L], "float32", "cpu")
        self.v = _C.zeros([L], "float32", "cpu")
        self._master_t = _C.from_numpy(self.master)
        self._grad_t = _C.from_numpy(self.grad)
        self._pieces: list[tuple[Any, Any, Any, Any, float]] = []
        off = 0
        for _, p in named:
            n = p.value.numel()
            a, e = max(self.lo, off), min(self.hi, off + n)
            if a < e:
                wd = float(weight_decay) if p.decay else 0.0
                sl = (a - self.lo, e - a)
                self._pieces.append((self._master_t.narrow0(*sl), self._grad_t.narrow0(*sl), self.m.narrow0(*sl),
                                     self.v.narrow0(*sl), wd))
            off += n
        self.version = 0
        self.max_staleness_seen = 0   # updates applied between a gradient's parameters and its own update
        self.max_lead_seen = 0        # steps a worker was ahead of the slowest when its pull was answered

    def _fail(self, worker: int, what: str, e: BaseException) -> ParameterServerError:
        return ParameterServerError(f"worker rank {worker} failed while parameter server rank {self.pg.rank} was "
                                    f"waiting to {what} (update {self.version}): {e}")

    def _send_params(self, w: int) -> Any:
        self.master[-1] = float(self.version)
        try:
            return self.pairs[(self.pg.rank, w)].send(self.master.copy(), 0, async_op=True)
        except (RuntimeError, TimeoutError) as e:
            raise self._fail(w, "send parameters", e) from e

    def _update(self, grads: list[np.ndarray]) -> None:
        """One AdamW step on the shard with the sum of ``grads`` (summed in the given order)."""
        self.grad[:] = 0.0
        for g in grads:
            self.grad += g
        sq = float(np.dot(self.grad.astype(np.float64), self.grad.astype(np.float64)))
        norm = float(np.sqrt(_sum_f64(self.servers, [sq])[0]))
        self.version += 1
        lr = self.lr if self.lr_at is None else float(self.lr_at(self.version - 1))
        if self._pieces:
            ops.adamw_step([x[0] for x in self._pieces], [x[1] for x in self._pieces], [x[2] for x in self._pieces],
                           [x[3] for x in self._pieces], [x[4] for x in self._pieces], lr=lr, beta1=self.betas[0],
                           beta2=self.betas[1], eps=self.eps, step=self.version, max_norm=self.max_grad_norm,
                           grad_norm=_C.from_numpy(np.array([norm], np.float32)) if self.max_grad_norm > 0 else None)

    def serve(self) -> dict[str, Any]:
        W = self.layout.workers
        workers = self.layout.worker_ranks()
        # Initial parameters from worker 0, to everyone.
        init = np.empty(self.hi - self.lo, np.float32)
        try:
            self.pairs[(self.pg.rank, 0)].recv(init, 0)
        except (RuntimeError, TimeoutError) as e:
            raise self._fail(0, "receive the initial parameters", e) from e
        self.master[:-1] = init
        sends = [self._send_params(w) for w in workers]
        if self.mode == "sync":
            self._serve_sync(workers, sends)
        else:
            self._serve_async(workers, sends)
        return {"updates": self.version, "max_staleness": self.max_staleness_seen, "max_lead": self.max_lead_seen}

    def _serve_sync(self, workers: list[int], sends: list[Any]) -> None:
        L = self.hi - self.lo
        bufs = {w: np.empty(L, np.float32) for w in workers}
        for _ in range(self.steps):
            works = [(w, self.pairs[(self.pg.rank, w)].recv(bufs[w], 0, async_op=True)) for w in workers]
            for w, wk in works:
                try:
                    wk.wait()
                except (RuntimeError, TimeoutError) as e:
                    raise self._fail(w, "receive gradients", e) from e
            for s in sends:
                s.wait()
            self._update([bufs[w] for w in workers])
            sends = [self._send_params(w) for w in workers]
        for s in sends:
            s.wait()

    def _serve_async(self, workers: list[int], sends: list[Any]) -> None:
        """Event loop: poll every worker's pending receive; update every W arrivals; answer a
        worker's pull once the slowest worker is close enough behind it."""
        L = self.hi - self.lo
        W = len(workers)
        pushed = {w: 0 for w in workers}          # gradients received from each worker
        waiting: dict[int, int] = {}               # worker -> its step whose pull is pending
        arrived: list[tuple[int, int, np.ndarray, int]] = []  # (step, worker, gradient, its version): not applied
        sent_version = {w: 0 for w in workers}    # the version each worker's current parameters have
        pending_sends = list(sends)

        def post(w: int) -> tuple[np.ndarray, Any]:
            buf = np.empty(L, np.float32)
            return buf, self.pairs[(self.pg.rank, w)].recv(buf, 0, async_op=True)

        recvs = {w: post(w) for w in workers}
        while any(pushed[w] < self.steps for w in workers) or waiting or arrived:
            progressed = False
            for w in workers:
                if w not in recvs:
                    continue
                try:
                    done = recvs[w][1].is_completed()
                except (RuntimeError, TimeoutError) as e:
                    raise self._fail(w, "receive gradients", e) from e
                if done:
                    buf, wk = recvs.pop(w)
                    try:
                        wk.wait()
                    except (RuntimeError, TimeoutError) as e:
                        raise self._fail(w, "receive gradients", e) from e
                    arrived.append((pushed[w], w, buf, sent_version[w]))
                    waiting[w] = pushed[w]
                    pushed[w] += 1
                    progressed = True
            while len(arrived) >= W:
                # The W oldest arrivals, summed in (step, worker) order (deterministic).
                batch = sorted(arrived[:W], key=lambda x: (x[0], x[1]))
                del arrived[:W]
                self.max_staleness_seen = max(self.max_staleness_seen,
                                              max(self.version - x[3] for x in batch))
                self._update([x[2] for x in batch])
                progressed = True
            slowest = min(pushed.values())
            for w in sorted(waiting):
                k = waiting[w]
                # Answer once the slowest has pushed step k - s, and every complete round
                # of W gradients received so far is applied.
                if slowest >= k + 1 - self.staleness and len(arrived) < W:
                    if self.staleness == 0 and self.version < k + 1:
                        continue
                    pending_sends.append(self._send_params(w))
                    sent_version[w] = self.version
                    self.max_lead_seen = max(self.max_lead_seen, pushed[w] - slowest)
                    del waiting[w]
                    if pushed[w] < self.steps:
                        recvs[w] = post(w)
                    progressed = True
            pending_sends = [s for s in pending_sends if not s.is_completed()]
            if not progressed:
                time.sleep(0.0005)
        for s in pending_sends:
            s.wait()
