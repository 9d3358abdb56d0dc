"""Shared pytest setup: tests/ is importable so tests share the reference math and
tolerances. The gpu and multiproc markers, their skips and the fixtures come from
ringloom's own pytest plugin (ringloom.testing.plugin)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng(rl_rng):
    """A generator seeded from the test's name (the plugin's rl_rng)."""
    return rl_rng
