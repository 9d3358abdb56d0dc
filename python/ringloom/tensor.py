"""Creating tensors from Python data."""
from __future__ import annotations

from typing import Any

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
