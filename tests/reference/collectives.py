"""Reference math for the collectives: what rank r must hold after each op, computed from
every rank's input (each rank regenerates all inputs from the shared seed).

Integer sums are taken in the tensor's own dtype, so they wrap modulo 2^bits exactly as a
sequential loop would; float sums in float64.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

DTYPES = ("float32", "bfloat16", "int32", "int64", "uint8")
FLOATS = ("float32", "bfloat16")


def make_input(dtype: str, count: int, rank: int, seed: int) -> np.ndarray:
    """Rank `rank`'s input: full-range integers (so sums overflow and wrap), normal floats;
    bfloat16 values are exactly representable."""
    rng = np.random.default_rng([seed, rank, count, DTYPES.index(dtype) if dtype in DTYPES else 9])
    if dtype == "float32":
        return rng.standard_normal(count).astype(np.float32)
    if dtype == "bfloat16":
        return rng.standard_normal(count).astype(ml_dtypes.bfloat16)
    if dtype == "float16":
        return rng.standard_normal(count).astype(np.float16)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)


def reduce(inputs: list[np.ndarray], op: str) -> np.ndarray:
    """The element-wise reduction over ranks: exact (wrapping) for integers, float64 for floats."""
    stack = np.stack(inputs)
    if stack.dtype.kind in "iu":
        if op == "max":
            return stack.max(axis=0)
        return np.add.reduce(stack, axis=0, dtype=stack.dtype)  # wraps like the hardware
    x = stack.astype(np.float64)
    if op == "max":
        return x.max(axis=0)
    s = x.sum(axis=0)
    return s / len(inputs) if op == "avg" else s


def check_reduced(out: np.ndarray, inputs: list[np.ndarray], op: str, dtype: str, what: str) -> None:
    """Integers: bit-exact. Floats: within the error of an fp32 sum of these terms,
    |out - ref| <= n * 2^-24 * sum|x_i| (+ half a bfloat16 ulp of ref when rounded to bf16)."""
    ref = reduce(inputs, op)
    if dtype not in FLOATS:
        bad = np.flatnonzero(out != ref)
        assert bad.size == 0, f"{what}: {bad.size} wrong elements, first at {bad[0]}: {out[bad[0]]} != {ref[bad[0]]}"
        return
    got = np.asarray(out).astype(np.float64)
    assert np.all(np.isfinite(got)), f"{what}: non-finite output"
    if op == "max":
        bad = np.flatnonzero(got != ref)
        assert bad.size == 0, f"{what}: max differs at {bad[:5]}"
        return
    n = len(inputs)
    scale = np.abs(np.stack(inputs).astype(np.float64)).sum(axis=0) / (n if op == "avg" else 1)
    tol = 2 * n * 2.0**-24 * scale + 1e-30
    if dtype == "bfloat16":
        tol = tol + 2.0**-8 * np.abs(ref)
    err = np.abs(got - ref)
    bad = np.flatnonzero(err > tol)
    assert bad.size == 0, (f"{what}: {bad.size} elements off, first at {bad[0]}: {got[bad[0]]} vs {ref[bad[0]]} "
                           f"(tolerance {tol[bad[0]]:.3g})")
