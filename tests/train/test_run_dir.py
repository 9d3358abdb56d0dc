"""A run directory is never overwritten by accident, and a resumed run never mixes with
another: `--out` holding a run needs --resume or --overwrite; --overwrite deletes the old
run's entries (only those) before anything is written; numeric options are finite and in
range and the prompt is UTF-8, checked before any work."""
from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringloom.train.config import TrainConfig
from ringloom.train.metrics import read_metrics
from ringloom.train.run_dir import RUN_ENTRIES, check_dataset_dir, check_run_dir
from ringloom.train.trainer import run_training


def _snapshot(out: str) -> dict[str, bytes]:
    files = {}
    for dirpath, _, names in os.walk(out):
        for n in names:
            p = os.path.join(dirpath, n)
            files[os.path.relpath(p, out)] = open(p, "rb").read()
    return files


def test_existing_run_is_refused_and_kept(train_config):
    cfg = train_config(save_every=3)
    run_training(cfg)
    before = _snapshot(cfg.out)
    with pytest.raises(ValueError, match="already holds a run .*pass --resume to continue it, --overwrite"):
        run_training(train_config(steps=4, seed=12))
    assert _snapshot(cfg.out) == before


def test_overwrite_replaces_only_the_old_run(train_config):
    cfg = train_config(save_every=3)
    run_training(cfg)
    notes = os.path.join(cfg.out, "notes.txt")
    open(notes, "w").write("mine")
    run_training(train_config(steps=4, save_every=2, seed=12, overwrite=True))
    assert open(notes).read() == "mine"
    steps = sorted(os.listdir(os.path.join(cfg.out, "checkpoints")))
    assert steps == ["latest", "step_00000002", "step_00000004"]   # none of the old run's
    assert [r["step"] for r in read_metrics(cfg.out)] == [1, 2, 3, 4]


def test_resume_after_overwrite_continues_the_new_run_only(train_config):
    # The old run (7 steps, checkpoints 3, 6, 7) must not be continued, nor its metrics mixed in.
    run_training(train_config(save_every=3))
    new = run_training(train_config(steps=4, save_every=2, seed=12, overwrite=True))
    new_metrics = read_metrics(train_config().out)
    run_training(train_config(steps=6, save_every=2, seed=12, resume="latest"))
    metrics = read_metrics(train_config().out)
    assert [r["step"] for r in metrics] == [1, 2, 3, 4, 5, 6]
    assert metrics[:4] == new_metrics
    assert math.isfinite(new["loss"])


def test_overwrite_with_resume_of_the_same_run_is_refused(train_config):
    run_training(train_config(save_every=3))
    with pytest.raises(ValueError, match="--overwrite would delete the run"):
        run_training(train_config(overwrite=True, resume="latest"))


def test_resume_of_another_runs_checkpoint_into_a_run_needs_overwrite(train_config, tmp_path):
    a = run_training(train_config(out=str(tmp_path / "a"), save_every=3, steps=3))
    assert a
    run_training(train_config(out=str(tmp_path / "b"), steps=2))
    ckpt = str(tmp_path / "a" / "checkpoints" / "step_00000003")
    with pytest.raises(ValueError, match="holds another run .* than the checkpoint --resume"):
        run_training(train_config(out=str(tmp_path / "b"), resume=ckpt, steps=5))
    run_training(train_config(out=str(tmp_path / "b"), resume=ckpt, steps=5, overwrite=True))
    assert [r["step"] for r in read_metrics(str(tmp_path / "b"))] == [4, 5]


