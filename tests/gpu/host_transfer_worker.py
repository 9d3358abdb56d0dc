"""One rank of tests/gpu/test_host_transfers_gpu.py: a data-parallel GPU step with the given
way of combining gradients, counting the bytes Tensor copies move to the host during it.

    python -m ringloom launch -n 2 tests/gpu/host_transfer_worker.py bf16|none|localsgd|topk:0.1|powersgd:2
Prints "TRANSFERS <to_host_bytes> <loss bytes> <smallest gradient bytes>" on
rank 0; the loss bytes are the step's per-position fp32 losses, which the engine sums on the
host in float64.
"""
from __future__ import annotations

import sys

import numpy as np

import ringloom.distributed as dist
from ringloom import _C
from ringloom.models import get_preset
from ringloom.parallel import DeviceMesh, ParallelEngine

VOCAB = 64


def main(method: str) -> None:
    pg = dist.init(backend="auto", timeout=120)
    device = f"cuda:{pg.info.local_rank % _C.cuda_device_count()}"
    kw = {"local_sgd": 1} if method == "localsgd" else {"compression": None if method == "none" else method}
    engine = ParallelEngine(get_preset("tiny", vocab_size=VOCAB), DeviceMesh(pg.size, 1, pg), device=device, seed=1,
                            lr=1e-3, **kw)
    rng = np.random.default_rng([5, pg.rank])

    rows_shape = (4, 33)

    def step() -> None:
        rows = rng.integers(0, VOCAB, rows_shape, dtype=np.int32)
        engine.train_step(rows[:, :-1].copy(), rows[:, 1:].copy())

    step()
    step()  # warm: buffers, residuals and communicators exist
    _C.reset_host_transfer_stats()
    step()
    moved = _C.host_transfer_stats()["to_host_bytes"]
    smallest = min(4 * t.numel() for t in engine.optimizer._masters)
    if pg.rank == 0:
        losses = 4 * rows_shape[0] * (rows_shape[1] - 1)
        print(f"TRANSFERS {moved} {losses} {smallest}", flush=True)
    dist.destroy()


if __name__ == "__main__":
    main(sys.argv[1])
