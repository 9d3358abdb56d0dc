"""The project's tests judge a result by its relative norm error against a float64
reference, with the tolerance of the computation's precision; the table is
ringloom.testing.TOLERANCES (norm_rtol), shared with users' own tests."""
from __future__ import annotations

from ringloom.testing import TOLERANCES, rel_err
from ringloom.testing import assert_close as _assert_close

REL_ERR = {name: tol.norm_rtol for name, tol in TOLERANCES.items()}

__all__ = ["REL_ERR", "assert_close", "rel_err"]


def assert_close(out, ref, precision: str = "float32", what: str = "output") -> None:
    """||out - ref|| / ||ref|| <= REL_ERR[precision]; the message names `what`."""
    _assert_close(out, ref, precision=precision, norm=True, msg=what)
