"""Helpers for the multi-process tests: start ranks of worker.py through our launcher, or
one by one with subprocess when a test needs to watch (or kill) ranks itself."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from ringloom.testing import child_env

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")


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
