"""Comparing results: one tolerance table by precision, and `assert_close` for ringloom
tensors, NumPy arrays and anything that speaks DLPack (PyTorch, JAX, CuPy, ...).

Two ways to judge a difference, both against the same table:
  elementwise  |actual - expected| <= atol + rtol |expected| for every element (the rule of
               torch.testing.assert_close and numpy.isclose);
  norm         ||actual - expected|| / ||expected|| <= rtol over the whole array: the
               relative error of a kernel's output against a float64 reference, which is
               how a kernel's precision is stated (float32 arithmetic lands far under 1e-3,
               tf32 near 3e-4, bf16 operands between 1e-3 and 1e-2), and which does not
               fail on the few elements that cancel to near zero.
NaN and Inf never pass, unless both sides hold the same non-finite value in the same place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float       # elementwise relative tolerance
    atol: float       # elementwise absolute tolerance
    norm_rtol: float  # bound on ||actual - expected|| / ||expected||


# By the precision of the computation under test. "tf32" is float32 storage with matrix
# products in TensorFloat-32; "float32_grad" an analytic float32 gradient against float64
# central differences (the finite-difference error is in the comparison too).
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-7, atol=1e-7, norm_rtol=1e-10),
    "float32": Tolerance(rtol=1.3e-6, atol=1e-5, norm_rtol=1e-5),
    "float32_grad": Tolerance(rtol=1e-4, atol=1e-5, norm_rtol=1e-4),
    "tf32": Tolerance(rtol=1e-3, atol=1e-4, norm_rtol=1e-3),
    "float16": Tolerance(rtol=1e-3, atol=1e-5, norm_rtol=5e-3),
    "bfloat16": Tolerance(rtol=1.6e-2, atol=1e-5, norm_rtol=2e-2),
    "int": Tolerance(rtol=0.0, atol=0.0, norm_rtol=0.0),
}

# From the least to the most precise: a comparison takes the tolerance of its less precise side.
_ORDER = ["bfloat16", "float16", "tf32", "float32_grad", "float32", "float64", "int"]


def precision_of(x: Any) -> str:
    """The row of TOLERANCES for a value's dtype: "bfloat16", "float16", "float32",
    "float64" or "int" (integers and booleans compare exactly)."""
    name = _dtype_name(x)
    if name in ("bfloat16", "float16", "float32", "float64"):
        return name
    if name.startswith(("int", "uint", "bool")):
        return "int"
    return "float64"


def _dtype_name(x: Any) -> str:
    dt = getattr(x, "dtype", None)
    if dt is None:
        return str(np.asarray(x).dtype)
    s = str(dt)
    for prefix in ("torch.", "DType.", "dtype('"):
        s = s.replace(prefix, "")
    return s.rstrip("')")


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy (or view) of `x`: a ringloom Tensor on any device, a NumPy array,
    anything with __dlpack__ (on the CPU or a CUDA device, bfloat16 included), or nested
    Python numbers. Low-precision floats come back as float32 or ml_dtypes arrays."""
    from .. import _C

    if isinstance(x, np.ndarray):
        return x
    if not isinstance(x, _C.Tensor) and hasattr(x, "__dlpack__"):
        try:
            x = _C.from_dlpack(x)
        except (TypeError, ValueError, RuntimeError, BufferError):
            return np.from_dlpack(x)
    if isinstance(x, _C.Tensor):
        if x.dtype == _C.DType.bfloat16 or x.dtype == _C.DType.float16:
            x = x.to(_C.DType.float32)
        return np.asarray(x.numpy())
    return np.asarray(x)


def rel_err(actual: Any, expected: Any) -> float:
    """||actual - expected|| / ||expected|| in float64 (the absolute norm where expected is 0).
    Raises AssertionError on a shape mismatch or a non-finite actual value."""
    a = np.asarray(to_numpy(actual), dtype=np.float64)
    e = np.asarray(to_numpy(expected), dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"shape {a.shape} != expected {e.shape}")
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{int((~np.isfinite(a)).sum())} non-finite values in the actual result")
    denom = np.linalg.norm(e)
    num = np.linalg.norm(a - e)
    return float(num / denom) if denom > 0 else float(num)


