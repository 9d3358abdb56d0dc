"""Parallel training on the GPU matches one GPU: the trainer's CLI in every layout (dp=2
with buckets and overlap, ZeRO-1, pp=2 under each schedule, dp x pp = 2 x 2, parameter
server sync and async, local SGD, each gradient compression), CUDA tensors and bf16
compute, logs the losses of a single-GPU run of the same global batch within the bf16
tolerance of tests/tolerances.py (summation orders differ between layouts, and bf16
activations round differently when a batch is split). Methods that change the math on
purpose (top-k, PowerSGD, QSGD, local SGD) are compared instead with the same method and
layout on the CPU, whose implementation the CPU tests check against single-process math.
The asynchronous parameter server logs worker 0's own rows' loss, which no other run
logs; with staleness 0 it is lockstep, so its final weights must equal the synchronous
server's. Checkpoints written in these runs resume exactly: the resumed steps log the same
losses, bit for bit, and end with the same weights and optimizer state (local SGD, top-k
and PowerSGD are left out: the trainer refuses to resume them, their per-rank state is not
checkpointed).

Transports: "ipc" runs our collectives (--backend ring) whose CUDA tensors travel over CUDA
IPC: one GPU per rank where there are enough, else the ranks share the GPUs as clients of
the CUDA Multi-Process Service (the `mps` fixture); a run that fell back to host memory
says so on stderr, and the test fails on that line. "nccl" runs --backend nccl, which needs
a GPU per rank (NCCL refuses ranks sharing one) and skips with that reason otherwise.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gpu_ranks import gpu_count, ranks_on_gpus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parallel"))
from common import child_env  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.multiproc]

BF16_REL = 2e-2  # tests/tolerances.py
COMMON = ["--preset", "tiny", "--steps", "4", "--batch-size", "8", "--seq-len", "32", "--corpus-bytes", "200000",
          "--eval-every", "0", "--eval-batches", "2", "--log-every", "1", "--no-progress", "--sample-len", "0",
          "--lr", "1e-3", "--warmup", "0", "--no-tensorboard", "--threads", "1", "--keep-checkpoints", "0"]
FALLBACK = "CUDA tensors go through host memory over TCP"

# name -> (ranks, arguments, reference: "gpu" = single GPU, "cpu" = the same run on the CPU,
# "sync" = the final weights of the synchronous parameter server on the same transport)
LAYOUTS = {
    "dp2": (2, ["--dp", "2"], "gpu"),
    "dp2-buckets": (2, ["--dp", "2", "--bucket-mb", "0.05"], "gpu"),
    "dp2-zero": (2, ["--dp", "2", "--zero", "--bucket-mb", "0.05"], "gpu"),
    "pp2-gpipe": (2, ["--pp", "2", "--schedule", "gpipe", "--micro-batches", "4"], "gpu"),
    "pp2-1f1b": (2, ["--pp", "2", "--schedule", "1f1b", "--micro-batches", "4"], "gpu"),
    "pp2-interleaved": (2, ["--pp", "2", "--schedule", "interleaved", "--micro-batches", "4"], "gpu"),
    "pp2-zb": (2, ["--pp", "2", "--schedule", "zb", "--micro-batches", "2"], "gpu"),
    "dp2xpp2-zero": (4, ["--dp", "2", "--pp", "2", "--schedule", "1f1b", "--micro-batches", "2", "--zero",
                         "--bucket-mb", "0.05"], "gpu"),
    "ps-sync": (3, ["--param-servers", "1"], "gpu"),
    "ps-async": (3, ["--param-servers", "1", "--ps-mode", "async", "--ps-staleness", "0"], "sync"),
    "local-sgd": (2, ["--dp", "2", "--local-sgd", "2"], "cpu"),
    "bf16": (2, ["--dp", "2", "--compression", "bf16"], "gpu"),
    "topk": (2, ["--dp", "2", "--compression", "topk:0.1"], "cpu"),
    "powersgd": (2, ["--dp", "2", "--compression", "powersgd:2"], "cpu"),
    "qsgd": (2, ["--dp", "2", "--compression", "qsgd:7"], "cpu"),
}
# Async servers checkpoint only at the end; the trainer refuses --resume with local SGD,
# top-k and PowerSGD (their per-rank state is not checkpointed).
RESUMABLE = [k for k in LAYOUTS if k not in ("ps-async", "local-sgd", "topk", "powersgd")]


def _run(n: int, args: list[str], out: str, env: dict[str, str] | None = None) -> str:
    cmd = [sys.executable, "-m", "ringloom", "train", *COMMON, *args, "--out", out]
    if n > 1:
        cmd = [sys.executable, "-m", "ringloom", "launch", "-n", str(n), "-m", *cmd[2:]]
    res = subprocess.run(cmd, env={**child_env(), **(env or {})}, capture_output=True, text=True, timeout=240)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-5000:]
    return text


def _losses(out: str) -> dict[int, float]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def _transport_env(request, transport: str, n: int) -> tuple[list[str], dict[str, str]]:
    if transport == "nccl":
        if gpu_count() < n:
            pytest.skip(f"NCCL needs one GPU per rank (it refuses ranks sharing a GPU, even under MPS): "
                        f"{n} ranks need {n} GPUs, {gpu_count()} visible")
        return ["--backend", "nccl"], {"NCCL_NVLS_ENABLE": "0"}
    return ["--backend", "ring"], ranks_on_gpus(n, request)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """("gpu", None) -> the single-GPU run; ("cpu", layout) -> that layout on the CPU."""
    done: dict = {}

    def get(kind: str, layout: str | None = None) -> dict[int, float]:
        if (kind, layout) not in done:
            out = str(tmp_path_factory.mktemp(f"ref-{kind}-{layout}") / "run")
            if kind == "gpu":
                _run(1, ["--device", "cuda"], out)
            else:
                n, args, _ = LAYOUTS[layout]
                _run(n, [*args, "--device", "cpu"], out)
            done[(kind, layout)] = _losses(out)
        return done[(kind, layout)]
    return get


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    """(layout, transport) -> --out of its 4-step GPU run (checkpoints at steps 2 and 4)."""
    done: dict = {}

    def get(layout: str, transport: str) -> str:
        if (layout, transport) not in done:
            n, args, _ = LAYOUTS[layout]
            flags, env = _transport_env(request, transport, n)
            out = str(tmp_path_factory.mktemp(f"{layout}-{transport}") / "run")
            save = [] if layout == "ps-async" else ["--save-every", "2"]
            text = _run(n, [*args, *flags, *save, "--device", "cuda"], out, env)
            assert FALLBACK not in text, f"{layout} over {transport}: CUDA tensors did not take the GPU path\n" + \
                "\n".join(ln for ln in text.splitlines() if FALLBACK in ln)
            done[(layout, transport)] = out
        return done[(layout, transport)]
    return get


def _final_weights(out: str) -> dict[str, np.ndarray]:
    from ringloom.checkpoint import open_checkpoint

    return open_checkpoint(os.path.join(out, "checkpoints", "step_00000004")).model_state()


@pytest.mark.parametrize("transport", ["ipc", "nccl"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_matches_reference(refs, runs, layout, transport):
    out = runs(layout, transport)
    ref_kind = LAYOUTS[layout][2]
    if ref_kind == "sync":
        got, want = _final_weights(out), _final_weights(runs("ps-sync", transport))
        assert sorted(got) == sorted(want)
        diff = sum(float(np.sum((got[k].astype(np.float64) - want[k]) ** 2)) for k in want)
        norm = sum(float(np.sum(want[k].astype(np.float64) ** 2)) for k in want)
        assert np.sqrt(diff / norm) <= BF16_REL, f"{layout} over {transport}: final weights differ from sync"
        assert all(np.isfinite(v) for v in _losses(out).values())
        return
    ref = refs(ref_kind, None if ref_kind == "gpu" else layout)
    got = _losses(out)
    assert sorted(got) == sorted(ref)
    want = np.array([ref[s] for s in sorted(ref)])
    loss = np.array([got[s] for s in sorted(ref)])
    assert np.all(np.isfinite(loss))
    if ref_kind == "gpu":
        assert want[-1] < want[0], "the reference did not train: the comparison would prove little"
    np.testing.assert_allclose(loss, want, rtol=BF16_REL, err_msg=f"{layout} over {transport}: losses differ from "
                               f"the {ref_kind} reference")


@pytest.mark.parametrize("transport", ["ipc", "nccl"])
@pytest.mark.parametrize("layout", RESUMABLE)
def test_checkpoint_resumes_exactly(runs, tmp_path, request, layout, transport):
    from ringloom.checkpoint import open_checkpoint

    base = runs(layout, transport)
    n, args, _ = LAYOUTS[layout]
    flags, env = _transport_env(request, transport, n)
    out = str(tmp_path / "resumed")
    src = os.path.join(base, "checkpoints", "step_00000002")
    os.makedirs(os.path.join(out, "checkpoints"))
    shutil.copytree(src, os.path.join(out, "checkpoints", os.path.basename(src)))
    _run(n, [*args, *flags, "--save-every", "2", "--device", "cuda", "--resume"], out, env)
    want, got = _losses(base), _losses(out)
    assert sorted(got) == [3, 4], "the resumed run did not start from the step-2 checkpoint"
    assert [got[s] for s in (3, 4)] == [want[s] for s in (3, 4)]
    a = open_checkpoint(os.path.join(base, "checkpoints", "step_00000004"))
    b = open_checkpoint(os.path.join(out, "checkpoints", "step_00000004"))
    for x, y in ((a.model_state(), b.model_state()), (a.optim_state(), b.optim_state())):
        assert sorted(x) == sorted(y)
        for k in x:
            assert np.array_equal(x[k], y[k]), f"{layout} over {transport}: {k} differs after the resume"


def test_auto_backend_runs_ranks_sharing_a_gpu(request, tmp_path):
    """--backend auto on fewer GPUs than ranks: NCCL would refuse, so ours (CUDA IPC under
    MPS) is picked, and the run matches the explicit choice."""
    if gpu_count() >= 2:
        pytest.skip("auto picks NCCL where every rank has a GPU of its own")
    env = ranks_on_gpus(2, request)
    text = _run(2, ["--dp", "2", "--backend", "auto", "--device", "cuda"], str(tmp_path / "run"), env)
    assert FALLBACK not in text, text[-3000:]
