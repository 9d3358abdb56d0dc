"""TensorBoard event files for scalars, written without TensorFlow or protobuf.

An event file is a sequence of TFRecords (tensorflow/core/lib/io/record_writer.cc):
    uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
with masked_crc(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32), crc32c the
Castagnoli CRC (reflected polynomial 0x82F63B78). Each record's data is an ``Event``
protobuf (tensorflow/core/util/event.proto), of which we write:
    Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
              Summary summary = 5; SessionLog session_log = 6; }
    Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
    SessionLog { SessionStatus status = 1; }   (START = 1)
The first event carries file_version "brain.Event:2". After a resume, a SessionLog START at
the resumed step makes TensorBoard drop the events of later steps that an interrupted run
had already written (its "purge on restart" rule), so curves do not double back.

Protobuf wire format: each field is a varint key (field_number << 3 | wire_type) then the
value; wire types 0 = varint, 1 = 64-bit, 2 = length-delimited, 5 = 32-bit.
"""
from __future__ import annotations

import math
import os
import socket
import struct
import time
from typing import Iterator, Mapping

# ---------------------------------------------------------------------------------- crc32c
_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------- protobuf
def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 negatives: two's complement, 10 bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, scalars: Mapping[str, float] | None = None,
                 file_version: str | None = None, session_start: bool = False) -> bytes:
    ev = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(int(step))
    if file_version is not None:
        ev += _len_field(3, file_version.encode())
    if scalars:
        summary = b"".join(_len_field(1, _len_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value))
                           for tag, value in scalars.items())
        ev += _len_field(5, summary)
    if session_start:
        ev += _len_field(6, _key(1, 0) + _varint(1))
    return ev


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _read_varint(buf, i)
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            val, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated protobuf field")
        yield field, wire, val


def decode_event(buf: bytes) -> dict:
    """Event bytes -> {"wall_time", "step", "file_version"?, "scalars": {tag: value}, "session_start"?}."""
    ev: dict = {"wall_time": 0.0, "step": 0, "scalars": {}}
    for field, _, val in _fields(buf):
        if field == 1:
            ev["wall_time"] = struct.unpack("<d", val)[0]
        elif field == 2:
            ev["step"] = val - (1 << 64) if val >= 1 << 63 else val
        elif field == 3:
            ev["file_version"] = val.decode()
        elif field == 5:
            for f, _, value in _fields(val):
                if f != 1:
                    continue
                tag, num = None, None
                for vf, _, vv in _fields(value):
                    if vf == 1:
                        tag = vv.decode()
                    elif vf == 2:
                        num = struct.unpack("<f", vv)[0]
                if tag is not None and num is not None:
                    ev["scalars"][tag] = num
        elif field == 6:
            ev["session_start"] = any(f == 1 and v == 1 for f, _, v in _fields(val))
    return ev


# ---------------------------------------------------------------------------------- records
def read_records(path: str) -> Iterator[bytes]:
    """The data of every TFRecord in ``path``, CRCs checked (ValueError on a mismatch). A
    torn last record (the writer died mid-write) ends the iteration quietly."""
    with open(path, "rb") as f:
        while True:
            head = f.read(12)
            if len(head) < 12:
                return
            (n,) = struct.unpack("<Q", head[:8])
            if struct.unpack("<I", head[8:])[0] != masked_crc32c(head[:8]):
                raise ValueError(f"{path}: record length CRC mismatch (corrupted event file)")
            data = f.read(n)
            tail = f.read(4)
            if len(data) < n or len(tail) < 4:
                return
            if struct.unpack("<I", tail)[0] != masked_crc32c(data):
                raise ValueError(f"{path}: record data CRC mismatch (corrupted event file)")
            yield data


def read_events(path: str) -> list[dict]:
    return [decode_event(r) for r in read_records(path)]


class EventWriter:
    """Appends scalar events to a new events.out.tfevents.* file in ``log_dir``."""

    def __init__(self, log_dir: str, resume_step: int | None = None, suffix: str = ""):
        os.makedirs(log_dir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}{suffix}"
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "ab")
        self._write(encode_event(time.time(), 0, file_version="brain.Event:2"))
        if resume_step is not None:
            self._write(encode_event(time.time(), resume_step, session_start=True))

    def _write(self, data: bytes) -> None:
        head = struct.pack("<Q", len(data))
        self._file.write(head + struct.pack("<I", masked_crc32c(head)) + data +
                         struct.pack("<I", masked_crc32c(data)))
        self._file.flush()

    def scalars(self, step: int, values: Mapping[str, float | None], wall_time: float | None = None) -> None:
        """One event with every finite value in ``values`` (None and non-finite are left out)."""
        clean = {k: float(v) for k, v in values.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if clean:
            self._write(encode_event(time.time() if wall_time is None else wall_time, step, clean))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
