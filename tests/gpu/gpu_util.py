"""Helpers shared by the GPU op tests: moving arrays to and from the device, poisoning
outputs, and the two references every kernel is judged against (float64 through PyTorch
on the CPU, and ringloom's own CPU op where it is implemented).

The CUDA ops run on ringloom's own stream; every transfer below goes through the host
(and synchronises that stream), so no stream ordering with PyTorch is needed.
"""
from __future__ import annotations

import os

import numpy as np

import ringloom as rl

# RINGLOOM_TEST_DEVICE=cpu runs the float32 cases against the CPU ops (a dry run of the
# test logic on a machine without a GPU).
DEV = os.environ.get("RINGLOOM_TEST_DEVICE", "cuda:0")


def gpu(arr, dtype: str = "float32"):
    """A CUDA tensor holding `arr` in `dtype` ("float32" or "bfloat16"; ints keep theirs)."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "iu":
        return rl.tensor(arr, device=DEV)
    return rl.tensor(np.asarray(arr, np.float32), dtype=dtype, device=DEV)


def host(t) -> np.ndarray:
    """float64 NumPy copy of a tensor (bf16 converted on the device first)."""
    if t.dtype == rl.bfloat16:
        t = t.to(rl.float32)
    return np.asarray(t.numpy(), dtype=np.float64)


def rounded(arr, dtype: str) -> np.ndarray:
    """The values the kernel actually sees: `arr` rounded to `dtype`, as float64."""
    arr = np.asarray(arr, np.float32)
    if dtype == "float32":
        return arr.astype(np.float64)
    return host(rl.tensor(arr, dtype="bfloat16"))


def nan_tensor(shape, dtype: str = "float32"):
    """A CUDA tensor full of NaN: an output that the op must overwrite."""
    return gpu(np.full(shape, np.nan, np.float32), dtype)


def poison_next_alloc(shape, dtype: str = "float32", copies: int = 4) -> None:
    """Fills and frees NaN blocks of this size, so that the caching allocator hands one
    of them to the op's next output of that size: an element the kernel forgets to write
    stays NaN and fails the test."""
    blocks = [nan_tensor(shape, dtype) for _ in range(copies)]
    if DEV != "cpu":
        rl._C.cuda_synchronize(0)
    del blocks  # (the op's inputs, made after this, may take some of them: hence several)


def cpu_op(fn):
    """Runs a ringloom CPU op; None where the CPU op is not implemented in this build."""
    try:
        return fn()
    except NotImplementedError:
        return None


def precision(dtype: str, gemm: bool = False) -> str:
    """Row of tests/tolerances.py for a kernel computing in `dtype`."""
    if dtype == "bfloat16":
        return "bfloat16"
    return "tf32" if gemm else "float32"
