"""MeshEngine: this rank's share of dp x pp training (ringloom.parallel.ParallelEngine:
pipeline stages, bucketed dp gradient reduction, ZeRO-1, compression, local SGD).

Checkpoints: the ranks of data-parallel index 0 write the weights of their stages and the
optimizer state (the other replicas hold the same values); under ZeRO the sharded AdamW
state is gathered whole, by parameter name, so a checkpoint does not depend on the layout
and restores under any other dp x pp split.
"""
from __future__ import annotations

from typing import Any, Iterable

from ...checkpoint.manager import CheckpointError
from ...models import build_model, param_specs
from ...parallel import DeviceMesh, ParallelEngine
from .base import Batch, CheckpointState, Engine


class MeshEngine(Engine):
    def __init__(self, model_config: Any, pg: Any, dp: int, pp: int, *, device: str, dtype: str, seed: int,
                 attention: str | None = None, deterministic_attention: bool = False, trace_path: str | None = None,
                 **options: Any):
        """``options``: ParallelEngine's (schedule, micro_batches, chunks, stage_layers, zero,
        bucket_mb, lr, weight_decay, max_grad_norm, compression, local_sgd, local_sgd_moments).
        ``trace_path``: record a timeline of every rank's compute and communication, merged
        into this Chrome trace file at the end."""
        self.model_config, self.pg, self.dtype, self.seed, self.attention = model_config, pg, dtype, seed, attention
        self.deterministic_attention = deterministic_attention
        self.mesh = DeviceMesh(dp, pp, pg)
        self.parallel = ParallelEngine(model_config, self.mesh, device=device, dtype=dtype, seed=seed,
                                       trace=trace_path is not None,
                                       **options)
        for m in self.parallel.chunks:
            m.attention = attention
            m.deterministic_attention = deterministic_attention
        self.device = self.parallel.device
        self.data_rank = self.val_rank = self.mesh.dp_index
        self.data_world = self.val_world = dp
        self._summary = {"dp": dp, "pp": pp, "schedule": options.get("schedule"), "zero": options.get("zero"),
                         "micro_batches": self.parallel.micro_batches, "stage_layers": self.parallel.stage_layers,
                         "compression": options.get("compression"), "local_sgd": options.get("local_sgd")}
        self.trace_path = trace_path

    @property
    def _optimizers(self) -> list[Any]:
        return [o for o in (self.parallel.sharded, self.parallel.optimizer) if o is not None]

    def train_step(self, batch: Batch, lr: float, guard: Any) -> float:
        loss = self.parallel.train_step(*batch, lr=lr, accept=guard.accept)
        self.last_grad_norm = self.parallel.last_grad_norm
        self.last_step_skipped = self.parallel.last_step_skipped
        return loss

    def evaluate(self, batches: Iterable[Batch]) -> float:
        return self.parallel.evaluate(batches)

    def comm_bytes(self) -> int:
        return self.parallel.comm_bytes_last_step

    def summary(self) -> dict[str, Any]:
        return dict(self._summary)

    def state_dict(self) -> CheckpointState:
        optim: dict[str, Any] = {}
        for o in self._optimizers:   # a collective under ZeRO (the shards are gathered)
            optim.update(o.state_dict())
        if self.mesh.dp_index != 0:
            return CheckpointState(None, None, self._optimizers[0].step_count)
        return CheckpointState(self.parallel.state_dict(), optim, self._optimizers[0].step_count)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        merged = state["model"]
        # Each chunk (a pipeline stage) keeps its share of the merged tensors; names that
        # belong to no parameter of this model configuration stay in, so load_state_dict
        # reports them.
        full = {n for n, _, _ in param_specs(self.model_config)}
        for m in self.parallel.chunks:
            mine = {n for n, _ in m.parameters()}
            m.load_state_dict({k: v for k, v in merged.items() if k in mine or k not in full})
        for o in self._optimizers:   # after the weights: ZeRO refreshes its masters from them
            o.load_state_dict(state["optim"])
        step_count = self._optimizers[0].step_count
        if step_count != int(state["optimizer_step"]):
            raise CheckpointError(f"optimizer step {step_count} disagrees with the trainer state's "
                             f"{state['optimizer_step']}")
        self.parallel.step_count = int(state["step"])   # steps taken, skipped ones too (it seeds QSGD's draws)

    def full_model(self) -> Any:
        state = self.parallel.gather_full_state()
        if state is None:
            return None
        model = build_model(self.model_config, device=self.device, dtype=self.dtype, seed=self.seed,
                            attention=self.attention, deterministic_attention=self.deterministic_attention)
        model.load_state_dict(state)
        return model

    def finish(self) -> dict[str, Any]:
        """With a trace: each rank writes its timeline, rank 0 merges them into trace_path
        and reports the measured bubble fraction per rank."""
        from ...parallel import merge_traces, rank_path

        if self.parallel.trace is None or self.trace_path is None:
            return {}
        self.parallel.trace.write(rank_path(self.trace_path, self.pg.rank))
        self.pg.barrier()
        if self.pg.rank != 0:
            return {}
        return {"bubble_fraction": merge_traces([rank_path(self.trace_path, r) for r in range(self.pg.size)],
                                                self.trace_path)}
