"""Collectives whose ranks disagree (element count, dtype, root) raise on every rank with
both sides named, before any data moves, and leave the group usable; a collective that
times out names the call in flight and the last ones completed (the flight recorder)."""
from __future__ import annotations

import pytest

from conftest import launch

pytestmark = pytest.mark.multiproc


@pytest.mark.parametrize("what,backend", [("count", "ring"), ("count", "tree"), ("dtype", "auto"), ("root", "auto")])
def test_disagreeing_ranks_raise_everywhere(what, backend):
    r = launch(2, "disagree", what, backend, timeout=90)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for rank in (0, 1):
        assert f"DISAGREE rank {rank}:" in out, out
    assert out.count("STILL-USABLE") == 2, out


def test_check_can_be_turned_off_and_costs_nothing_then():
    # With the check off the mismatched call is not detected: the knob really switches it.
    r = launch(2, "disagree", "root", "auto", timeout=90, env={"RINGLOOM_CHECK_COLLECTIVES": "0"})
    assert "no error although the ranks disagree" in r.stdout + r.stderr
