"""The rendezvous store: semantics, timeouts that name op/key/rank, the job token, and a
fuzz of malformed frames from raw sockets (the server answers ERROR, drops that
connection and keeps serving everyone else)."""
from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from ringloom import _C

comm = _C.comm
OK, ERROR = 0, 1
HELLO, SET, GET, WAIT, ADD, CHECK, DELETE = range(7)


@pytest.fixture
def server():
    s = comm.StoreServer("127.0.0.1", 0, "tok")
    yield s
    del s


def client(server, rank=3, timeout=5.0, token="tok"):
    return comm.Store("127.0.0.1", server.port, token, rank, timeout)


def test_set_get_add_check_delete(server):
    c = client(server)
    c.set("a", b"\x00\xffbytes")
    assert c.get("a") == b"\x00\xffbytes"
    c.set("a", b"")
    assert c.get("a") == b""
    assert c.add("n", 5) == 5 and c.add("n", -7) == -2
    assert c.check(["a", "n"]) and not c.check(["a", "missing"])
    assert c.delete("a") and not c.delete("a") and not c.check("a")
    c.set("k", b"xyz")
    other = client(server)
    with pytest.raises(RuntimeError, match="non-counter"):
        other.add("k", 1)
    with pytest.raises(RuntimeError, match="unusable after an earlier error"):
        other.get("k")  # the server closed that connection after its error answer
    assert c.get("k") == b"xyz"


def test_get_waits_for_a_later_set(server):
    a, b = client(server, rank=0), client(server, rank=1)
    threading.Timer(0.3, lambda: b.set("late", b"v")).start()
    t0 = time.monotonic()
    assert a.get("late", timeout=5) == b"v"
    assert 0.2 < time.monotonic() - t0 < 4
    a.wait(["late"], timeout=1)


def test_timeouts_name_op_key_and_rank(server):
    c = client(server, rank=7)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"get key 'nobody' on rank 7"):
        c.get("nobody", timeout=0.5)
    assert time.monotonic() - t0 < 3
    with pytest.raises(TimeoutError, match=r"wait for key 'x2' on rank 7"):
        c.wait(["x2"], timeout=0.3)
    assert c.add("still-usable", 1) == 1  # a server-side timeout leaves the connection in step


def test_concurrent_adds_are_atomic(server):
    clients = [client(server, rank=r) for r in range(4)]
    threads = [threading.Thread(target=lambda c=c: [c.add("ctr", 3) for _ in range(50)]) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clients[0].add("ctr", 0) == 4 * 50 * 3


def test_wrong_token_refused(server):
    with pytest.raises(RuntimeError, match="wrong job token"):
        client(server, token="not-tok")
    client(server).set("fine", b"1")


def test_limits_checked_by_the_client(server):
    c = client(server)
    with pytest.raises(ValueError, match="exceeds the limit"):
        c.set("k" * (comm.MAX_KEY + 1), b"")
    with pytest.raises(ValueError, match="frame limit"):
        c.set("big", b"\0" * comm.MAX_FRAME)


def test_connect_timeout_names_rank():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="rank 2.*could not connect"):
        comm.Store("127.0.0.1", port, "tok", 2, 0.5)
    assert time.monotonic() - t0 < 3


# ---- fuzz ----

def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


def request(op: int, key: bytes, args: bytes = b"") -> bytes:
    return frame(bytes([op]) + struct.pack("<I", len(key)) + key + args)


def exchange(port: int, data: bytes, read: bool = True) -> tuple[int, bytes] | None:
    """Sends raw bytes; returns the (status, data) of the last response, or None if the
    server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # the server sees EOF after our bytes, never waits for more
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        if not read:
            return None
        last = None
        buf = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 4 and len(buf) >= 4 + struct.unpack("<I", buf[:4])[0]:
                    n = struct.unpack("<I", buf[:4])[0]
                    last = (buf[4], buf[5:4 + n])
                    buf = buf[4 + n:]
                if last and last[0] == ERROR:
                    break
        except (socket.timeout, ConnectionResetError):
            pass
        return last


HELLO_OK = request(HELLO, b"tok")


@pytest.mark.parametrize("data,needle", [
    (struct.pack("<I", 0), b"frame length 0"),
    (struct.pack("<I", 1 << 31), b"frame length"),
    (struct.pack("<I", _C.comm.MAX_FRAME + 1) + b"x" * 64, b"frame length"),
    (request(SET, b"k", b"v"), b"handshake"),
    (request(HELLO, b"other"), b"wrong job token"),
    (frame(b"\x00\x01"), b"truncated"),
    (HELLO_OK + frame(bytes([SET]) + struct.pack("<I", 10**9)), b"exceeds the limit"),
    (HELLO_OK + frame(bytes([SET]) + struct.pack("<I", 10) + b"abc"), b"runs past"),
    (HELLO_OK + request(99, b"k"), b"unknown op 99"),
    (HELLO_OK + request(GET, b"k", b"\x01"), b"u32 timeout"),
    (HELLO_OK + request(ADD, b"k", b"\x01\x02"), b"i64 delta"),
])
def test_malformed_frames_get_an_error_and_the_server_survives(server, data, needle):
    status, msg = exchange(server.port, data)
    assert status == ERROR and needle in msg, (status, msg)
    c = client(server)
    c.set("after", b"1")
    assert c.get("after") == b"1"


def test_random_garbage_and_half_frames(server):
    rng = np.random.default_rng(7)
    good = client(server)
    for i in range(150):
        kind = i % 3
        body = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        if kind == 0:
            data = body  # pure noise, length header included
        elif kind == 1:
            data = HELLO_OK + frame(body)  # authenticated noise
        else:
            data = HELLO_OK + struct.pack("<I", 5000) + body[:100]  # a frame cut short, then close
        exchange(server.port, data, read=(kind != 2))
        if i % 25 == 0:
            good.set(f"k{i}", body)
            assert good.get(f"k{i}") == body
    # Idle and half-open connections do not stop service either.
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        assert good.add("alive", 1) == 1
        client(server).set("x", b"y")
    finally:
        for s in idle:
            s.close()