def assert_close(actual: Any, expected: Any, *, rtol: float | None = None, atol: float | None = None,
                 precision: str | None = None, norm: bool = False, msg: str = "") -> None:
    """Raises AssertionError unless `actual` matches `expected`.

    The tolerance comes from TOLERANCES for `precision` (default: the less precise of the
    two dtypes, so a bfloat16 result against a float64 reference is judged as bfloat16);
    `rtol` / `atol` override it. With norm=True the whole array is judged by its relative
    norm error (rtol bounds it; default the table's norm_rtol), otherwise every element.
    The message names the first offending index, both values, the largest absolute and
    relative differences and how many elements are out of tolerance; `msg` is put first.
    """
    if precision is None:
        precision = min((precision_of(actual), precision_of(expected)), key=_ORDER.index)
    if precision not in TOLERANCES:
        raise ValueError(f"assert_close: unknown precision {precision!r}; expected one of {sorted(TOLERANCES)}")
    tol = TOLERANCES[precision]
    a = np.asarray(to_numpy(actual), dtype=np.float64)
    e = np.asarray(to_numpy(expected), dtype=np.float64)
    head = f"{msg}: " if msg else ""
    if a.shape != e.shape:
        raise AssertionError(f"{head}shapes differ: actual {a.shape}, expected {e.shape}")
    if a.size == 0:
        return
    bad_nonfinite = ~(np.isfinite(a) & np.isfinite(e)) & ~((a == e) | (np.isnan(a) & np.isnan(e)))
    if bad_nonfinite.any():
        idx = _index(np.argwhere(bad_nonfinite)[0])
        raise AssertionError(f"{head}{int(bad_nonfinite.sum())} non-finite mismatch(es); first at {idx}: "
                             f"actual {a[idx]!r}, expected {e[idx]!r}")
    finite = np.isfinite(a) & np.isfinite(e)
    a_f, e_f = np.where(finite, a, 0.0), np.where(finite, e, 0.0)
    diff = np.abs(a_f - e_f)
    if norm:
        bound = tol.norm_rtol if rtol is None else rtol
        err = rel_err(a_f, e_f)
        if err > bound:
            raise AssertionError(f"{head}relative norm error {err:.3e} exceeds {bound:.1e} ({precision}); "
                                 + _where(a, e, diff, diff == diff.max()))
        return
    r = tol.rtol if rtol is None else rtol
    t = tol.atol if atol is None else atol
    bad = diff > t + r * np.abs(e_f)
    if bad.any():
        raise AssertionError(f"{head}{int(bad.sum())} of {a.size} elements ({100.0 * bad.sum() / a.size:.3g}%) "
                             f"differ by more than atol {t:.1e} + rtol {r:.1e} * |expected| ({precision}); "
                             + _where(a, e, diff, bad))


def _index(i) -> tuple[int, ...]:
    return tuple(int(v) for v in i)


def _where(a: np.ndarray, e: np.ndarray, diff: np.ndarray, bad: np.ndarray) -> str:
    """Where they differ and by how much, for the message."""
    if a.size == 0:
        return "empty arrays"
    first = _index(np.argwhere(bad)[0]) if bad.any() else _index(np.unravel_index(int(np.argmax(diff)), diff.shape))
    worst = _index(np.unravel_index(int(np.argmax(diff)), diff.shape))
    rel = diff / np.maximum(np.abs(e), np.finfo(np.float64).tiny)
    worst_rel = _index(np.unravel_index(int(np.argmax(rel)), rel.shape))
    return (f"first at index {first}: actual {a[first]:.8g}, expected {e[first]:.8g}; "
            f"greatest absolute difference {diff[worst]:.3e} at {worst}; "
            f"greatest relative difference {rel[worst_rel]:.3e} at {worst_rel}")