def test_out_that_is_a_file_or_cannot_be_made(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep")
    with pytest.raises(ValueError, match="--out .*file: exists and is not a directory"):
        check_run_dir(str(f), None, False)
    from ringloom.train.run_dir import prepare_run_dir
    with pytest.raises(ValueError, match="cannot create the directory \\(File name too long\\)"):
        prepare_run_dir(str(tmp_path / ("x" * 300)), None, False)
    with pytest.raises(ValueError, match="cannot create the directory"):
        prepare_run_dir(str(f / "sub"), None, False)
    assert f.read_text() == "keep"


@pytest.mark.parametrize("entry", RUN_ENTRIES)
def test_every_run_entry_counts_as_a_run(tmp_path, entry):
    (tmp_path / entry).mkdir() if entry in ("checkpoints", "tb") else (tmp_path / entry).write_text("x")
    with pytest.raises(ValueError, match="already holds a run"):
        check_run_dir(str(tmp_path), None, False)
    assert check_run_dir(str(tmp_path), "latest", False) == []
    assert check_run_dir(str(tmp_path), None, True) == [entry]


def test_dataset_dir_of_something_else_is_refused(tmp_path):
    (tmp_path / "train.bin").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="holds train.bin but no dataset prepared by ringloom"):
        check_dataset_dir(str(tmp_path), False)
    check_dataset_dir(str(tmp_path), True)
    (tmp_path / "meta.json").write_text(json.dumps({"format": 1, "key": "k"}))
    check_dataset_dir(str(tmp_path), False)


# ---------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("field,value,needle", [
    ("lr", math.inf, "lr \\(--lr\\) must be a finite number > 0.0, got inf"),
    ("lr", math.nan, "lr \\(--lr\\) must be a finite number"),
    ("min_lr", -1e-3, "min_lr \\(--min-lr\\) must be"),
    ("weight_decay", math.inf, "weight_decay \\(--weight-decay\\)"),
    ("grad_clip", -math.inf, "grad_clip \\(--grad-clip\\)"),
    ("temperature", math.nan, "temperature \\(--temperature\\)"),
    ("val_fraction", 0.9, "val_fraction \\(--val-fraction\\) must be a finite number > 0.0 and <= 0.5"),
    ("bucket_mb", 0.0, "bucket_mb \\(--bucket-mb\\)"),
    ("peak_tflops", math.inf, "peak_tflops \\(--peak-tflops\\)"),
    ("seed", -1, "seed \\(--seed\\) must be an integer >= 0"),
    ("threads", 5000, "threads \\(--threads\\) must be an integer >= 0 and <= 1024"),
    ("steps", 2.5, "steps \\(--steps\\) must be an integer"),
    ("local_sgd", -2, "local_sgd \\(--local-sgd\\)"),
    ("batch_size", True, "batch_size \\(--batch-size\\)"),
    ("prompt", "caf\udce9", "prompt \\(--prompt\\) is not valid UTF-8"),
])
def test_bad_numbers_and_prompt_are_refused(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**{field: value})


def test_bad_prompt_fails_before_training(train_config, monkeypatch):
    import ringloom.train.trainer as trainer
    monkeypatch.setattr(trainer, "Trainer", lambda cfg: pytest.fail("training started"))
    with pytest.raises(ValueError, match="--prompt"):
        run_training(train_config(prompt="\udcff\udcfe"))


_NUMERIC = {"steps", "batch_size", "seq_len", "warmup", "seed", "eval_every", "eval_batches", "log_every",
            "threads", "lr", "min_lr", "weight_decay", "grad_clip", "val_fraction", "temperature", "top_k",
            "bucket_mb", "peak_tflops", "sample_len", "keep_checkpoints", "save_every", "ps_staleness"}
_values = st.one_of(st.integers(-3, 2**64), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=3), st.none())


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(sorted(_NUMERIC)), _values, max_size=4))
def test_random_numbers_are_accepted_only_when_valid(fields):
    """A TrainConfig either builds with every float finite, or raises ValueError; no other
    exception, no infinite or NaN value gets through."""
    try:
        cfg = TrainConfig(**fields)
    except ValueError:
        return
    for name in _NUMERIC:
        v = getattr(cfg, name)
        assert v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)), name


def test_overwrite_that_fails_early_keeps_the_old_run(train_config, tmp_path):
    cfg = train_config(save_every=3)
    run_training(cfg)
    before = _snapshot(cfg.out)
    with pytest.raises(FileNotFoundError, match="data path not found"):
        run_training(train_config(data=[str(tmp_path / "missing.txt")], overwrite=True))
    assert _snapshot(cfg.out) == before


def test_trace_path_that_cannot_be_written_fails_before_training(train_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="--trace .*file: exists and is not a directory"):
        run_training(train_config(trace=str(blocker / "trace.json"), micro_batches=1))
    with pytest.raises(ValueError, match="--trace .*is a directory"):
        run_training(train_config(trace=str(tmp_path), micro_batches=1))
