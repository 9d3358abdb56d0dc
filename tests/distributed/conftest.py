"""Helpers for the multi-process tests: start ranks of worker.py through our launcher, or
one by one with subprocess when a test needs to watch (or kill) ranks itself."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

import ringloom

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(ringloom.__file__)))
_RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "RINGLOOM_JOB_TOKEN", "SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")


def child_env(**extra: str) -> dict[str, str]:
    """This environment minus any rank variables, with the ringloom under test importable."""
    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PKG_PARENT, env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def launch(n: int, *args: str, launcher_args: tuple[str, ...] = (), timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m ringloom.launch -n N worker.py args...`; output captured as text."""
    cmd = [sys.executable, "-m", "ringloom.launch", "-n", str(n), *launcher_args, WORKER, *args]
    return subprocess.run(cmd, env=child_env(**(env or {})), capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(n: int, *args: str, token: str = "test-token", rank_env: dict[int, dict[str, str]] | None = None,
          port: int | None = None) -> list[subprocess.Popen]:
    """Starts n ranks of worker.py directly (no launcher, so nobody ends the group for us)."""
    port = str(port or free_port())
    procs = []
    for r in range(n):
        env = child_env(RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                        MASTER_PORT=port, RINGLOOM_JOB_TOKEN=token)
        env.update((rank_env or {}).get(r, {}))
        procs.append(subprocess.Popen([sys.executable, "-u", WORKER, *args], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


@pytest.fixture
def reap():
    """Kills whatever processes a test registered, whatever the outcome."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
