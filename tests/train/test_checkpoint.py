"""Checkpoints: a run interrupted and resumed equals, bit for bit, one that never stopped;
incomplete, corrupted and mismatched checkpoints are refused with a message saying why."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from ringloom.checkpoint import load_safetensors
from ringloom.checkpoint.manager import (CheckpointError, finalize, latest_complete, list_step_dirs,
                                         open_checkpoint, resolve_resume, write_rank_files)
from ringloom.train.metrics import read_metrics
from ringloom.train.trainer import Trainer, run_training


class Crash(RuntimeError):
    pass


def _crash_after(monkeypatch, step: int) -> None:
    """Make Trainer.train_step raise right after finishing ``step`` (a killed process)."""
    original = Trainer.train_step

    def train_step(self):
        loss = original(self)
        if self.step == step:
            raise Crash(f"simulated failure after step {step}")
        return loss

    monkeypatch.setattr(Trainer, "train_step", train_step)


def _losses(out: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out)]


def _final(out: str, step: int):
    ck = open_checkpoint(os.path.join(out, "checkpoints", f"step_{step:08d}"))
    return ck.model_state(), ck.optim_state(), ck.rank_state()


def _assert_same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k  # bit for bit
        else:
            assert a[k] == b[k], k


@pytest.fixture
def uninterrupted(train_config, tmp_path):
    cfg = train_config(out=str(tmp_path / "straight"), save_every=3)
    run_training(cfg)
    return cfg


@pytest.mark.parametrize("crash_at", [5, 6])
def test_resume_is_bit_exact(uninterrupted, train_config, tmp_path, monkeypatch, crash_at):
    cfg = train_config(out=str(tmp_path / "broken"), save_every=3, keep_checkpoints=2)
    with monkeypatch.context() as m:
        _crash_after(m, crash_at)
        with pytest.raises(Crash):
            run_training(cfg)
    # The crash came inside step crash_at, before its log line and checkpoint: the newest
    # complete checkpoint is step 3, and metrics.jsonl has lines past it that resume drops.
    assert latest_complete(os.path.join(cfg.out, "checkpoints")).endswith("step_00000003")
    assert len(read_metrics(cfg.out)) == crash_at - 1

    resumed = train_config(out=cfg.out, save_every=3, keep_checkpoints=2, resume="latest")
    steps_run = []
    original = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self: (steps_run.append(self.step + 1), original(self))[1])
    run_training(resumed)
    assert steps_run == [4, 5, 6, 7]  # it continued from the step-3 checkpoint

    straight = _losses(uninterrupted.out)
    assert [s for s, _ in straight] == list(range(1, 8))
    assert _losses(cfg.out) == straight  # every step once, and the same float losses
    a_model, a_opt, a_state = _final(uninterrupted.out, 7)
    b_model, b_opt, b_state = _final(cfg.out, 7)
    _assert_same_state(a_model, b_model)
    _assert_same_state(a_opt, b_opt)
    assert a_state["loader"] == b_state["loader"] and a_state["optimizer_step"] == b_state["optimizer_step"] == 7
    fa, _ = load_safetensors(os.path.join(uninterrupted.out, "model.safetensors"))
    fb, _ = load_safetensors(os.path.join(cfg.out, "model.safetensors"))
    _assert_same_state(fa, fb)
    # keep_checkpoints=2: only the two newest complete checkpoints remain
    assert [s for s, _ in list_step_dirs(os.path.join(cfg.out, "checkpoints"))] == [6, 7]
    root = os.path.join(cfg.out, "checkpoints")
    assert open(os.path.join(root, "latest")).read().strip() == "step_00000007"


def test_checkpoint_files_and_manifest(uninterrupted):
    root = os.path.join(uninterrupted.out, "checkpoints")
    assert [s for s, _ in list_step_dirs(root)] == [3, 6, 7]  # every 3 steps and the end; keep 3
    ck = open_checkpoint(os.path.join(root, "step_00000006"))
    assert set(ck.manifest["files"]) == {"model.rank00000.safetensors", "optim.rank00000.safetensors",
                                         "state.rank00000.json", "config.json"}
    assert ck.step == 6 and ck.world_size == 1
    assert ck.config["model"]["arch"] == "gpt2" and ck.config["train"]["batch_size"] == 3
    st = ck.rank_state()
    assert st["step"] == 6 and st["optimizer_step"] == 6 and st["loader"]["index"] == 18
    assert {"python", "numpy"} <= set(st["rng"])
    # The weights are plain safetensors that other tools can read.
    weights, meta = load_safetensors(os.path.join(ck.path, "model.rank00000.safetensors"))
    assert "embedding.wte.weight" in weights and meta["kind"] == "model"


def test_resume_latest_skips_incomplete(uninterrupted, train_config):
    root = os.path.join(uninterrupted.out, "checkpoints")
    # A save killed before its manifest: step 9 exists but is incomplete.
    shutil.copytree(os.path.join(root, "step_00000007"), os.path.join(root, "step_00000009"))
    os.remove(os.path.join(root, "step_00000009", "manifest.json"))
    assert resolve_resume("latest", root).endswith("step_00000007")
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        open_checkpoint(os.path.join(root, "step_00000009"))
    # A run's --out directory as the resume path means its newest complete checkpoint.
    assert resolve_resume(uninterrupted.out, root).endswith("step_00000007")


def test_resume_latest_without_checkpoints_starts_fresh(train_config, tmp_path):
    cfg = train_config(out=str(tmp_path / "fresh"), steps=2, resume="latest")
    summary = run_training(cfg)
    assert [s for s, _ in _losses(cfg.out)] == [1, 2] and np.isfinite(summary["loss"])


def _corrupt_byte(path: str, offset_from_end: int = 5) -> None:
    with open(path, "r+b") as f:
        f.seek(-offset_from_end, os.SEEK_END)
        b = f.read(1)
        f.seek(-offset_from_end, os.SEEK_END)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("damage,message", [
    ("flip", "SHA-256 checksum mismatch"),
    ("truncate", "truncated or resized"),
    ("delete", "is missing"),
    ("manifest", "cannot read the manifest"),
])
def test_damaged_checkpoint_is_refused(uninterrupted, train_config, damage, message):
    ck = os.path.join(uninterrupted.out, "checkpoints", "step_00000006")
    target = os.path.join(ck, "optim.rank00000.safetensors")
    if damage == "flip":
        _corrupt_byte(target)
    elif damage == "truncate":
        with open(target, "r+b") as f:
            f.truncate(os.path.getsize(target) - 7)
    elif damage == "delete":
        os.remove(target)
    else:
        with open(os.path.join(ck, "manifest.json"), "r+b") as f:
            f.truncate(40)
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(ck)
    with pytest.raises(CheckpointError, match=message):
        run_training(train_config(out=uninterrupted.out, save_every=3, resume=ck))


def test_other_model_is_refused(uninterrupted, train_config, tmp_path):
    ck = os.path.join(uninterrupted.out, "checkpoints", "step_00000007")
    with pytest.raises(CheckpointError, match=r"another model \(arch: checkpoint 'gpt2', this run 'llama'"):
        run_training(train_config(preset="llama-tiny", out=str(tmp_path / "x"), resume=ck))
    with pytest.raises(CheckpointError, match="batch_size: checkpoint 3, this run 6"):
        run_training(train_config(batch_size=6, out=str(tmp_path / "y"), resume=ck))


def _rewrite_model(ck_dir: str, edit) -> str:
    """A copy of a checkpoint whose model tensors went through ``edit``, with a consistent
    manifest: only the content check (names, shapes) can catch it."""
    ck = open_checkpoint(ck_dir)
    new_root = ck_dir + "_edited"
    step_dir = os.path.join(new_root, os.path.basename(ck_dir))
    state = edit(ck.model_state())
    write_rank_files(step_dir, 0, state, ck.optim_state(), ck.rank_state())
    finalize(new_root, ck.step, ck.config, world_size=1, keep=0)
    return step_dir


@pytest.mark.parametrize("edit,message", [
    (lambda s: {k: v for k, v in s.items() if k != "blocks.2.attn.proj.weight"}, "missing keys.*blocks.2.attn.proj"),
    (lambda s: {**s, "blocks.1.mlp.fc.bias": s["blocks.1.mlp.fc.bias"][:-3]}, "shape mismatches.*blocks.1.mlp.fc.bias"),
    (lambda s: {**s, "blocks.0.extra.weight": np.zeros(3, np.float32)}, "unexpected keys.*blocks.0.extra"),
])
def test_wrong_tensors_are_refused(uninterrupted, train_config, tmp_path, edit, message):
    ck = _rewrite_model(os.path.join(uninterrupted.out, "checkpoints", "step_00000007"), edit)
    assert open_checkpoint(ck).step == 7  # the files themselves are intact
    with pytest.raises(CheckpointError, match=message):
        run_training(train_config(out=str(tmp_path / "z"), resume=ck))


def test_resume_path_errors(train_config, tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        run_training(train_config(resume=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        run_training(train_config(resume=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="need an output directory"):
        run_training(train_config(out=None, save_every=2))


def test_rank_files_merge_and_finalize_checks(tmp_path, rng):
    """Two ranks each holding half of the tensors (a pipeline split) merge by name on load;
    finalize refuses to mark a checkpoint complete while a rank's files are missing."""
    root = str(tmp_path / "ckpts")
    d = os.path.join(root, "step_00000005")
    names = [f"blocks.{i}.w" for i in range(5)]
    tensors = {n: rng.standard_normal((3, 1 + i)).astype(np.float32) for i, n in enumerate(names)}
    opt = {f"m.{n}": v * 2 for n, v in tensors.items()}
    write_rank_files(d, 0, {n: tensors[n] for n in names[:2]}, {"step": 5, **{f"m.{n}": opt[f"m.{n}"]
                                                                            for n in names[:2]}}, {"step": 5})
    with pytest.raises(CheckpointError, match="rank 1 of 2 wrote no state file"):
        finalize(root, 5, {"model": {}}, world_size=2)
    assert latest_complete(root) is None
    write_rank_files(d, 1, {n: tensors[n] for n in names[2:]}, {"step": 5, **{f"m.{n}": opt[f"m.{n}"]
                                                                            for n in names[2:]}}, {"step": 5})
    finalize(root, 5, {"model": {}}, world_size=2)
    ck = open_checkpoint(latest_complete(root))
    _assert_same_state(ck.model_state(), tensors)
    _assert_same_state(ck.optim_state(), {"step": 5, **opt})
    assert ck.rank_state(1) == {"step": 5} and ck.rank_state(7) == {"step": 5}
    manifest = json.load(open(os.path.join(d, "manifest.json")))
    assert len(manifest["files"]) == 7  # 2 ranks x (model, optim, state) + config.json
