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
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder the workers of one run share
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
