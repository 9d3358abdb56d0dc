"""ringloom: train GPT-2 and LLaMA style language models with a C++/CUDA core.

The compiled core lives in ``ringloom._C``; this package re-exports its public names.
"""
from __future__ import annotations

import ctypes as _ctypes
import os as _os


def _load_openblas() -> None:
    # The extension links against libscipy_openblas.so from the scipy-openblas32 wheel.
    # Loading it first (RTLD_GLOBAL) lets the dynamic loader resolve that dependency by
    # its soname, wherever pip put the wheel, without baking a path into the build.
    import scipy_openblas32 as _ob

    path = _os.path.join(_ob.get_lib_dir(), f"lib{_ob.get_library()}.so")
    _ctypes.CDLL(path, mode=_ctypes.RTLD_GLOBAL)


_load_openblas()

from . import _C  # noqa: E402
from ._C import (  # noqa: E402
    DType,
    Tensor,
    cuda_available,
    cuda_device_count,
    empty,
    from_dlpack,
    from_numpy,
    zeros,
)
from .tensor import tensor  # noqa: E402

ops = _C.ops

float32 = DType.float32
bfloat16 = DType.bfloat16
float16 = DType.float16
int32 = DType.int32
int64 = DType.int64
uint8 = DType.uint8

__version__ = "0.1.0"

__all__ = [
    "DType", "Tensor", "tensor", "empty", "zeros", "from_numpy", "from_dlpack", "cuda_available",
    "cuda_device_count", "ops", "float32", "bfloat16", "float16", "int32", "int64", "uint8",
]
