"""Parallel training on the GPU matches one GPU: the trainer's CLI with dp=2, pp=2 (1F1B,
zero-bubble) and dp x pp = 2 x 2 with ZeRO-1, CUDA tensors and bf16 compute, logs the same
losses and gradient norms as a single-GPU run of the same global batch, within the bf16
tolerance of tests/tolerances.py (the summation orders of the layouts differ, and bf16
activations round differently when a batch is split).

Runs wherever one GPU is visible: the ranks then share it, and their CUDA tensors travel
through host memory over our TCP ring (`--backend ring`; CUDA IPC refuses two ranks on one
GPU and NCCL needs one GPU per rank). The NCCL and CUDA IPC paths between GPUs are tested
by tests/distributed/test_cuda_ipc.py and the NCCL tests, which need 2-4 GPUs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parallel"))
from common import child_env  # noqa: E402

pytestmark = pytest.mark.gpu

BF16_REL = 2e-2  # tests/tolerances.py
COMMON = ["--preset", "tiny", "--steps", "4", "--batch-size", "8", "--seq-len", "32", "--corpus-bytes", "200000",
          "--eval-every", "0", "--eval-batches", "2", "--log-every", "1", "--no-progress", "--sample-len", "0",
          "--lr", "1e-3", "--warmup", "0", "--device", "cuda", "--no-tensorboard"]


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]


def _records(out: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "loss" in r]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> list[dict]:
    out = str(tmp_path_factory.mktemp("single") / "run")
    _run([sys.executable, "-m", "ringloom", "train", *COMMON, "--out", out])
    return _records(out)


@pytest.mark.parametrize("n,args", [
    (2, ["--dp", "2"]),
    (2, ["--pp", "2", "--schedule", "1f1b", "--micro-batches", "4"]),
    (2, ["--pp", "2", "--schedule", "zb", "--micro-batches", "2"]),
    (4, ["--dp", "2", "--pp", "2", "--schedule", "1f1b", "--micro-batches", "2", "--zero", "--bucket-mb", "0.05"]),
    (2, ["--dp", "2", "--zero", "2", "--bucket-mb", "0.05"]),
    (2, ["--dp", "2", "--zero", "3", "--recompute", "selective"]),
    (4, ["--dp", "2", "--pp", "2", "--schedule", "zb", "--micro-batches", "2", "--zero", "3", "--recompute", "full"]),
], ids=["dp2", "pp2-1f1b", "pp2-zb", "dp2xpp2-zero", "dp2-zero2", "dp2-zero3-selective", "dp2xpp2-zb-zero3-full"])
def test_gpu_layouts_match_one_gpu(single, tmp_path, n, args):
    out = str(tmp_path / "run")
    _run([sys.executable, "-m", "ringloom", "launch", "-n", str(n), "-m", "ringloom", "train", *COMMON, *args,
          "--backend", "ring", "--out", out])
    got = _records(out)
    assert [r["step"] for r in got] == [r["step"] for r in single]
    ref = np.array([r["loss"] for r in single])
    assert ref[-1] < ref[0], "the reference did not train: the comparison would prove little"
    loss = np.array([r["loss"] for r in got])
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, ref, rtol=BF16_REL, err_msg="losses differ from one GPU")
    np.testing.assert_allclose([r["grad_norm"] for r in got], [r["grad_norm"] for r in single], rtol=5 * BF16_REL,
                               err_msg="gradient norms differ from one GPU")
