"""Every op, every dtype, sizes 0 / 1 / 7 / 1000003 (and one of 16 MiB), through ring, tree
and auto, in real processes started by our launcher; checks live in worker.py."""
from __future__ import annotations

import numpy as np
import pytest

import ringloom as rl
import ringloom.distributed as dist
from conftest import launch

pytestmark = pytest.mark.multiproc


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_collectives(n):
    res = launch(n, "collectives", timeout=180)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    for r in range(n):
        assert f"[rank {r}] PASS collectives rank {r}" in out, out[-3000:]


def test_single_process_world():
    """Without launcher variables init() makes a world of one; ops are identities."""
    pg = dist.init(backend="ring", timeout=10)
    try:
        assert (pg.rank, pg.size) == (0, 1)
        a = np.arange(11, dtype=np.int32)
        pg.all_reduce(a)
        assert np.array_equal(a, np.arange(11))
        out = rl.tensor(np.full(11, np.nan, np.float32))
        pg.all_gather(out, rl.tensor(np.arange(11, dtype=np.float32)))
        assert np.array_equal(np.asarray(out), np.arange(11))
        pg.store.set("k", b"v")
        assert pg.store.get("k") == b"v"
        with pytest.raises(RuntimeError, match="already called"):
            dist.init()
    finally:
        dist.destroy()
    assert not dist.is_initialized()


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'mpi'"):
        dist.init(backend="mpi")
