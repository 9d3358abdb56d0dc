"""Shared pytest setup: the gpu marker skips with a reason where no GPU is usable, and
tests/ is importable so tests share the reference math and tolerances."""
from __future__ import annotations

import os
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import ringloom  # noqa: E402


def _gpu_skip_reason() -> str | None:
    if not ringloom._C.has_cuda_build:
        return "ringloom was built without CUDA (RINGLOOM_CUDA=OFF or no toolkit)"
    if not ringloom.cuda_available():
        return "no CUDA device visible"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _gpu_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"GPU test: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name: fresh inputs per test, reproducible runs."""
    seed = zlib.crc32(request.node.nodeid.encode())  # hash() is salted per process
    return np.random.default_rng(seed)
