"""The NCCL backend (dist.init(backend="nccl"), csrc/comm/nccl_group.cpp) on CUDA tensors, in
real processes (one GPU each) started by our launcher: every op and dtype at sizes 0, 1, 7,
odd and 64 MiB (worker.py: scenario_nccl / check_cuda_collectives, the same checks as our
CUDA IPC collectives), send/recv, NCCL's socket path between machines stood in for by
NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1, and a SIGKILLed peer turning into an error in the
others within the group timeout. NVLink multicast stays off (NCCL_NVLS_ENABLE=0, see the
device notes). The world of one runs on a single GPU; the rest need 2 or 4 GPUs, one per
rank: NCCL refuses ranks that share a GPU (test_nccl_refuses_ranks_sharing_a_gpu shows the
refusal on one GPU), so unlike the IPC tests they cannot share one under MPS.

    PYTHONPATH=python python -m pytest -q -m gpu tests/distributed/test_nccl.py
"""
from __future__ import annotations

import signal
import time

import pytest

from conftest import launch, spawn
from test_cuda_ipc import ENV, _passed, gpus

pytestmark = [pytest.mark.gpu, pytest.mark.multiproc]


def need(n: int) -> None:
    if gpus() < n:
        pytest.skip(f"NCCL needs one GPU per rank (it refuses ranks sharing a GPU, even under MPS): "
                    f"{n} ranks need {n} GPUs, {gpus()} visible")


@pytest.mark.parametrize("n", [1, 2, 4])
def test_nccl_collectives(n):
    need(n)
    _passed(launch(n, "nccl", timeout=900, env=dict(ENV)), n, "nccl")


@pytest.mark.parametrize("n", [2, 4])
def test_nccl_without_p2p_or_shm(n):
    """The transport NCCL uses between machines (sockets), on one host."""
    need(n)
    env = dict(ENV, NCCL_P2P_DISABLE="1", NCCL_SHM_DISABLE="1")
    _passed(launch(n, "nccl", timeout=900, env=env), n, "nccl")


def test_nccl_killed_peer_makes_others_raise(reap):
    need(2)
    timeout = 20.0
    procs = spawn(2, "ipc_peer_dies", "nccl", str(timeout), rank_env={r: ENV for r in range(2)})
    reap.extend(procs)
    t0 = time.monotonic()
    outs = [p.communicate(timeout=timeout + 90)[0] for p in procs]
    assert procs[-1].returncode == -signal.SIGKILL, outs[-1]
    assert procs[0].returncode == 0, outs[0]
    line = next((ln for ln in outs[0].splitlines() if ln.startswith("RAISED")), "")
    assert "all_reduce [nccl]" in line, outs[0]
    assert float(line.split("after ")[1].split("s:")[0]) < timeout + 5, line
    assert "BROKEN-OK" in outs[0], outs[0]
    assert time.monotonic() - t0 < timeout + 60


def test_nccl_refuses_ranks_sharing_a_gpu(reap):
    """Two ranks on one GPU: backend='nccl' raises at init in both, naming the shared GPU
    and the backends that serve ranks sharing one."""
    need(1)
    env = dict(ENV, CUDA_VISIBLE_DEVICES="0")
    procs = spawn(2, "nccl_shared_gpu", rank_env={r: env for r in range(2)})
    reap.extend(procs)
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 0 and "REFUSED" in out and "use the same GPU" in out and "backend='ring'" in out, out
