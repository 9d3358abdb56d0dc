"""Creating tensors from Python data, and copying them back to the host."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from . import _C

_FLOAT_DEFAULT = np.float32


def tensor(data: Any, dtype: Any = None, device: str = "cpu") -> _C.Tensor:
    """Copy ``data`` (array-like) into a new Tensor.

    float64 input becomes float32 and Python ints int64 unless ``dtype`` says otherwise;
    ``dtype`` may be a ringloom dtype, a string ("bfloat16") or a NumPy dtype.
    """
    if isinstance(data, _C.Tensor):
        out = data.clone() if dtype is None else data.to(dtype)
        return out.to(device) if device != out.device else out
    arr = np.asarray(data)
    if dtype is None:
        if arr.dtype == np.float64:
            arr = arr.astype(_FLOAT_DEFAULT)
        elif arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        target = None
    else:
        target = dtype if isinstance(dtype, _C.DType) else _C.DType.__members__.get(str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype)
        if target is None:
            raise TypeError(f"tensor: unsupported dtype {dtype!r}")
        if target == _C.DType.bfloat16:
            arr = np.ascontiguousarray(arr, dtype=np.float32)
        else:
            arr = arr.astype(str(target), copy=False)
    arr = np.array(arr, order="C", copy=True)
    t = _C.from_numpy(arr)
    if target == _C.DType.bfloat16:
        t = t.to(_C.DType.bfloat16)
    return t.to(device) if device != "cpu" else t


class HostStaging:
    """Page-locked host buffers for repeated snapshots of device tensors (asynchronous
    checkpoints): copies into pinned memory run at full PCIe speed, and the buffers are
    reused from one snapshot to the next (the k-th copy of a snapshot reuses the k-th buffer
    of the previous one when shape and dtype agree), since pinning memory is slow. The arrays
    a snapshot returns view these buffers: they stay valid until the next snapshot begins.
    In a build without CUDA the buffers are plain host memory."""

    def __init__(self) -> None:
        self._buffers: list[Any] = []
        self._next = 0

    @contextlib.contextmanager
    def snapshot(self) -> Iterator["HostStaging"]:
        """While active, host_copy() of device tensors goes through these buffers."""
        global _staging
        self._next, previous, _staging = 0, _staging, self
        try:
            yield self
        finally:
            _staging = previous

    def copy(self, t: Any) -> np.ndarray:
        k = self._next
        self._next += 1
        shape, dtype = list(t.shape), t.dtype
        if k < len(self._buffers) and list(self._buffers[k].shape) == shape and self._buffers[k].dtype == dtype:
            buf = self._buffers[k]
        else:
            buf = _C.pinned_empty(shape, dtype)
            if k < len(self._buffers):
                self._buffers[k] = buf
            else:
                self._buffers.append(buf)
        buf.copy_(t)
        return np.asarray(buf.numpy())

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._buffers)


_staging: HostStaging | None = None


def host_copy(t: Any) -> np.ndarray:
    """A float32 NumPy copy of a float tensor on the host (a bfloat16 tensor converted),
    through the active HostStaging's pinned buffers for device tensors inside a snapshot."""
    if t.device != "cpu" and _staging is not None:
        a = _staging.copy(t)
    else:
        a = np.array(t.numpy(), copy=True)
    return a if a.dtype == np.float32 else a.astype(np.float32)
