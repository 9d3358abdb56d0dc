"""One rank of the tensor-parallel tests: `python tp_worker.py OUT_DIR CONFIGS_JSON`.

For each config (name, dp, pp, tp, micro_batches, schedule, steps, model: overrides of
tp_model_config) it trains with ParallelEngine on a dp x pp x tp mesh and writes
OUT_DIR/<name>.rank<r>.npz: the loss of every step, the val loss, the full (gathered)
gradients of the last step and the full final parameters, by name. The bytes this rank
handed to the tp collectives in each step are written too (``tp_bytes``); with
``export_hf`` (pp = 1) each rank exports the trained model in Hugging Face's layout to
OUT_DIR/<name>.hf.rank<r>.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ringloom.distributed as dist  # noqa: E402
from common import OPT, VAL_STEPS, global_batch, tp_model_config  # noqa: E402
from ringloom.data import local_rows  # noqa: E402
from ringloom.parallel import DeviceMesh, ParallelEngine  # noqa: E402
from ringloom.parallel.tensor_parallel import gather_full  # noqa: E402
from ringloom.parallel.tp_traffic import CountingGroup  # noqa: E402


def full_grads(engine, mesh) -> dict:
    """This rank's gradients by full name, tensor-parallel slices gathered."""
    grads = {}
    for m in engine.chunks:
        local = {n: np.array(p.grad.numpy(), np.float32) for n, p in m.parameters()}
        grads.update(gather_full(mesh.tp_group, m.layout, local) if mesh.tp > 1 else local)
    return grads


def main() -> None:
    out, configs = sys.argv[1], json.loads(sys.argv[2])
    pg = dist.init(backend="auto", timeout=60)
    for cfg in configs:
        tp = cfg.get("tp", 1)
        mesh = DeviceMesh(cfg["dp"], cfg["pp"], pg, tp=tp)
        counter = None
        if tp > 1:
            counter = mesh.tp_group = CountingGroup(mesh.tp_group)
        seq = cfg.get("seq", 12)
        engine = ParallelEngine(tp_model_config(**cfg.get("model", {})), mesh, seed=3,
                                schedule=cfg.get("schedule", "1f1b"), micro_batches=cfg.get("micro_batches", 1),
                                bucket_mb=0.01, **OPT)
        losses, tp_bytes = [], []
        for k in range(cfg.get("steps", 2)):
            ids, tgt = global_batch(k, seq=seq)
            rows = local_rows(ids.shape[0], mesh.dp_index, mesh.dp)
            before = counter.sent if counter else 0
            losses.append(engine.train_step(ids[rows], tgt[rows]))
            tp_bytes.append((counter.sent if counter else 0) - before)
            if k == 0:
                grads = full_grads(engine, mesh)
        val = engine.evaluate([tuple(a[local_rows(a.shape[0], mesh.dp_index, mesh.dp)]
                                     for a in global_batch(j, seq=seq)) for j in VAL_STEPS])
        if cfg.get("export_hf"):   # every tp rank calls it (a collective); each writes its own copy
            from ringloom.models.hf import export_hf
            export_hf(engine.chunks[0], os.path.join(out, f"{cfg['name']}.hf.rank{pg.rank}"))
        state = {f"param/{k}": v for k, v in engine.state_dict().items()}
        state.update({f"grad/{k}": v for k, v in grads.items()})
        np.savez(os.path.join(out, f"{cfg['name']}.rank{pg.rank}.npz"), losses=np.array(losses), val=np.array(val),
                 tp_bytes=np.array(tp_bytes, np.int64), **state)
    pg.barrier()
    print(f"PASS worker rank {pg.rank}")


if __name__ == "__main__":
    main()
