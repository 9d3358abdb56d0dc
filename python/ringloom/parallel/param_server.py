"""Parameter-server training: the last S ranks of the job hold the parameters, sharded; the
other W ranks compute gradients, push them to the servers and pull the new parameters.

    layout = PSLayout(pg.size, servers=1)
    if layout.is_server(pg.rank):
        ParameterServer(config, pg, layout, steps, mode="sync", lr=1e-3).serve()
    else:
        w = PSWorker(config, pg, layout, mode="sync")      # parallel/ps_worker.py
        loss = w.train_step(ids, targets)                 # this worker's rows of the global batch

The parameters (Model.parameters() order) form one flat fp32 vector of N elements; server s
owns [s N / S, (s+1) N / S) with its AdamW moments and updates it with ops.adamw_step, one
view per parameter piece (each keeps its weight decay, as ZeRO-1 does); clipping uses the
global norm, summed over a servers-only group. Each (server, worker) pair has its own
two-rank group, so a server can wait on every worker at once. Buffers live on the rank's
device; a bf16 worker converts to and from fp32 (the server's shard is the master copy).
A pulled shard ends in TRAILER values: the server's version (rounds), the global gradient
norm of its last round (a non-finite round is skipped, nothing applied) and its AdamW steps.

Modes. sync: every worker pushes its gradient scaled by 1 / (targets in the global batch);
each server sums the W gradients in worker order and steps: equal to all-reduce data
parallel. async: bounded staleness (stale synchronous parallel, Ho et al. 2013) with an
update every W gradients as they arrive (n-softsync, Zhang et al. 2016); a worker's pull
after its step k waits until the slowest worker pushed step k - s, so with s = 0 it equals
sync. ``serve(on_update=)``, ``send_state`` / ``PSWorker.recv_state`` and ``load_state``
serve checkpoints (train/ps_server.py). A dead server makes its workers raise
ParameterServerError naming its rank.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .. import _C
from ..models import ModelConfig, build_model

ops = _C.ops
F32 = _C.DType.float32
TRAILER = 3   # after each pulled shard: version, global gradient norm of the last round, AdamW steps


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


def flatten_named(named: list[tuple[str, Any]], arrays: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
    """The flat fp32 vector (Model.parameters() order) of ``arrays[prefix + name]``."""
    parts = []
    for name, p in named:
        a = arrays.get(prefix + name)
        if a is None:
            raise ValueError(f"parameter server: no {prefix + name!r} in the state")
        if tuple(np.shape(a)) != tuple(p.value.shape):
            raise ValueError(f"parameter server: {prefix + name} has shape {tuple(np.shape(a))}, expected "
                             f"{tuple(p.value.shape)}")
        parts.append(np.asarray(a, np.float32).reshape(-1))
    return np.concatenate(parts)


def unflatten_named(named: list[tuple[str, Any]], flat: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    """flatten_named's inverse: {prefix + name: array of the parameter's shape}."""
    out, pos = {}, 0
    for name, p in named:
        n = p.value.numel()
        out[prefix + name] = np.array(flat[pos:pos + n], np.float32).reshape(tuple(p.value.shape))
        pos += n
    return out


def _host_values(t: Any) -> np.ndarray:
    """A host fp32 copy of a (small, or needed on the host anyway) tensor."""
    return np.array(t.cpu().numpy(), np.float32)


class ParameterServer:
    """One server: owns a shard of the parameters and its AdamW state; serve() runs the
    whole job (``steps`` steps of every worker) and returns statistics."""

    def __init__(self, config: ModelConfig, pg: Any, layout: PSLayout, steps: int, *, mode: str = "sync",
                 staleness: int = 0, seed: int = 0, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.1, max_grad_norm: float = 0.0, lr_at: Any = None,
                 device: str = "cpu"):
        _check_mode(mode, staleness)
        if not layout.is_server(pg.rank):
            raise ValueError(f"ParameterServer: rank {pg.rank} is a worker in {layout}")
        self.pg, self.layout, self.mode, self.staleness = pg, layout, mode, int(staleness)
        self.steps = int(steps)
        self.index = pg.rank - layout.workers
        self.pairs = _pair_groups(pg, layout)
        self.servers = _sub_group(pg, layout.server_ranks())
        _, named, total = _spec(config, seed)
        self.named, self.total, self.device = named, total, device
        self.lo, self.hi = layout.shard(total, self.index)
        L = self.L = self.hi - self.lo
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.max_grad_norm = float(max_grad_norm)
        self.lr_at = lr_at   # round -> lr (an LR schedule), or None for a constant lr
        self.master = _C.zeros([L + TRAILER], "float32", device)   # the shard, then the trailer
        self.grad = _C.zeros([L], "float32", device)
        self.m = _C.zeros([L], "float32", device)
        self.v = _C.zeros([L], "float32", device)
        self._pieces: list[tuple[Any, Any, Any, Any, float]] = []
        off = 0
        for _, p in named:
            n = p.value.numel()
            a, e = max(self.lo, off), min(self.hi, off + n)
            if a < e:
                wd = float(weight_decay) if p.decay else 0.0
                sl = (a - self.lo, e - a)
                self._pieces.append((self.master.narrow0(*sl), self.grad.narrow0(*sl), self.m.narrow0(*sl),
                                     self.v.narrow0(*sl), wd))
            off += n
        self.version = 0              # rounds of updates (applied or skipped)
        self.optimizer_step = 0       # AdamW steps applied (rounds with a finite gradient norm)
        self.last_grad_norm = float("nan")
        self.skipped = 0
        self.max_staleness_seen = 0   # updates applied between a gradient's parameters and its own update
        self.max_lead_seen = 0        # steps a worker was ahead of the slowest when its pull was answered

    def _fail(self, worker: int, what: str, e: BaseException) -> ParameterServerError:
        return ParameterServerError(f"worker rank {worker} failed while parameter server rank {self.pg.rank} was "
                                    f"waiting to {what} (update {self.version}): {e}")

    def _write_trailer(self) -> None:
        t = np.array([self.version, self.last_grad_norm, self.optimizer_step], np.float32)
        self.master.narrow0(self.L, TRAILER).copy_(_C.from_numpy(t).to(self.device))

    def _send(self, w: int, t: Any, what: str) -> Any:
        try:
            return self.pairs[(self.pg.rank, w)].send(t, 0, async_op=True)
        except (RuntimeError, TimeoutError) as e:
            raise self._fail(w, what, e) from e

    def _send_params(self, w: int) -> Any:
        # A copy: in async mode the shard may be updated while this send is under way.
        self._write_trailer()
        return self._send(w, self.master.clone(), "send parameters")

    def send_state(self, w: int, moments: bool) -> None:
        """Sends worker ``w`` this server's current shard (with its trailer) and, with
        ``moments``, its AdamW m and v (PSWorker.recv_state receives them). Blocks until sent."""
        works = [self._send_params(w)]
        if moments:
            works += [self._send(w, self.m.clone(), "send the optimizer state"),
                      self._send(w, self.v.clone(), "send the optimizer state")]
        for wk in works:
            try:
                wk.wait()
            except (RuntimeError, TimeoutError) as e:
                raise self._fail(w, "send the server state", e) from e

    def load_state(self, m: np.ndarray, v: np.ndarray, optimizer_step: int, version: int) -> None:
        """Resume: this server's slice of the flat moments (Model.parameters() order), the
        AdamW step count and the round count. The weights come from worker 0's first push."""
        for dst, src in ((self.m, m), (self.v, v)):
            if src.size != self.total:
                raise ValueError(f"ParameterServer.load_state: {src.size} moment elements, the model has "
                                 f"{self.total}")
            dst.copy_(_C.from_numpy(np.ascontiguousarray(src[self.lo:self.hi], np.float32)).to(self.device))
        self.optimizer_step, self.version = int(optimizer_step), int(version)

    def _update(self, grads: list[Any]) -> None:
        """One AdamW step on the shard with the sum of ``grads`` (summed in the given order);
        skipped, weights and moments untouched, when the global gradient norm is not finite."""
        self.grad.zero_()
        for g in grads:
            ops.add_(self.grad, g)
        g = float(_host_values(ops.grad_norm([self.grad]))[0]) if self.L else 0.0
        norm = float(np.sqrt(_sum_f64(self.servers, [g * g])[0]))
        self.version += 1
        self.last_grad_norm = norm
        if not math.isfinite(norm):
            self.skipped += 1
            return
        self.optimizer_step += 1
        lr = self.lr if self.lr_at is None else float(self.lr_at(self.version - 1))
        if self._pieces:
            norm_t = _C.from_numpy(np.array([norm], np.float32)).to(self.device) if self.max_grad_norm > 0 else None
            ops.adamw_step([x[0] for x in self._pieces], [x[1] for x in self._pieces], [x[2] for x in self._pieces],
                           [x[3] for x in self._pieces], [x[4] for x in self._pieces], lr=lr, beta1=self.betas[0],
                           beta2=self.betas[1], eps=self.eps, step=self.optimizer_step, max_norm=self.max_grad_norm,
                           grad_norm=norm_t)

    def serve(self, on_update: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Serves ``self.steps`` steps of every worker. ``on_update(version)`` (sync mode
        only) runs after each round, once its parameters are on their way to the workers."""
        if on_update is not None and self.mode != "sync":
            raise ValueError("ParameterServer.serve: on_update needs sync mode (async rounds do not match steps)")
        workers = self.layout.worker_ranks()
        # Initial parameters from worker 0, to everyone.
        init = _C.empty([self.L], "float32", self.device)
        try:
            self.pairs[(self.pg.rank, 0)].recv(init, 0)
        except (RuntimeError, TimeoutError) as e:
            raise self._fail(0, "receive the initial parameters", e) from e
        self.master.narrow0(0, self.L).copy_(init)
        sends = [self._send_params(w) for w in workers]
        if self.mode == "sync":
            self._serve_sync(workers, sends, on_update)
        else:
            self._serve_async(workers, sends)
        return {"updates": self.version, "max_staleness": self.max_staleness_seen, "max_lead": self.max_lead_seen,
                "skipped": self.skipped}

    def _serve_sync(self, workers: list[int], sends: list[Any], on_update: Callable[[int], None] | None) -> None:
        bufs = {w: _C.empty([self.L], "float32", self.device) for w in workers}
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
            if on_update is not None:
                on_update(self.version)
        for s in sends:
            s.wait()

    def _serve_async(self, workers: list[int], sends: list[Any]) -> None:
        """Event loop: poll every worker's pending receive; update every W arrivals; answer a
        worker's pull once the slowest worker is close enough behind it."""
        W = len(workers)
        base = self.version                       # rounds done before this serve (a resumed run)
        pushed = {w: 0 for w in workers}          # gradients received from each worker
        waiting: dict[int, int] = {}               # worker -> its step whose pull is pending
        arrived: list[tuple[int, int, Any, int]] = []  # (step, worker, gradient, its version): not applied
        sent_version = {w: base for w in workers}  # the version each worker's current parameters have
        pending_sends = list(sends)

        def post(w: int) -> tuple[Any, Any]:
            buf = _C.empty([self.L], "float32", self.device)
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
                    if self.staleness == 0 and self.version - base < k + 1:
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
