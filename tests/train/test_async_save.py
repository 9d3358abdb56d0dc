"""Asynchronous checkpoints (--async-save): the same files as a blocking save, written
while training goes on; a run killed during a background write resumes from the previous
complete checkpoint; an error in the writer stops the run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from ringloom.checkpoint.async_save import AsyncCheckpointWriter
from ringloom.checkpoint.manager import CheckpointError, latest_complete, list_step_dirs, open_checkpoint
from ringloom.train.config import TrainConfig
from ringloom.train.trainer import run_training

HERE = os.path.dirname(os.path.abspath(__file__))


def _cfg(out, **kw):
    base = dict(preset="tiny", steps=6, batch_size=4, seq_len=16, eval_every=0, eval_batches=1, log_every=2,
                sample_len=0, progress=False, tensorboard=False, corpus_bytes=60_000, out=str(out), save_every=2,
                threads=1, lr_schedule="constant", warmup=0)   # the schedule does not depend on --steps
    base.update(kw)
    return TrainConfig(**base)


def test_async_equals_blocking(tmp_path):
    """Same checkpoints (every tensor and state file) and the same losses either way."""
    runs = {}
    for name, flag in (("blocking", False), ("async", True)):
        run_training(_cfg(tmp_path / name, async_save=flag))
        runs[name] = [d for _, d in list_step_dirs(str(tmp_path / name / "checkpoints"))]
    assert [os.path.basename(d) for d in runs["async"]] == [os.path.basename(d) for d in runs["blocking"]]
    assert len(runs["async"]) == 3   # steps 2, 4, 6 (keep 3)
    for a, b in zip(runs["blocking"], runs["async"]):
        ca, cb = open_checkpoint(a), open_checkpoint(b)
        assert sorted(ca.manifest["files"]) == sorted(cb.manifest["files"])
        ma, mb = ca.model_state(), cb.model_state()
        oa, ob = ca.optim_state(), cb.optim_state()
        assert all(np.array_equal(ma[k], mb[k]) for k in ma)
        assert all(np.array_equal(oa[k], ob[k]) for k in oa if isinstance(oa[k], np.ndarray))
        assert ca.rank_state(0)["loader"] == cb.rank_state(0)["loader"]


def test_resume_from_async_checkpoint_continues_exactly(tmp_path):
    full = run_training(_cfg(tmp_path / "full", steps=6, async_save=True))
    run_training(_cfg(tmp_path / "cut", steps=4, async_save=True))
    resumed = run_training(_cfg(tmp_path / "cut", steps=6, async_save=True, resume="latest"))
    assert resumed["loss"] == full["loss"]


def test_writer_error_surfaces_on_next_check_and_at_close():
    w = AsyncCheckpointWriter()
    w.submit("step_1", lambda: (_ for _ in ()).throw(OSError("disk full")))
    w._thread.join(10)
    with pytest.raises(CheckpointError, match="disk full"):
        w.check()
    w.check()   # reported once
    w.submit("step_2", lambda: (_ for _ in ()).throw(OSError("no space")))
    with pytest.raises(CheckpointError, match="step_2.*no space"):
        w.close()


def test_at_most_one_write_in_flight():
    w = AsyncCheckpointWriter()
    gate, log = threading.Event(), []

    def first():
        gate.wait(10)
        log.append("first done")

    w.submit("a", first)
    assert w.in_flight
    threading.Timer(0.2, gate.set).start()
    w.submit("b", lambda: log.append("second ran"))   # waits for the first
    w.close()
    assert log == ["first done", "second ran"]


def test_writer_error_stops_the_run(tmp_path, monkeypatch):
    import ringloom.train.checkpointing as ck

    def broken(*a, **k):
        raise OSError("simulated write failure")

    monkeypatch.setattr(ck, "write_rank_files", broken)
    with pytest.raises(CheckpointError, match="simulated write failure"):
        run_training(_cfg(tmp_path / "r", async_save=True))


CHILD = textwrap.dedent("""
    import os, sys, time
    import ringloom.checkpoint.manager as manager
    from ringloom.checkpoint.atomic import atomic_write
    from ringloom.train.config import TrainConfig
    from ringloom.train.trainer import run_training

    out, marker = sys.argv[1], sys.argv[2]
    real = manager.save_safetensors
    saves = []

    def slow(path, tensors, metadata=None):
        saves.append(path)
        if "step_00000004" not in path:
            return real(path, tensors, metadata=metadata)
        # Half a file on disk, then hang: the parent kills this process here.
        def half(f):
            f.write(b"x" * 4096)
            f.flush()
            open(marker, "w").close()
            time.sleep(120)
        atomic_write(path, half)

    manager.save_safetensors = slow
    run_training(TrainConfig(preset="tiny", steps=8, batch_size=4, seq_len=16, eval_every=0, eval_batches=1,
                             sample_len=0, progress=False, tensorboard=False, corpus_bytes=60_000, out=out,
                             save_every=2, async_save=True, threads=1, lr_schedule="constant", warmup=0))
""")


def test_kill_during_background_write_keeps_previous_checkpoint(tmp_path):
    from ringloom.checkpoint.manager import resolve_resume

    out, marker = tmp_path / "run", tmp_path / "writing"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(
        os.path.abspath(__import__("ringloom").__file__))), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(marker)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the background write never started"
            time.sleep(0.05)
        time.sleep(0.3)   # training goes on meanwhile
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    root = str(out / "checkpoints")
    newest = latest_complete(root)
    assert newest is not None and newest.endswith("step_00000002")
    open_checkpoint(newest)   # complete and consistent
    dirs = dict(list_step_dirs(root))
    assert 4 in dirs and not os.path.exists(os.path.join(dirs[4], "manifest.json"))
    assert resolve_resume("latest", root) == newest
    resumed = run_training(_cfg(out, steps=6, resume="latest", async_save=True))
    straight = run_training(_cfg(tmp_path / "straight", steps=6))
    assert resumed["loss"] == straight["loss"]


def test_host_staging_reuses_its_buffers():
    import ringloom as rl
    from ringloom.tensor import HostStaging

    staging = HostStaging()
    a = rl.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = rl.tensor(np.ones(4, np.float32), dtype="bfloat16")
    with staging.snapshot():
        x, y = staging.copy(a), staging.copy(b)
    first = list(staging._buffers)
    assert np.array_equal(x, np.arange(6).reshape(2, 3)) and y.tolist() == [1, 1, 1, 1]
    assert staging.nbytes == 6 * 4 + 4 * 2
    with staging.snapshot():
        staging.copy(a)
        staging.copy(rl.tensor(np.zeros(5, np.float32)))   # another shape: a new buffer
    assert staging._buffers[0] is first[0] and staging._buffers[1] is not first[1]
    assert np.array_equal(x, np.arange(6).reshape(2, 3))   # views of the reused buffer (same values here)
