"""`ringloom train --param-servers` through the launcher (train/ps_training.py):

- synchronous PS (2 workers + 1 server) gives the losses, gradient norms, val losses and
  final weights of all-reduce data parallel over the same 2 workers, to fp32 tolerance;
  only worker 0 logs, and servers write nothing but their checkpoint state files;
- a PS checkpoint resumes under PS bit for bit, and under plain data parallel; a data-
  parallel checkpoint resumes under PS with 2 servers (each loads its slice of the moments);
- asynchronous PS with staleness 2 trains to within MARGIN of synchronous PS, and its
  servers report that no worker ran more than 2 steps ahead;
- option combinations PS cannot honour fail with one line before any process work.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import child_env  # noqa: E402

from ringloom.checkpoint.manager import open_checkpoint  # noqa: E402
from ringloom.checkpoint.safetensors import load_safetensors  # noqa: E402

pytestmark = pytest.mark.multiproc

REL = 1e-5
STEPS = 6
COMMON = ["--preset", "tiny", "--batch-size", "8", "--seq-len", "24", "--corpus-bytes", "200000",
          "--eval-batches", "2", "--log-every", "1", "--no-progress", "--sample-len", "0", "--warmup", "0",
          "--no-tensorboard", "--threads", "1", "--keep-checkpoints", "0"]
EXACT = [*COMMON, "--steps", str(STEPS), "--lr", "1e-3", "--eval-every", "3", "--save-every", "3"]
# Convergence: a higher lr and more steps, so that the loss falls far from its start.
# async must keep at least half of sync's loss reduction in val loss:
#   val_async <= val_sync + MARGIN * (initial loss - val_sync).
# Measured (2 workers, staleness 2, 30 steps): initial 5.33, sync val 3.26, async 3.38-3.43 (7 runs).
CONV = [*COMMON, "--steps", "30", "--lr", "1e-2", "--eval-every", "0"]
MARGIN = 0.5


def _train(out: str, n: int, args: list[str], *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ringloom", "launch", "-n", str(n), "-m", "ringloom", "train", *args, *extra,
           "--out", out]
    res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    return res


def _metrics(out: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _by_step(out: str, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in _metrics(out) if key in r}


def _weights(out: str) -> dict[str, np.ndarray]:
    return load_safetensors(os.path.join(out, "model.safetensors"))[0]


def _assert_close_weights(got: dict, want: dict, rel: float, what: str) -> None:
    assert sorted(got) == sorted(want), what
    for k in want:
        a, b = got[k].astype(np.float64), want[k].astype(np.float64)
        err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
        assert np.isfinite(a).all() and err <= rel, f"{what}: {k} differs by {err:.2e}"


def _ckpt(out: str, step: int) -> str:
    return os.path.join(out, "checkpoints", f"step_{step:08d}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ps_cli")
    dp, ps = str(root / "dp"), str(root / "ps")
    _train(dp, 2, EXACT)
    _train(ps, 3, EXACT, "--param-servers", "1")
    return {"dp": dp, "ps": ps, "root": root}


def test_sync_ps_equals_data_parallel(runs):
    dp, ps = runs["dp"], runs["ps"]
    for key in ("loss", "grad_norm", "val_loss"):
        a, b = _by_step(ps, key), _by_step(dp, key)
        assert sorted(a) == sorted(b) and len(a) == (STEPS if key != "val_loss" else 2), key
        np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], rtol=REL, err_msg=key)
    assert _by_step(ps, "loss")[STEPS] < _by_step(ps, "loss")[1] - 0.3   # it trained
    _assert_close_weights(_weights(ps), _weights(dp), REL, "PS vs all-reduce")
    # Worker 0 alone logs, one line per step; it pushes the gradient and pulls the weights
    # (4 bytes each way per parameter), where all-reduce hands its collectives ~4 per parameter.
    n = sum(v.size for v in _weights(ps).values())
    assert [r["step"] for r in _metrics(ps)] == list(range(1, STEPS + 1))
    assert {r["comm_bytes"] for r in _metrics(ps)} == {8 * n}
    assert [r["ps_version"] for r in _metrics(ps)] == list(range(1, STEPS + 1))
    with open(os.path.join(ps, "summary.json")) as f:
        summary = json.load(f)
    assert (summary["param_servers"], summary["workers"], summary["ps_mode"]) == (1, 2, "sync")


def test_servers_write_only_their_state(runs):
    ck = open_checkpoint(_ckpt(runs["ps"], 3))
    files = sorted(ck.manifest["files"])
    assert files == ["config.json", "model.rank00000.safetensors", "optim.rank00000.safetensors",
                     "state.rank00000.json", "state.rank00001.json", "state.rank00002.json"]
    server = ck.rank_state(2)
    assert server["role"] == "server" and "loader" not in server
    assert server["step"] == 3 and server["optimizer_step"] == 3
    # The servers' AdamW state reached worker 0's files whole, by parameter name.
    optim = ck.optim_state()
    assert optim["step"] == 3
    for name, w in ck.model_state().items():
        assert optim[f"m.{name}"].shape == w.shape and np.abs(optim[f"v.{name}"]).max() > 0, name


def test_ps_resume_is_exact(runs, tmp_path):
    out = str(tmp_path / "resumed")
    os.makedirs(os.path.join(out, "checkpoints"))
    shutil.copytree(_ckpt(runs["ps"], 3), _ckpt(out, 3))
    _train(out, 3, EXACT, "--param-servers", "1", "--resume")
    want = _by_step(runs["ps"], "loss")
    got = _by_step(out, "loss")
    assert sorted(got) == [4, 5, 6]
    assert all(got[k] == want[k] for k in got), (got, want)
    for k, v in _weights(runs["ps"]).items():
        assert np.array_equal(_weights(out)[k], v), k


def test_ps_checkpoint_resumes_under_data_parallel(runs, tmp_path):
    out = str(tmp_path / "dp_from_ps")
    _train(out, 2, EXACT, "--resume", _ckpt(runs["ps"], 3))
    want, got = _by_step(runs["ps"], "loss"), _by_step(out, "loss")
    assert sorted(got) == [4, 5, 6]
    np.testing.assert_allclose([got[k] for k in (4, 5, 6)], [want[k] for k in (4, 5, 6)], rtol=REL)
    _assert_close_weights(_weights(out), _weights(runs["ps"]), REL, "DP resumed from PS")


def test_dp_checkpoint_resumes_under_two_servers(runs, tmp_path):
    out = str(tmp_path / "ps2_from_dp")
    _train(out, 4, EXACT, "--param-servers", "2", "--resume", _ckpt(runs["dp"], 3))
    want, got = _by_step(runs["dp"], "loss"), _by_step(out, "loss")
    assert sorted(got) == [4, 5, 6]
    np.testing.assert_allclose([got[k] for k in (4, 5, 6)], [want[k] for k in (4, 5, 6)], rtol=REL)
    _assert_close_weights(_weights(out), _weights(runs["dp"]), REL, "2 servers resumed from DP")


def test_async_ps_converges(tmp_path):
    sync, asyn = str(tmp_path / "sync"), str(tmp_path / "async")
    _train(sync, 3, CONV, "--param-servers", "1")
    res = _train(asyn, 3, CONV, "--param-servers", "1", "--ps-mode", "async", "--ps-staleness", "2")
    lead = re.search(r"parameter server rank 2 served (\d+) rounds \(async; max lead (\d+) steps", res.stderr)
    assert lead, res.stderr[-3000:]
    assert int(lead.group(1)) == 30 and int(lead.group(2)) <= 2
    initial = _by_step(sync, "loss")[1]
    v_sync, v_async = _by_step(sync, "val_loss")[30], _by_step(asyn, "val_loss")[30]
    assert v_sync < initial - 1.5, "the synchronous run did not learn"
    assert np.all(np.isfinite(list(_by_step(asyn, "loss").values())))
    assert v_async <= v_sync + MARGIN * (initial - v_sync), (initial, v_sync, v_async)
    # The end-of-run checkpoint holds the servers' final state: 30 rounds.
    ck = open_checkpoint(_ckpt(asyn, 30))
    assert ck.optim_state()["step"] == 30 and ck.rank_state(2)["step"] == 30


@pytest.mark.parametrize("world,argv,needle", [
    (1, ["--param-servers", "1"], "--param-servers 1 needs at least 2 ranks"),
    (2, ["--param-servers", "2"], "--param-servers 2 needs at least 3 ranks"),
    (4, ["--param-servers", "1", "--pp", "2"], "cannot be combined with --pp"),
    (3, ["--param-servers", "1", "--zero"], "cannot be combined with --zero"),
    (3, ["--param-servers", "1", "--cuda-graph"], "cannot be combined with --cuda-graph"),
    (3, ["--param-servers", "1", "--local-sgd", "2"], "cannot be combined with --local-sgd"),
    (3, ["--param-servers", "1", "--compression", "topk:0.1"], "cannot be combined with --compression"),
    (3, ["--param-servers", "1", "--on-nonfinite", "skip"], "cannot be combined with --on-nonfinite skip"),
    (3, ["--param-servers", "1", "--ps-staleness", "2"], "--ps-staleness applies to --ps-mode async"),
    (3, ["--param-servers", "1", "--ps-mode", "async", "--save-every", "2"], "--save-every with --ps-mode async"),
    (3, ["--ps-mode", "async"], "--ps-mode/--ps-staleness need --param-servers"),
    (3, ["--param-servers", "1", "--batch-size", "9"], "--batch-size 9 must be divisible by the 2 workers"),
])
def test_bad_combinations_fail_with_one_line(monkeypatch, capsys, tmp_path, world, argv, needle):
    from ringloom.cli import main

    monkeypatch.setenv("WORLD_SIZE", str(world))
    assert main(["train", "--steps", "2", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ringloom train: error: ") and needle in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "x")   # nothing was started or written
