"""One table of tolerances, by the precision of the computation under test.

Errors are judged as ||out - ref|| / ||ref|| against a float64 reference:
fp32 arithmetic lands far under 1e-3 (we ask 1e-5 for values), tf32 near 3e-4, bf16
operands between 1e-3 and 1e-2. Gradients from finite differences carry the FD error too.
"""
from __future__ import annotations

import numpy as np

REL_ERR = {
    "float32": 1e-5,
    "float32_grad": 1e-4,   # analytic fp32 gradient vs float64 central differences
    "tf32": 1e-3,
    "bfloat16": 2e-2,
}


def rel_err(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != reference {ref.shape}"
    assert np.all(np.isfinite(out)), "output has NaN or Inf"
    denom = np.linalg.norm(ref)
    num = np.linalg.norm(out - ref)
    return float(num / denom) if denom > 0 else float(num)


def assert_close(out, ref, precision: str = "float32", what: str = "output") -> None:
    err = rel_err(out, ref)
    tol = REL_ERR[precision]
    assert err <= tol, f"{what}: relative error {err:.3e} exceeds {tol:.1e} ({precision})"
