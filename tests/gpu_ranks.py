"""How many GPUs the tests see, and the environment for ranks that each work on a GPU (on
GPUs of their own, or sharing them under CUDA MPS: the `mps` fixture of tests/conftest.py)."""
from __future__ import annotations

import pytest

import ringloom


def gpu_count() -> int:
    usable = ringloom._C.has_cuda_build and ringloom.cuda_available()
    return ringloom.cuda_device_count() if usable else 0


def ranks_on_gpus(n: int, request) -> dict[str, str]:
    """Environment for n ranks that each work on a GPU: nothing extra when n GPUs are
    visible (one each); otherwise the ranks share the visible GPUs as clients of the test
    run's MPS daemon (the `mps` fixture), or the test skips with the reason."""
    g = gpu_count()
    if g == 0:
        pytest.skip("needs a GPU: none visible (or ringloom was built without CUDA)")
    if g >= n:
        return {}
    return dict(request.getfixturevalue("mps"))
