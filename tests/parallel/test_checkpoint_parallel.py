"""Checkpoints of parallel runs: every rank writes its files, rank 0 the manifest; resuming
with the same layout continues bit for bit, and a checkpoint resumes under another layout
(pipeline split <-> data parallel <-> one process) to the same result within fp32 rounding
(summation order differs between layouts, as in test_equivalence)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import child_env  # noqa: E402

from ringloom.checkpoint.manager import open_checkpoint

pytestmark = pytest.mark.multiproc

COMMON = ["--preset", "tiny", "--steps", "4", "--batch-size", "8", "--seq-len", "24", "--corpus-bytes", "200000",
          "--eval-every", "0", "--eval-batches", "2", "--log-every", "1", "--no-progress", "--sample-len", "0",
          "--lr", "1e-3", "--warmup", "0", "--save-every", "2", "--keep-checkpoints", "0", "--no-tensorboard", "--threads", "1"]
PP2 = ["--pp", "2", "--micro-batches", "2", "--schedule", "1f1b"]
DP2 = ["--dp", "2", "--micro-batches", "2"]




def _train(out: str, layout: list[str], *extra: str, n: int = 2) -> None:
    cmd = [sys.executable, "-m", "ringloom", "train", *COMMON, *layout, *extra, "--out", out]
    if n > 1:
        cmd = [sys.executable, "-m", "ringloom", "launch", "-n", str(n), "-m", *cmd[2:]]
    res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]


def _losses(out: str) -> dict[int, float]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f)}


def _step(out: str, step: int):
    return open_checkpoint(os.path.join(out, "checkpoints", f"step_{step:08d}"))


def _resume_from(src_ckpt: str, out: str) -> None:
    """A fresh --out holding only the given checkpoint, so that --resume latest picks it."""
    os.makedirs(os.path.join(out, "checkpoints"))
    shutil.copytree(src_ckpt, os.path.join(out, "checkpoints", os.path.basename(src_ckpt)))


ZERO = ["--dp", "2", "--micro-batches", "2", "--zero", "--bucket-mb", "0.05"]  # several buckets
# QSGD draws its random numbers from the optimizer step: a resumed run draws the same ones.
QSGD = ["--dp", "2", "--compression", "qsgd:3"]
ZERO2 = ["--dp", "2", "--micro-batches", "2", "--zero", "2", "--bucket-mb", "0.05"]
ZERO3 = ["--dp", "2", "--micro-batches", "2", "--zero", "3"]   # parameters sharded, one bucket per layer
LAYOUTS = {"pp2": PP2, "dp2-zero": ZERO, "dp2-qsgd": QSGD, "dp2-zero2": ZERO2, "dp2-zero3": ZERO3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """layout name -> --out of an uninterrupted 4-step run (launched on first use)."""
    done: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in done:
            out = str(tmp_path_factory.mktemp(name) / "run")
            _train(out, LAYOUTS[name])
            done[name] = out
        return done[name]
    return get


@pytest.fixture
def pp2_run(runs) -> str:
    return runs("pp2")


def test_rank_files_and_manifest(pp2_run):
    ck = _step(pp2_run, 2)
    assert ck.world_size == 2 and ck.config["layout"] == {"world_size": 2, "dp": 1, "pp": 2, "tp": 1}
    files = set(ck.manifest["files"])
    for r in (0, 1):
        assert {f"model.rank{r:05d}.safetensors", f"optim.rank{r:05d}.safetensors",
                f"state.rank{r:05d}.json"} <= files
    from ringloom.checkpoint import load_safetensors
    names0 = set(load_safetensors(os.path.join(ck.path, "model.rank00000.safetensors"))[0])
    names1 = set(load_safetensors(os.path.join(ck.path, "model.rank00001.safetensors"))[0])
    assert any(n.startswith("blocks.0.") for n in names0) and not any(n.startswith("blocks.0.") for n in names1)
    assert "head.norm.weight" in names1 and "head.norm.weight" not in names0


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_same_layout_resume_is_bit_exact(runs, tmp_path, layout):
    base = runs(layout)
    out = str(tmp_path / "resumed")
    _resume_from(_step(base, 2).path, out)
    _train(out, LAYOUTS[layout], "--resume")
    want, got = _losses(base), _losses(out)
    assert sorted(got) == [3, 4]  # it did start from the checkpoint
    assert [got[s] for s in (3, 4)] == [want[s] for s in (3, 4)]
    a, b = _step(base, 4), _step(out, 4)
    for x, y in ((a.model_state(), b.model_state()), (a.optim_state(), b.optim_state())):
        assert sorted(x) == sorted(y)
        for k in x:
            assert np.array_equal(x[k], y[k]), k


def test_zero_checkpoint_is_whole(runs):
    """ZeRO's sharded moments are saved gathered, by parameter name, like AdamW's."""
    ck = _step(runs("dp2-zero"), 2)
    opt = ck.optim_state()
    weights = ck.model_state()
    assert set(opt) == {"step"} | {f"{k}.{n}" for n in weights for k in ("m", "v")}
    assert all(opt[f"v.{n}"].shape == w.shape for n, w in weights.items())
    assert all(np.any(opt[f"v.{n}"] > 0) for n in weights if not n.endswith("bias"))
    assert {"model.rank00000.safetensors", "optim.rank00000.safetensors", "state.rank00001.json"} <= \
        set(ck.manifest["files"]) and "model.rank00001.safetensors" not in ck.manifest["files"]


@pytest.mark.parametrize("layout,n", [([], 1), (DP2, 2), (ZERO, 2), (ZERO3, 2)],
                         ids=["single", "dp2", "dp2-zero", "dp2-zero3"])
def test_resume_under_another_layout(pp2_run, tmp_path, layout, n):
    _check_resume_elsewhere(pp2_run, tmp_path, layout, n)


@pytest.mark.parametrize("layout,n", [([], 1), (["--dp", "4", "--micro-batches", "2", "--zero", "3"], 4)],
                         ids=["single", "dp4-zero3"])
def test_zero3_checkpoint_resumes_at_another_world_size(runs, tmp_path, layout, n):
    _check_resume_elsewhere(runs("dp2-zero3"), tmp_path, layout, n)


def _check_resume_elsewhere(base: str, tmp_path, layout: list[str], n: int) -> None:
    out = str(tmp_path / "other")
    _resume_from(_step(base, 2).path, out)
    _train(out, layout, "--resume", n=n)
    pp2_run = base
    want, got = _losses(pp2_run), _losses(out)
    assert sorted(got) == [3, 4]
    np.testing.assert_allclose([got[s] for s in (3, 4)], [want[s] for s in (3, 4)], rtol=1e-5)
    a, b = _step(pp2_run, 4).model_state(), _step(out, 4).model_state()
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_killed_rank_restarts_and_resumes(pp2_run, tmp_path):
    """launch --max-restarts 1: rank 1 is SIGKILLed after step 3 (the newest checkpoint is
    step 2); the launcher ends rank 0, restarts the group, `--resume` picks step 2 up, and
    the run ends with the weights of the run that was never killed, bit for bit."""
    out = str(tmp_path / "killed")
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, "-m", "ringloom", "launch", "-n", "2", "--max-restarts", "1",
           os.path.join(here, "kill_script.py"), "1", "3", *COMMON, *PP2, "--resume", "--out", out]
    res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    # Rank 0 may notice its dead peer (a closed connection) and fail before the launcher polls rank 1.
    assert "exited with code" in res.stderr and "restarting the group (1/1)" in res.stderr
    with open(os.path.join(out, "steps.rank1.txt")) as f:
        ran = [tuple(map(int, line.split())) for line in f]
    assert ran == [(0, 1), (0, 2), (0, 3), (1, 3), (1, 4)]  # the restart continued after step 2
    want, got = _losses(pp2_run), _losses(out)
    assert got == want  # steps 1-4 once each, the same losses
    a, b = _step(pp2_run, 4), _step(out, 4)
    for x, y in ((a.model_state(), b.model_state()), (a.optim_state(), b.optim_state())):
        assert sorted(x) == sorted(y)
        for k in x:
            assert np.array_equal(x[k], y[k]), k
