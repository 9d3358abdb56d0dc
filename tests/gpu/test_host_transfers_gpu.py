"""A GPU training step keeps its gradients on the device: during one data-parallel step (two
ranks; sharing the GPU under MPS where there is one) with plain all-reduce, bf16, top-k,
PowerSGD or QSGD compression, or local-SGD averaging, Tensor copies move to the host only the
per-position losses (the engine sums them in float64 on the host) and a few scalars (the
gradient norm; top-k's count of bad indices, 4 bytes per bucket): less than the smallest
gradient beyond the losses. That the counter sees device-to-host copies at all is tested in
tests/core/test_tensor.py."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpu_ranks import ranks_on_gpus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parallel"))
from common import child_env  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.multiproc]
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "host_transfer_worker.py")


def _transfers(request, method: str) -> tuple[int, int, int]:
    env = {**child_env(), **ranks_on_gpus(2, request)}
    cmd = [sys.executable, "-m", "ringloom", "launch", "-n", "2", WORKER, method]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    line = next(ln for ln in out.splitlines() if "TRANSFERS" in ln)
    moved, losses, smallest = map(int, line.split("TRANSFERS")[1].split())
    return moved, losses, smallest


@pytest.mark.parametrize("method", ["none", "bf16", "localsgd", "topk:0.1", "powersgd:2", "qsgd:7"])
def test_gpu_step_copies_no_gradient_to_the_host(request, method):
    moved, losses, smallest = _transfers(request, method)
    beyond = moved - losses
    assert 0 <= beyond <= 64 and beyond < smallest, \
        f"{method}: {moved} bytes went to the host in one step, {losses} of them losses (smallest gradient {smallest})"

