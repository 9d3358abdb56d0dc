"""A dead peer, a stuck peer and a stranger: the others raise within the timeout with an
error naming the op and the peer, never hang."""
from __future__ import annotations

import signal
import time

import pytest

import socket

from conftest import free_port, spawn
from ringloom import _C

pytestmark = pytest.mark.multiproc


def _wait_all(procs, limit):
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=limit)
        outs.append(out)
    return outs


@pytest.mark.parametrize("n,backend", [(3, "ring"), (4, "tree")])
def test_killed_peer_makes_others_raise(reap, n, backend):
    timeout = 15.0
    procs = spawn(n, "peer_dies", str(timeout), backend)
    reap.extend(procs)
    t0 = time.monotonic()
    outs = _wait_all(procs, 60)
    elapsed = time.monotonic() - t0
    assert procs[-1].returncode == -signal.SIGKILL, outs[-1]
    for r in range(n - 1):
        assert procs[r].returncode == 0, f"rank {r}:\n{outs[r]}"
        line = next((ln for ln in outs[r].splitlines() if ln.startswith("RAISED")), "")
        assert "all_reduce" in line and "peer rank" in line and ("closed" in line or "timed out" in line), f"rank {r}: {outs[r]}"
        assert float(line.split("after ")[1].split("s:")[0]) < timeout, line
        assert "BROKEN-OK" in outs[r]
    # EOF from the dead process arrives at once: nobody waited out the timeout.
    assert elapsed < timeout + 10


def test_stuck_peer_times_out(reap):
    timeout = 3.0
    procs = spawn(3, "peer_stuck", str(timeout))
    reap.extend(procs)
    try:
        outs = _wait_all(procs[:2], 40)
    finally:
        procs[2].kill()
    for r in range(2):
        assert procs[r].returncode == 0, outs[r]
        line = next((ln for ln in outs[r].splitlines() if ln.startswith("RAISED")), "")
        assert "all_reduce" in line and "rank" in line, outs[r]
        assert float(line.split("after ")[1].split("s:")[0]) < timeout + 2, line
    # Somebody must have actually timed out (the stopped rank itself never closes anything).
    assert any("RAISED TimeoutError" in o and "peer rank 2" in o for o in outs), outs
    # The flight recorder: the call in flight and the ones completed before it, newest first.
    for o in outs:
        assert "in flight: #3 all_reduce [ring] (all_reduce sum float32 x 1000)" in o, o
        assert "last completed: #2 all_reduce [" in o and "int64 x 3" in o and "#1 barrier" in o, o


def test_silent_strangers_do_not_delay_setup(reap):
    """Connections that never say anything, made to rank 0's mesh port before rank 1 joins,
    are handshaken side by side with the member and cannot stall or break the set-up."""
    port = free_port()
    procs = spawn(2, "join_late", "30", "3", port=port)
    reap.extend(procs)
    store = _C.comm.Store("127.0.0.1", port, "test-token", 9, 20.0)
    addr = store.get("pg/world/addr/0", 20.0).decode()
    host, mport = addr.rsplit(":", 1)
    assert host == "127.0.0.1", addr  # MASTER_ADDR is loopback: so is the mesh
    strangers = [socket.create_connection((host, int(mport))) for _ in range(12)]
    try:
        outs = _wait_all(procs, 60)
    finally:
        for s in strangers:
            s.close()
    for r in range(2):
        assert procs[r].returncode == 0 and f"JOINED rank {r}" in outs[r], outs[r]
        assert float(outs[r].split(" in ")[1].split("s")[0]) < 15, outs[r]


def test_mesh_address_option(reap):
    procs = spawn(2, "join", "10", rank_env={0: {"RINGLOOM_MESH_ADDR": "not a host name"}})
    reap.extend(procs)
    outs = _wait_all(procs, 40)
    assert "cannot resolve the address to listen on: 'not a host name'" in outs[0], outs[0]


def test_wrong_job_token_is_refused(reap):
    procs = spawn(2, "join", "2", rank_env={1: {"RINGLOOM_JOB_TOKEN": "another-job"}})
    reap.extend(procs)
    outs = _wait_all(procs, 40)
    assert "JOIN-FAILED RuntimeError" in outs[1] and "wrong job token" in outs[1], outs[1]
    # Rank 0 waits for a rank 1 that never joins, then times out naming what it waited for.
    assert "JOIN-FAILED TimeoutError" in outs[0] and "rank 0" in outs[0], outs[0]


def test_right_token_joins(reap):
    procs = spawn(2, "join", "20")
    reap.extend(procs)
    outs = _wait_all(procs, 40)
    for r in range(2):
        assert f"JOINED rank {r}" in outs[r], outs[r]
