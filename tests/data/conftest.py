"""Fixtures shared by the data tests."""
from __future__ import annotations

import numpy as np
import pytest


def _random_text(rng: np.random.Generator, n: int) -> str:
    """n characters mixing ASCII, Latin-1/Latin Extended, CJK and emoji (1- to 4-byte UTF-8)."""
    pools = [(0x20, 0x7F), (0xA0, 0x250), (0x4E00, 0x4F00), (0x1F300, 0x1F400)]
    out = []
    for _ in range(n):
        lo, hi = pools[rng.integers(len(pools))]
        out.append(chr(int(rng.integers(lo, hi))))
    return "".join(out)


@pytest.fixture
def random_text():
    return _random_text
