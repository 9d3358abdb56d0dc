"""The safetensors format, read and written with NumPy (no extra dependency).

Layout (https://github.com/huggingface/safetensors, format section):
    8 bytes   little-endian u64 N, the header size
    N bytes   JSON: {name: {"dtype": "F32"|"BF16"|..., "shape": [...], "data_offsets": [begin, end]},
                     "__metadata__": {str: str}}  (offsets relative to the end of the header)
    data      the tensors' bytes, little-endian, row-major, back to back
Reading validates the header against the file size, so a truncated or corrupted file is
refused with a message instead of yielding garbage.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import ml_dtypes
import numpy as np

from .atomic import atomic_write

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


def read_safetensors_header(path: str) -> tuple[dict, int]:
    """Returns (header dict, data start offset); raises ValueError on a malformed file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise ValueError(f"{path}: corrupted or truncated safetensors header (header size {n}, file {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: corrupted safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupted safetensors header (not a JSON object)")
    data_len = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            dtype = _FROM_ST[info["dtype"]]
            count = int(np.prod(info["shape"], dtype=np.int64))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: malformed entry for tensor {name!r}") from None
        if not (0 <= begin <= end <= data_len) or end - begin != count * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name!r} lies outside the file or has the wrong size "
                             f"(truncated or corrupted file)")
    return header, 8 + n


def load_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Returns ({name: array}, metadata). Arrays are copies (the file can be replaced)."""
    header, start = read_safetensors_header(path)
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            f.seek(start + begin)
            buf = f.read(end - begin)
            out[name] = np.frombuffer(buf, dtype=_FROM_ST[info["dtype"]]).reshape(info["shape"]).copy()
    return out, dict(header.get("__metadata__", {}))
