"""Finite-difference gradients of float64 NumPy reference functions.

For a reference f(x) -> y and an upstream gradient dy, the gradient of
L(x) = sum(f(x) * dy) is estimated by central differences, (L(x+h e_i) - L(x-h e_i)) / 2h,
which in float64 with h = 1e-6 is accurate to about 1e-8 relative: far below the fp32
error of the op under test.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def numeric_grad(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dy: np.ndarray, h: float = 1e-6,
                 max_entries: int | None = None, rng: np.random.Generator | None = None):
    """Returns (indices, grads): d sum(f(x)*dy) / dx at every entry, or at max_entries
    random entries (flat indices) when x is large."""
    x = np.array(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    flat = x.reshape(-1)
    n = flat.size
    if max_entries is None or max_entries >= n:
        idx = np.arange(n)
    else:
        idx = (rng or np.random.default_rng(0)).choice(n, size=max_entries, replace=False)
    grads = np.empty(len(idx))
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        lp = np.sum(f(x) * dy)
        flat[i] = old - h
        lm = np.sum(f(x) * dy)
        flat[i] = old
        grads[k] = (lp - lm) / (2 * h)
    return idx, grads


def check_grad(analytic: np.ndarray, f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dy: np.ndarray,
               tol: float = 1e-4, max_entries: int | None = 200, rng: np.random.Generator | None = None,
               what: str = "gradient") -> None:
    """Asserts the analytic gradient (from our op) matches finite differences of the reference."""
    idx, num = numeric_grad(f, x, dy, max_entries=max_entries, rng=rng)
    ana = np.asarray(analytic, dtype=np.float64).reshape(-1)[idx]
    assert np.all(np.isfinite(ana)), f"{what}: NaN or Inf in analytic gradient"
    scale = max(np.linalg.norm(num), 1e-12)
    err = np.linalg.norm(ana - num) / scale
    assert err <= tol, f"{what}: relative error {err:.3e} vs finite differences exceeds {tol:.1e}"
