"""ringloom: train GPT-2 and LLaMA style language models with a C++/CUDA core.

The compiled core lives in ``ringloom._C``; this package re-exports its public names.
"""
from __future__ import annotations

import ctypes as _ctypes
import os as _os


def _wait_passively() -> None:
    # OpenMP (libgomp, our CPU loops) and OpenBLAS (the GEMMs) are two thread pools, and by
    # default each keeps its idle threads spinning after its work is done, so on a machine
    # with few cores they take the cores from each other (and from other processes): the
    # tiny preset's training step ran 4x slower on 2 threads than on 1 (2-core machine,
    # load 1.6), and 1.6x faster than on 1 once both pools waited passively. Each library
    # reads its setting once, when it is loaded, so it is set here, before either is
    # loaded; a value the user set wins.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # spin 2^4 cycles, then sleep


def _load_openblas() -> None:
    # The extension links against libscipy_openblas.so from the scipy-openblas32 wheel.
    # Loading it first (RTLD_GLOBAL) lets the dynamic loader resolve that dependency by
    # its soname, wherever pip put the wheel, without baking a path into the build.
    import scipy_openblas32 as _ob

    path = _os.path.join(_ob.get_lib_dir(), f"lib{_ob.get_library()}.so")
    _ctypes.CDLL(path, mode=_ctypes.RTLD_GLOBAL)


_wait_passively()
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
    get_num_threads,
    set_num_threads,
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
    "cuda_device_count", "get_num_threads", "set_num_threads", "ops", "float32", "bfloat16", "float16", "int32", "int64", "uint8",
]
