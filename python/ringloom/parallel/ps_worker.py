"""The worker side of parameter-server training (parallel/param_server.py has the layout,
the protocol and the server): a full model replica computes gradients on this worker's rows,
pushes them to the servers and pulls the updated parameters; it holds no optimizer state."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _C
from ..models import ModelConfig, build_model
from .param_server import (F32, TRAILER, ParameterServerError, PSLayout, _check_mode, _host_values, _pair_groups,
                           _sub_group, _sum_f64)


class PSWorker:
    """One worker: holds a full model replica for forward/backward, no optimizer state.

    ``connect=False`` defers the initial exchange (worker 0 pushes its weights, every worker
    pulls them) to :meth:`connect`, so a trainer can first load a checkpoint's weights."""

    def __init__(self, config: ModelConfig, pg: Any, layout: PSLayout, *, mode: str = "sync", staleness: int = 0,
                 seed: int = 0, ignore_index: int = -100, device: str = "cpu", dtype: Any = None,
                 connect: bool = True):
        _check_mode(mode, staleness)
        if layout.is_server(pg.rank):
            raise ValueError(f"PSWorker: rank {pg.rank} is a server in {layout}")
        self.pg, self.layout, self.mode, self.staleness = pg, layout, mode, int(staleness)
        self.ignore_index = ignore_index
        self.pairs = _pair_groups(pg, layout)
        self.workers = _sub_group(pg, layout.worker_ranks())
        self.model = build_model(config, device, dtype, seed)
        self.named = self.model.parameters()
        self.total = sum(p.value.numel() for _, p in self.named)
        self.device = self.model.device
        # Gradients going out, parameters coming in: one fp32 vector on the model's device.
        self.flat = _C.zeros([self.total], "float32", self.device)
        self._pull_bufs = []
        for i in range(layout.servers):
            lo, hi = layout.shard(self.total, i)
            self._pull_bufs.append(_C.empty([hi - lo + TRAILER], "float32", self.device))
        self.step_count = 0
        self.comm_bytes_last_step = 0
        self.last_version = 0         # the server version (rounds) of the last parameters pulled
        self.start_version = 0        # the version pulled at connect (a resumed run's rounds so far)
        self.last_grad_norm = float("nan")   # the global gradient norm of the servers' last round
        self.optimizer_step = 0       # AdamW steps the servers had applied at the last pull
        if connect:
            self.connect()

    def connect(self, initial: np.ndarray | None = None) -> None:
        """The servers start from worker 0's weights: it pushes them (``initial``, a flat fp32
        host vector, e.g. a checkpoint's fp32 weights, instead of its model's values when
        given: a bf16 model's values are rounded), everyone pulls."""
        if self.pg.rank == 0:
            if initial is None:
                self._gather(grads=False)
            else:
                self.flat.copy_(_C.from_numpy(np.ascontiguousarray(initial, np.float32)).to(self.device))
            self._push("push the initial parameters")
        self.last_version = self.start_version = self._pull("pull the initial parameters")

    @property
    def rounds_seen(self) -> bool:
        """Whether the last pull came after at least one server round of this run (before
        one, an async pull carries no gradient norm yet: NaN)."""
        return self.last_version > self.start_version

    def _gather(self, grads: bool) -> None:
        """self.flat <- every parameter's gradient (or value), as fp32, in parameter order."""
        pos = 0
        for _, p in self.named:
            src = p.grad if grads else p.value
            n = src.numel()
            self.flat.narrow0(pos, n).copy_(src.to(F32).reshape([n]))
            pos += n

    def _scatter_values(self) -> None:
        pos = 0
        for _, p in self.named:
            n = p.value.numel()
            p.value.copy_(self.flat.narrow0(pos, n).reshape(list(p.value.shape)).to(p.value.dtype))
            pos += n

    def _fail(self, server: int, what: str, e: BaseException) -> ParameterServerError:
        return ParameterServerError(f"parameter server rank {server} failed while worker rank {self.pg.rank} was "
                                    f"waiting to {what} (step {self.step_count}): {e}")

    def _wait(self, works: list[tuple[int, Any]], what: str) -> None:
        for s, w in works:
            try:
                w.wait()
            except (RuntimeError, TimeoutError) as e:
                raise self._fail(s, what, e) from e

    def _push(self, what: str) -> None:
        """Sends each server its slice of self.flat (gradients, or the initial weights)."""
        sends = []
        for i, s in enumerate(self.layout.server_ranks()):
            lo, hi = self.layout.shard(self.total, i)
            try:
                sends.append((s, self.pairs[(s, self.pg.rank)].send(self.flat.narrow0(lo, hi - lo), 1,
                                                                      async_op=True)))
            except (RuntimeError, TimeoutError) as e:
                raise self._fail(s, what, e) from e
            self.comm_bytes_last_step += 4 * (hi - lo)
        self._wait(sends, what)

    def _pull(self, what: str) -> int:
        """Receives every server's shard (plus its trailer) into the model; returns the
        oldest version among the shards."""
        versions = []
        for i, s in enumerate(self.layout.server_ranks()):
            lo, hi = self.layout.shard(self.total, i)
            buf = self._pull_bufs[i]
            try:
                self.pairs[(s, self.pg.rank)].recv(buf, 1)
            except (RuntimeError, TimeoutError) as e:
                raise self._fail(s, what, e) from e
            self.flat.narrow0(lo, hi - lo).copy_(buf.narrow0(0, hi - lo))
            version, norm, adam_steps = _host_values(buf.narrow0(hi - lo, TRAILER))
            versions.append(int(version))
            if i == 0:   # every server computes the same global norm
                self.last_grad_norm, self.optimizer_step = float(norm), int(adam_steps)
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
        self._gather(grads=True)
        self.comm_bytes_last_step = 0
        self.step_count += 1
        self._push("push gradients")
        self.last_version = self._pull("pull parameters")
        self.comm_bytes_last_step += 4 * self.total
        if self.mode == "sync":
            tot = _sum_f64(self.workers, [loss * local, local])
            return float(tot[0] / tot[1]) if tot[1] else 0.0
        return float(loss)

    def recv_state(self, moments: bool) -> dict[str, Any]:
        """The other half of ParameterServer.send_state: every server's current shard (into
        the model, as a pull does) and, with ``moments``, its AdamW moments. Returns
        {"version", "optimizer_step", "params", and with moments "m", "v"}: the vectors
        flat, fp32, on the host."""
        versions = self._pull("receive the servers' state")
        out: dict[str, Any] = {"version": versions, "optimizer_step": self.optimizer_step,
                               "params": _host_values(self.flat)}   # fp32, also when the model is bf16
        if moments:
            m, v = np.empty(self.total, np.float32), np.empty(self.total, np.float32)
            for i, s in enumerate(self.layout.server_ranks()):
                lo, hi = self.layout.shard(self.total, i)
                for dst in (m, v):
                    buf = _C.empty([hi - lo], "float32", self.device)
                    try:
                        self.pairs[(s, self.pg.rank)].recv(buf, 1)
                    except (RuntimeError, TimeoutError) as e:
                        raise self._fail(s, "receive the servers' optimizer state", e) from e
                    dst[lo:hi] = _host_values(buf)
            out.update(m=m, v=v)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.model.state_dict()
