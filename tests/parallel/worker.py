"""One rank of the equivalence tests: `python worker.py OUT_DIR CONFIGS_JSON`.

For each config (a dict: name, dp, pp, schedule, micro_batches, zero, stage_layers, arch,
n_layer, steps, chunks, bucket_mb, trace, compression, local_sgd,
local_sgd_moments, lr, data = "random" | "learnable") it trains with ParallelEngine on its rows of the
same global batches the reference uses, and writes OUT_DIR/<name>.rank<r>.npz with the
loss of every step, the payload bytes of the dp collectives of every step and this rank's
final parameters.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ringloom.distributed as dist  # noqa: E402
from common import OPT, VAL_STEPS, global_batch, learnable_batch, model_config  # noqa: E402
from ringloom.data import local_rows  # noqa: E402
from ringloom.parallel import DeviceMesh, ParallelEngine, rank_path  # noqa: E402


def main() -> None:
    out, configs = sys.argv[1], json.loads(sys.argv[2])
    pg = dist.init(backend="auto", timeout=60)
    for cfg in configs:
        mesh = DeviceMesh(cfg["dp"], cfg["pp"], pg)
        engine = ParallelEngine(model_config(cfg.get("arch", "gpt2"), cfg.get("n_layer", 4)), mesh, seed=3,
                                schedule=cfg.get("schedule", "1f1b"), micro_batches=cfg.get("micro_batches", 1),
                                chunks=cfg.get("chunks"), stage_layers=cfg.get("stage_layers"),
                                zero=cfg.get("zero", False), bucket_mb=cfg.get("bucket_mb", 0.01),
                                trace=bool(cfg.get("trace")), compression=cfg.get("compression"),
                                local_sgd=cfg.get("local_sgd", 0), local_sgd_moments=cfg.get("local_sgd_moments", False),
                                **{**OPT, "lr": cfg.get("lr", OPT["lr"])})
        batch = learnable_batch if cfg.get("data") == "learnable" else global_batch
        losses, comm = [], []
        for k in range(cfg.get("steps", 3)):
            ids, tgt = batch(k)
            rows = local_rows(ids.shape[0], mesh.dp_index, mesh.dp)
            losses.append(engine.train_step(ids[rows], tgt[rows]))
            comm.append(engine.comm_bytes_last_step)
        val = engine.evaluate([tuple(a[local_rows(a.shape[0], mesh.dp_index, mesh.dp)] for a in global_batch(j))
                               for j in VAL_STEPS])
        state = {f"param/{k}": v for k, v in engine.state_dict().items()}
        np.savez(os.path.join(out, f"{cfg['name']}.rank{pg.rank}.npz"), losses=np.array(losses), val=np.array(val),
                 comm_bytes=np.array(comm, np.int64),
                 grad_norm=np.array(engine.last_grad_norm), **state)
        if cfg.get("trace"):
            engine.trace.write(rank_path(os.path.join(out, f"{cfg['name']}.trace.json"), pg.rank))
    pg.barrier()
    print(f"PASS worker rank {pg.rank}")


if __name__ == "__main__":
    main()
