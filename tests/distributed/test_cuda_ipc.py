"""Our ring, tree and one-shot collectives over CUDA IPC between the ranks of one host, in
real processes started by our launcher; the checks live in worker.py (scenario_ipc*).
With as many GPUs as ranks each rank has its own; with fewer, the ranks share the GPUs as
clients of the CUDA Multi-Process Service, started by the `mps` fixture (tests/conftest.py),
and the IPC buffers are opened by processes on the same device. Skips with the reason where
there is no GPU or MPS does not start. Timing on a shared GPU means nothing: these check
results only.

    PYTHONPATH=python python -m pytest -q -m gpu tests/distributed/test_cuda_ipc.py
"""
from __future__ import annotations

import signal
import time

import pytest

import ringloom as rl
from conftest import launch, spawn
from gpu_ranks import ranks_on_gpus

pytestmark = [pytest.mark.gpu, pytest.mark.multiproc]

# NVLink multicast stays off (see the device notes); our kernels never use it either.
ENV = {"NCCL_NVLS_ENABLE": "0"}


def gpus() -> int:
    return rl.cuda_device_count() if rl._C.has_cuda_build and rl.cuda_available() else 0


def need(n: int) -> None:
    if gpus() < n:
        pytest.skip(f"needs {n} GPUs on one host, {gpus()} visible")


def ipc_env(n: int, request, **extra: str) -> dict[str, str]:
    """ENV for n IPC ranks: on their own GPUs, or sharing them under MPS."""
    return dict(ENV, **ranks_on_gpus(n, request), **extra)


def _passed(res, n, scenario):
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    for r in range(n):
        assert f"[rank {r}] PASS {scenario} rank {r}" in out, out[-4000:]
    return out


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("algo", ["ring", "tree", "oneshot"])
def test_ipc_collectives(request, n, algo):
    """Every op and dtype at 0, 1, 7, odd and 64 MiB; integer sums exact, every rank the
    same bits. One-shot gets buffers large enough for 64 MiB in one piece."""
    env = ipc_env(n, request)
    if algo == "oneshot":
        env["RINGLOOM_IPC_BUFFER_BYTES"] = str(4 * (65 << 20))
    res = launch(n, "ipc", algo, timeout=900, env=env)
    _passed(res, n, "ipc")


@pytest.mark.parametrize("algo", ["ring", "oneshot"])
def test_ipc_small_buffers_many_rounds(request, algo):
    """1 MiB buffers: every large op goes round after round through both slots."""
    env = ipc_env(2, request, RINGLOOM_IPC_BUFFER_BYTES=str(1 << 20), RINGLOOM_IPC_CHUNK_BYTES="4096")
    res = launch(2, "ipc", algo, timeout=900, env=env)
    _passed(res, 2, "ipc")


@pytest.mark.parametrize("n,algo", [(2, "ring"), (4, "ring"), (4, "oneshot"), (4, "tree")])
def test_ipc_killed_peer_makes_others_raise(request, reap, n, algo):
    env = ipc_env(n, request)
    timeout = 15.0
    procs = spawn(n, "ipc_peer_dies", algo, str(timeout), rank_env={r: env for r in range(n)})
    reap.extend(procs)
    t0 = time.monotonic()
    outs = [p.communicate(timeout=timeout + 90)[0] for p in procs]
    elapsed = time.monotonic() - t0
    assert procs[-1].returncode == -signal.SIGKILL, outs[-1]
    for r in range(n - 1):
        assert procs[r].returncode == 0, f"rank {r}:\n{outs[r]}"
        line = next((ln for ln in outs[r].splitlines() if ln.startswith("RAISED")), "")
        assert "all_reduce [ipc" in line and "peer rank" in line, f"rank {r}: {outs[r]}"
        if algo == "oneshot":  # every rank waits on every peer: the dead one is the one named
            assert f"peer rank {n - 1}" in line, line
        assert float(line.split("after ")[1].split("s:")[0]) < timeout + 5, line
        assert "BROKEN-OK" in outs[r], outs[r]
    assert elapsed < timeout + 60


def test_ipc_disabled_falls_back_to_tcp(request, reap):
    env = ipc_env(2, request, RINGLOOM_IPC="0")
    procs = spawn(2, "ipc_fallback", "RINGLOOM_IPC=0", rank_env={r: env for r in range(2)})
    reap.extend(procs)
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 0 and "TRANSPORT tcp (disabled by RINGLOOM_IPC=0)" in out, out
        assert "CUDA tensors go through host memory over TCP" in out, out


def test_ipc_other_host_falls_back_to_tcp(reap):
    """Ranks reporting different hosts never try IPC; runs even on one GPU (both ranks on it)."""
    need(1)
    env = {0: dict(ENV, RINGLOOM_HOST_ID="host-a"), 1: dict(ENV, RINGLOOM_HOST_ID="host-b")}
    procs = spawn(2, "ipc_fallback", "runs on host 'host-b'", rank_env=env)
    reap.extend(procs)
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 0 and "one host" in out, out


def test_ranks_sharing_a_gpu_without_mps_fall_back_to_tcp(reap, tmp_path):
    """Two ranks on one GPU that are not MPS clients (an MPS pipe folder with no daemon):
    IPC refuses them, naming MPS, and their CUDA tensors still reduce through host memory."""
    need(1)
    env = dict(ENV, CUDA_VISIBLE_DEVICES="0", CUDA_MPS_PIPE_DIRECTORY=str(tmp_path))
    procs = spawn(2, "ipc_fallback", "Multi-Process Service", rank_env={r: env for r in range(2)})
    reap.extend(procs)
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 0 and "use the same GPU" in out and "nvidia-cuda-mps-control -d" in out, out


def test_world_of_one_keeps_cuda_tensors_local():
    """A group of one rank needs no transport: the op is an identity and says so."""
    need(1)
    import numpy as np
    import ringloom.distributed as dist
    pg = dist.init(backend="ring", timeout=10)
    try:
        t = rl.tensor(np.arange(7, dtype=np.float32), device="cuda:0")
        pg.all_reduce(t)
        assert np.array_equal(np.asarray(t), np.arange(7, dtype=np.float32))
        assert pg.cuda_transport.startswith("tcp (a group of one rank"), pg.cuda_transport
    finally:
        dist.destroy()
