"""PSWorkerEngine: a parameter-server worker (ringloom.parallel.PSWorker). The launcher's
last S ranks are servers (train/ps_server.py, their own entry point); the first W ranks
are workers and run this engine.

Workers read their rows of each global batch (the W-way split data parallel uses), run
forward/backward, push gradients and pull parameters. Worker 0 (world rank 0) alone
evaluates (whole val batches, on the parameters it last pulled) and writes the weights and
the optimizer state of checkpoints: the servers send it their shards and AdamW moments, and
it writes them by parameter name, the files a data-parallel run writes, so a checkpoint
resumes under any layout. At the last step worker 0 receives the servers' final parameters
(in async mode its own last pull may predate other workers' last gradients), so the final
evaluation, the saved model and the sample are of the fully trained parameters.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ...parallel import PSLayout, PSWorker
from ...parallel.param_server import flatten_named, unflatten_named
from .base import Batch, CheckpointState, Engine


class PSWorkerEngine(Engine):
    def __init__(self, model_config: Any, pg: Any, servers: int, *, mode: str, staleness: int, seed: int,
                 device: str, dtype: str, steps: int, final_moments: bool, attention: str | None = None,
                 deterministic_attention: bool = False):
        """``steps``: the run's last step (when worker 0 takes the servers' final state, with
        their AdamW moments when ``final_moments``: a checkpoint follows)."""
        self.model_config, self.pg = model_config, pg
        self.layout = PSLayout(pg.size, servers)
        # connect=False: the first exchange waits until a resumed run has loaded its weights.
        self.ps = PSWorker(model_config, pg, self.layout, mode=mode, staleness=staleness, seed=seed, device=device,
                           dtype=dtype, connect=False)
        self.ps.model.attention = attention
        self.ps.model.deterministic_attention = deterministic_attention
        self.device = self.ps.device
        self.steps, self.final_moments = steps, final_moments
        self.data_rank, self.data_world = pg.rank, self.layout.workers
        self.val_rank, self.val_world = 0, 1     # worker 0 evaluates whole val batches alone
        self.initial: np.ndarray | None = None   # a restored run's fp32 weights, for worker 0 to push
        self.final: dict[str, Any] | None = None  # worker 0: the servers' state after the last step
        self._summary = {"param_servers": servers, "workers": self.layout.workers, "ps_mode": mode,
                         "ps_staleness": staleness}

    def start(self) -> None:
        self.ps.connect(self.initial)   # worker 0's (possibly restored) weights to the servers, then all pull

    def train_step(self, batch: Batch, lr: float, guard: Any) -> float:
        # The servers schedule the learning rate themselves (lr_at) and skip a round whose
        # global gradient norm is not finite; a worker that sees one (or a non-finite loss)
        # stops (--on-nonfinite skip is refused with parameter servers).
        loss = self.ps.train_step(*batch)
        self.last_grad_norm = self.ps.last_grad_norm
        # An async pull may come before any server round of this run: no norm yet (NaN).
        guard.accept(loss, self.last_grad_norm if self.ps.rounds_seen else 0.0)
        if self.ps.step_count == self.steps and self.pg.rank == 0:
            self.final = self.ps.recv_state(moments=self.final_moments)
        return loss

    def evaluate(self, batches: Iterable[Batch]) -> float | None:
        if self.pg.rank != 0:
            return None
        return float(np.mean([self.ps.model.loss(x, y) for x, y in batches]))

    def comm_bytes(self) -> int:
        return self.ps.comm_bytes_last_step

    def metrics(self) -> dict[str, Any]:
        # ps_version: the server rounds in the parameters this worker last pulled.
        return {**super().metrics(), "ps_version": self.ps.last_version}

    def summary(self) -> dict[str, Any]:
        return dict(self._summary)

    def state_dict(self) -> CheckpointState:
        """Every worker calls it (the servers meet them in train/ps_server.py); worker 0
        receives the servers' weights and AdamW state and returns them by name."""
        if self.pg.rank != 0:
            return CheckpointState(None, None, self.ps.optimizer_step)
        st = self.final if self.final is not None else self.ps.recv_state(moments=True)
        named = self.ps.named
        optim = {"step": st["optimizer_step"], **unflatten_named(named, st["m"], "m."),
                 **unflatten_named(named, st["v"], "v.")}
        return CheckpointState(unflatten_named(named, st["params"]), optim, st["optimizer_step"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ps.model.load_state_dict(state["model"])
        self.initial = flatten_named(self.ps.named, state["model"])   # the fp32 weights, not a bf16 copy
        self.ps.step_count, self.ps.optimizer_step = int(state["step"]), int(state["optimizer_step"])

    def full_model(self) -> Any:
        return self.ps.model if self.pg.rank == 0 else None
