"""The store as a stranger sees it: nothing is buffered beyond one small frame before the
job token is checked, a connection that never authenticates is closed, file-descriptor
exhaustion does not spin the server, and random bytes (before or after the handshake)
never stop it serving the job."""
from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

from hypothesis import HealthCheck, given, settings, strategies as st

import pytest

from ringloom import _C
from conftest import child_env

comm = _C.comm
OK, ERROR = 0, 1
HELLO, SET = 0, 1


def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


def hello(token: bytes) -> bytes:
    return frame(bytes([HELLO]) + struct.pack("<I", len(token)) + token)


def read_response(s: socket.socket, limit: float = 5.0) -> tuple[int, bytes] | None:
    """The first response frame, or None when the server closes first."""
    s.settimeout(limit)
    buf = b""
    try:
        while len(buf) < 4 or len(buf) < 4 + struct.unpack("<I", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf += chunk
    except ConnectionResetError:
        return None
    n = struct.unpack("<I", buf[:4])[0]
    return buf[4], buf[5:4 + n]


@pytest.fixture
def server():
    s = comm.StoreServer("127.0.0.1", 0, "tok")
    yield s
    del s


def still_serves(server) -> None:
    c = comm.Store("127.0.0.1", server.port, "tok", 0, 5.0)
    c.set("alive", b"1")
    assert c.get("alive") == b"1"


def test_unauthenticated_frame_is_judged_by_its_header(server):
    # A 1 MiB frame announced before the handshake is refused on its 4-byte header: the
    # server does not wait for (and buffer) the megabyte.
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(struct.pack("<I", 1 << 20))
        status, msg = read_response(s)
    assert status == ERROR and b"before the HELLO handshake" in msg, msg
    assert str(comm.MAX_HELLO_FRAME).encode() in msg
    still_serves(server)


def test_largest_token_still_fits_the_hello_frame():
    token = "t" * comm.MAX_KEY
    srv = comm.StoreServer("127.0.0.1", 0, token)
    c = comm.Store("127.0.0.1", srv.port, token, 0, 5.0)
    c.set("k", b"v")
    assert c.get("k") == b"v"


def test_silent_connection_is_closed_after_the_auth_timeout(monkeypatch):
    monkeypatch.setenv("RINGLOOM_STORE_AUTH_TIMEOUT", "0.5")
    srv = comm.StoreServer("127.0.0.1", 0, "tok")
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        assert read_response(s, limit=10) is None  # closed, no answer
    assert time.monotonic() - t0 < 5
    # A client that authenticates at once is unaffected and may then stay idle.
    c = comm.Store("127.0.0.1", srv.port, "tok", 0, 5.0)
    time.sleep(1.0)
    c.set("k", b"v")
    assert c.get("k") == b"v"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_bad_auth_timeout_is_refused(monkeypatch, value):
    monkeypatch.setenv("RINGLOOM_STORE_AUTH_TIMEOUT", value)
    with pytest.raises(ValueError, match="RINGLOOM_STORE_AUTH_TIMEOUT"):
        comm.StoreServer("127.0.0.1", 0, "tok")


_EXHAUSTED = r"""
import os, resource, sys, time
from ringloom import _C
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
srv = _C.comm.StoreServer("127.0.0.1", 0, "tok")
print(srv.port, flush=True)
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
sys.stdin.readline()          # the parent has queued connections the server cannot accept
t0 = time.process_time()
time.sleep(1.5)
print("CPU", time.process_time() - t0, flush=True)
for fd in held:
    os.close(fd)
sys.stdin.readline()          # the parent has checked the server recovered
"""


def test_fd_exhaustion_does_not_spin_the_server():
    p = subprocess.Popen([sys.executable, "-c", _EXHAUSTED], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=child_env())
    try:
        port = int(p.stdout.readline())
        pending = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.2)
        p.stdin.write("go\n")
        p.stdin.flush()
        line = p.stdout.readline()
        assert line.startswith("CPU"), line
        assert float(line.split()[1]) < 0.5, f"server thread busy while accept() fails: {line}"
        # Descriptors free again: the server accepts and serves after its back-off.
        c = comm.Store("127.0.0.1", port, "tok", 0, 10.0)
        c.set("k", b"v")
        assert c.get("k") == b"v"
        for s in pending:
            s.close()
        p.stdin.write("done\n")
        p.stdin.flush()
        assert p.wait(timeout=20) == 0
    finally:
        p.kill()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=12000), authed=st.booleans())
def test_random_bytes_never_stop_the_store(server, data, authed):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        try:
            s.sendall((hello(b"tok") if authed else b"") + data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse and close before all bytes are in
        read_response(s, limit=5)
    still_serves(server)
