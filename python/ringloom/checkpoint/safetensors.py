"""The safetensors format, read and written with NumPy (no extra dependency).

Layout (https://github.com/huggingface/safetensors, format section):
    8 bytes   little-endian u64 N, the header size
    N bytes   JSON: {name: {"dtype": "F32"|"BF16"|..., "shape": [...], "data_offsets": [begin, end]},
                     "__metadata__": {str: str}}  (offsets relative to the end of the header)
    data      the tensors' bytes, little-endian, row-major, back to back
Reading validates the header strictly against the file size (check_header), so a
truncated, corrupted or forged file is refused with a message instead of yielding garbage,
and reads only regular files (no symbolic link, device or FIFO: checkpoint/safe_files.py).
"""
from __future__ import annotations

import json
import os
import struct
from typing import BinaryIO, Mapping

import ml_dtypes
import numpy as np

from .atomic import atomic_write
from .safe_files import file_size, open_regular

_TO_ST = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.float16): "F16",
          np.dtype(np.int32): "I32", np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8",
          np.dtype(np.float64): "F64", np.dtype(np.uint16): "U16", np.dtype(np.uint32): "U32"}
_FROM_ST = {v: k for k, v in _TO_ST.items()}
_MAX_HEADER = 100 << 20


def save_safetensors(path: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        if arr.dtype not in _TO_ST:
            raise TypeError(f"save_safetensors: tensor {name!r} has unsupported dtype {arr.dtype}")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": _TO_ST[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned

    def write(f):
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for a in arrays:
            f.write(memoryview(a.reshape(-1).view(np.uint8)))

    atomic_write(path, write)


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_header(header: object, data_len: int) -> str | None:
    """What is wrong with a parsed safetensors header for a data section of ``data_len``
    bytes, or None. Strict, as the format asks: every entry is exactly dtype, shape (integers
    in [0, 2**63), their product computed without overflow) and data_offsets (two integers), the
    tensors lie back to back without gaps or overlap and cover the data section exactly;
    __metadata__ maps strings to strings."""
    if not isinstance(header, dict):
        return "not a JSON object"
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in info.items()):
                return "__metadata__ is not a map of strings to strings"
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            return f"entry for tensor {name!r} is not {{dtype, shape, data_offsets}}"
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _FROM_ST:
            return f"tensor {name!r} has unsupported dtype {dtype!r}"
        if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d < 2**63 for d in shape):
            return f"tensor {name!r} has an invalid shape {shape!r}"
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            return f"tensor {name!r} has invalid data_offsets {offsets!r}"
        count, extent = 1, _FROM_ST[dtype].itemsize
        for d in shape:   # Python integers: a 2**64 dimension cannot wrap around
            count *= d
            extent *= max(d, 1)
        if extent >= 2**63:   # what an array may span, empty or not (NumPy's limit too)
            return f"tensor {name!r} has an invalid shape {shape!r} (too large)"
        begin, end = offsets
        if not (0 <= begin <= end <= data_len) or end - begin != count * _FROM_ST[dtype].itemsize:
            return (f"tensor {name!r} lies outside the file or has the wrong size "
                    f"(truncated or corrupted file)")
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            return f"tensor {name!r} overlaps another or leaves a gap at byte {position} of the data"
        position = end
    if position != data_len:
        return f"{data_len - position} bytes after the last tensor (truncated or corrupted file)"
    return None


def read_safetensors_header(path: str, error: type[Exception] = ValueError) -> tuple[dict, int]:
    """Returns (header dict, data start offset); raises ``error`` (a ValueError) on a
    malformed file, or on anything but a regular file."""
    with open_regular(path, error=error) as f:
        return _read_header(f, path, error)


def _read_header(f: BinaryIO, path: str, error: type[Exception]) -> tuple[dict, int]:
    size = file_size(f)
    raw = f.read(8)
    if len(raw) < 8:
        raise error(f"{path}: not a safetensors file (only {size} bytes)")
    (n,) = struct.unpack("<Q", raw)
    if n > _MAX_HEADER or 8 + n > size:
        raise error(f"{path}: corrupted or truncated safetensors header (header size {n}, file {size} bytes)")
    try:
        header = json.loads(f.read(n), object_pairs_hook=_no_duplicates)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise error(f"{path}: corrupted safetensors header ({e})") from None
    problem = check_header(header, size - 8 - n)
    if problem:
        raise error(f"{path}: corrupted safetensors header: {problem}")
    return header, 8 + n


def load_safetensors(path: str, error: type[Exception] = ValueError) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Returns ({name: array}, metadata). Arrays are copies (the file can be replaced).
    ``error`` (a ValueError subclass) is raised for a malformed file."""
    out: dict[str, np.ndarray] = {}
    with open_regular(path, error=error) as f:
        header, start = _read_header(f, path, error)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            f.seek(start + begin)
            buf = f.read(end - begin)
            if len(buf) != end - begin:
                raise error(f"{path}: tensor {name!r}: the file shrank while it was read")
            out[name] = np.frombuffer(buf, dtype=_FROM_ST[info["dtype"]]).reshape(info["shape"]).copy()
    return out, dict(header.get("__metadata__", {}))
