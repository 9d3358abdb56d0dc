"""Shared pytest setup: tests/ is importable so tests share the reference math and
tolerances. The gpu and multiproc markers, their skips and the fixtures come from
ringloom's own pytest plugin (ringloom.testing.plugin)."""
from __future__ import annotations

import os
import sys

import pytest

from ringloom.testing.plugin import gpu_skip_reason

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng(rl_rng):
    """A generator seeded from the test's name (the plugin's rl_rng)."""
    return rl_rng


def _run_root(tmp_path_factory):
    """The folder every pytest process of this run shares (xdist workers included)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


# Multi-rank GPU tests that may run at once (across xdist workers). Their ranks' collective
# kernels spin on each other's flags, so every rank's blocks must be resident together; on
# one shared GPU, many such tests at once could fill it with half-started groups that all
# wait until they time out.
SHARED_GPU_TESTS = 4


@pytest.fixture(autouse=True)
def _multirank_gpu_turn(request, tmp_path_factory):
    """Holds one of SHARED_GPU_TESTS turns while a test marked both gpu and multiproc runs
    (non-blocking tries over the turn files, so a turn is never held while waiting)."""
    node = request.node
    if node.get_closest_marker("gpu") is None or node.get_closest_marker("multiproc") is None \
            or gpu_skip_reason() is not None:
        yield
        return
    import fcntl
    import time

    root = _run_root(tmp_path_factory)
    deadline = time.monotonic() + 1800
    while True:
        for i in range(SHARED_GPU_TESTS):
            f = open(root / f"gpu-turn-{i}", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                f.close()
        else:
            if time.monotonic() > deadline:
                pytest.fail(f"no multi-rank GPU turn came free in 1800 s ({SHARED_GPU_TESTS} turns)")
            time.sleep(0.2)
            continue
        break
    try:
        yield
    finally:
        f.close()


@pytest.fixture(scope="session")
def mps(tmp_path_factory):
    """The CUDA Multi-Process Service, for tests whose ranks share a GPU: a control daemon
    of the test run's own (private pipe and log folders, so nothing else on the machine
    becomes its client), started by the first test that needs it and stopped when the last
    pytest process using it ends (pytest-xdist workers share it: one MPS server per GPU).
    Yields the environment that makes a process its client; skips with the reason where the
    daemon is absent or does not start. Ranks started with it run their kernels side by
    side on one GPU (without MPS the GPU time-slices between processes)."""
    import fcntl
    import shutil
    import subprocess
    import time

    if gpu_skip_reason() is not None:
        pytest.skip(f"needs a GPU: {gpu_skip_reason()}")
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        pytest.skip("ranks sharing a GPU need the CUDA Multi-Process Service: nvidia-cuda-mps-control is not on PATH")
    root = _run_root(tmp_path_factory)
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(root / "mps-pipe"), "CUDA_MPS_LOG_DIRECTORY": str(root / "mps-log")}
    full = dict(os.environ, **env)
    pipe = os.path.join(env["CUDA_MPS_PIPE_DIRECTORY"], "control")
    users = root / "mps-users"
    with open(root / "mps-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        count = int(users.read_text()) if users.exists() else 0
        if count == 0:
            for d in env.values():
                os.makedirs(d, exist_ok=True)
            res = subprocess.run([control, "-d"], env=full, capture_output=True, text=True, timeout=30)
            deadline = time.monotonic() + 10
            while res.returncode == 0 and not os.path.exists(pipe) and time.monotonic() < deadline:
                time.sleep(0.05)
            if res.returncode != 0 or not os.path.exists(pipe):
                pytest.skip(f"the CUDA MPS control daemon did not start ({control} -d: rc {res.returncode}, "
                            f"{(res.stdout + res.stderr).strip()[-300:]})")
        users.write_text(str(count + 1))
    try:
        yield env
    finally:
        with open(root / "mps-lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            count = int(users.read_text()) - 1
            users.write_text(str(count))
            if count == 0:
                subprocess.run([control], input="quit\n", env=full, capture_output=True, text=True, timeout=60)
