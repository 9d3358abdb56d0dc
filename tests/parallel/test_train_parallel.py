"""The trainer with parallel layouts: the CLI through `ringloom launch` and run_training
from a launched Python script log the same losses as one process (--batch-size is the
global batch whatever the layout), rank 0 alone writes metrics and the gathered model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import child_env  # noqa: E402

from ringloom.train.config import TrainConfig
from ringloom.train.options import launched_world, validate

HERE = os.path.dirname(os.path.abspath(__file__))
COMMON = ["--preset", "tiny", "--steps", "3", "--batch-size", "8", "--seq-len", "24", "--corpus-bytes", "200000",
          "--eval-every", "0", "--eval-batches", "2", "--log-every", "1", "--no-progress", "--sample-len", "0",
          "--lr", "1e-3", "--warmup", "0"]




def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]


def _records(out: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> list[dict]:
    out = str(tmp_path_factory.mktemp("single") / "run")
    _run([sys.executable, "-m", "ringloom", "train", *COMMON, "--out", out])
    return _records(out)


@pytest.mark.multiproc
@pytest.mark.parametrize("n,args", [(2, ["--pp", "2", "--schedule", "zb", "--micro-batches", "2"]),
                                    (4, ["--dp", "2", "--pp", "2", "--schedule", "1f1b", "--micro-batches", "2",
                                         "--zero", "--bucket-mb", "0.05"])],
                         ids=["pp2-zb", "dp2xpp2-1f1b-zero"])
def test_cli_layouts_match_single_process(single, tmp_path, n, args):
    out = str(tmp_path / "run")
    trace = str(tmp_path / "trace.json")
    _run([sys.executable, "-m", "ringloom", "launch", "-n", str(n), "-m", "ringloom", "train", *COMMON, *args,
          "--out", out, "--trace", trace])
    got = _records(out)
    assert [r["step"] for r in got] == [r["step"] for r in single]
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in single], rtol=1e-5)
    np.testing.assert_allclose(got[-1]["val_loss"], single[-1]["val_loss"], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in got], [r["grad_norm"] for r in single], rtol=1e-4)
    # The gathered model is complete and loadable.
    from ringloom.train.model_io import load_model
    model, _ = load_model(out)
    assert model.num_parameters() > 0
    with open(trace) as f:
        t = json.load(f)
    assert {e["pid"] for e in t["traceEvents"]} == set(range(n))
    assert any(e["name"].startswith("F") and e.get("ph") == "X" for e in t["traceEvents"])
    bubbles = t["otherData"]["bubble_fraction"]
    assert len(bubbles) == n and all(0.0 <= b < 1.0 for b in bubbles.values())


@pytest.mark.multiproc
def test_python_run_training_pp2(single, tmp_path):
    out = str(tmp_path / "run")
    _run([sys.executable, "-m", "ringloom.launch", "-n", "2", os.path.join(HERE, "train_script.py"), out, "1", "2",
          "gpipe", "4"])
    got = _records(out)
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in single], rtol=1e-5)


def _layout(cfg):
    return tuple(validate(cfg, launched_world()))


def test_layout_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert _layout(TrainConfig(pp=2, batch_size=8)) == (4, 2, 2)
    with pytest.raises(ValueError, match="--pp 3 does not divide the world size 4"):
        _layout(TrainConfig(pp=3))
    with pytest.raises(ValueError, match=r"--dp 4 x --pp 2 = 8 ranks, but the launcher started 4"):
        _layout(TrainConfig(dp=4, pp=2))
    with pytest.raises(ValueError, match="must be divisible by dp x micro-batches = 2 x 3"):
        _layout(TrainConfig(dp=2, pp=2, micro_batches=3, batch_size=8))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _layout(TrainConfig()) == (1, 1, 1)
