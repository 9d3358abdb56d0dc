"""One rank of the parameter-server tests: `python ps_worker.py OUT_DIR CONFIGS_JSON`.

For each config (name, servers, mode, staleness, steps; optional delay: seconds worker 0
sleeps per step, to make the workers drift apart; kill_at: the step at which the first
server SIGKILLs itself, on the first launch attempt only) the last ``servers`` ranks serve
and the others train on their rows of the same global batches the single-process reference
uses. Workers write OUT_DIR/<name>.rank<r>.npz: the loss and the server version of the
parameters pulled at every step, and the final parameters; servers write their statistics.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ringloom.distributed as dist  # noqa: E402
from common import OPT, global_batch, model_config  # noqa: E402
from ringloom.data import local_rows  # noqa: E402
from ringloom.parallel import ParameterServer, PSLayout, PSWorker  # noqa: E402


def main() -> None:
    out, configs = sys.argv[1], json.loads(sys.argv[2])
    pg = dist.init(backend="auto", timeout=float(os.environ.get("PS_TEST_TIMEOUT", "60")))
    first_attempt = os.environ.get("RINGLOOM_RESTART_COUNT", "0") == "0"
    for cfg in configs:
        layout = PSLayout(pg.size, cfg.get("servers", 1))
        mode, s, steps = cfg.get("mode", "sync"), cfg.get("staleness", 0), cfg.get("steps", 3)
        path = os.path.join(out, f"{cfg['name']}.rank{pg.rank}.npz")
        if layout.is_server(pg.rank):
            server = ParameterServer(model_config(), pg, layout, steps, mode=mode, staleness=s, seed=3, **OPT)
            if cfg.get("kill_at") is not None and first_attempt and pg.rank == layout.workers:
                # Die without a word once the workers are under way.
                _serve_until(server, cfg["kill_at"])
                os.kill(os.getpid(), signal.SIGKILL)
            stats = server.serve()
            np.savez(path, updates=np.array(stats["updates"]), max_staleness=np.array(stats["max_staleness"]),
                     max_lead=np.array(stats["max_lead"]))
            continue
        worker = PSWorker(model_config(), pg, layout, mode=mode, staleness=s, seed=3)
        losses, stale, comm = [], [], []
        for k in range(steps):
            if cfg.get("delay") and pg.rank == 0:
                time.sleep(cfg["delay"])
            ids, tgt = global_batch(k)
            rows = local_rows(ids.shape[0], pg.rank, layout.workers)
            losses.append(worker.train_step(ids[rows], tgt[rows]))
            stale.append(worker.last_version)
            comm.append(worker.comm_bytes_last_step)
        state = {f"param/{k}": v for k, v in worker.state_dict().items()}
        np.savez(path, losses=np.array(losses), version=np.array(stale), comm_bytes=np.array(comm), **state)
    pg.barrier()
    print(f"PASS ps rank {pg.rank}", flush=True)


def _serve_until(server: ParameterServer, steps: int) -> None:
    """A sync server that stops answering after ``steps`` updates."""
    server.steps = steps
    server.serve()


if __name__ == "__main__":
    main()
