"""ringloom's pytest plugin, registered through the `pytest11` entry point: installing
ringloom is enough for a test suite to use it.

Markers
  gpu                      the test needs a CUDA device ringloom can use; elsewhere it is
                           skipped with the reason (built without CUDA, or no device).
  multiproc                the test starts several processes (run_in_ranks, ringloom
                           launch); skipped with the reason where local processes cannot
                           talk over loopback TCP, or under --ringloom-no-multiproc.
Fixtures
  rl_device                parametrised over "cpu" and each visible GPU ("cuda:0", ...).
  rl_ranks                 run_in_ranks: rl_ranks(fn, n, *args) -> each rank's result.
  rl_rng                   a NumPy Generator seeded from the test's id (reproducible,
                           different for every test).
Options
  --ringloom-update-golden every golden_run writes its golden file instead of comparing.
  --ringloom-no-multiproc  skip the tests marked multiproc.

Disable it with `-p no:ringloom.testing.plugin`.
"""
from __future__ import annotations

import functools
import socket
import zlib

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("ringloom")
    group.addoption("--ringloom-update-golden", action="store_true", default=False,
                    help="write the golden files of ringloom.testing.golden_run instead of comparing with them")
    group.addoption("--ringloom-no-multiproc", action="store_true", default=False,
                    help="skip the tests marked multiproc")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU usable by ringloom (skipped with a reason elsewhere)")
    config.addinivalue_line("markers", "multiproc: starts several processes through ringloom's launcher")
    if config.getoption("--ringloom-update-golden", default=False):
        from . import golden

        golden.UPDATE_ALL = True


@functools.lru_cache(maxsize=None)
def gpu_skip_reason() -> str | None:
    """Why GPU tests cannot run here, or None when they can."""
    import ringloom

    if not ringloom._C.has_cuda_build:
        return "ringloom was built without CUDA (RINGLOOM_CUDA=OFF or no CUDA toolkit at install time)"
    if not ringloom.cuda_available():
        return "no CUDA device visible"
    return None


@functools.lru_cache(maxsize=None)
def multiproc_skip_reason() -> str | None:
    """Why multi-process tests cannot run here, or None when they can."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
    except OSError as e:
        return f"cannot listen on 127.0.0.1 for the ranks' store ({e})"
    return None


def pytest_collection_modifyitems(config, items):
    no_multiproc = config.getoption("--ringloom-no-multiproc", default=False)
    for item in items:
        if "gpu" in item.keywords:
            reason = gpu_skip_reason()
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))
        if "multiproc" in item.keywords:
            reason = "--ringloom-no-multiproc given" if no_multiproc else multiproc_skip_reason()
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=f"multi-process test: {reason}"))


def devices() -> list[str]:
    """"cpu" and every CUDA device ringloom can use."""
    if gpu_skip_reason() is not None:
        return ["cpu"]
    import ringloom

    return ["cpu"] + [f"cuda:{i}" for i in range(ringloom.cuda_device_count())]


def pytest_generate_tests(metafunc):
    if "rl_device" in metafunc.fixturenames:
        metafunc.parametrize("rl_device", devices())


@pytest.fixture
def rl_ranks():
    """run_in_ranks(fn, nproc, *args, timeout=120, **kwargs) -> [result of rank 0, ...]."""
    from .ranks import run_in_ranks

    return run_in_ranks


@pytest.fixture
def rl_rng(request):
    """A NumPy Generator seeded from the test's id: fresh inputs per test, reproducible runs."""
    import numpy as np

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
