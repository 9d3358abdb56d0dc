"""metrics.jsonl: one valid JSON object per line, flushed at once, resumable without
duplicate steps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ringloom.train.metrics import MetricsLogger, read_metrics


def test_lines_and_keys(tmp_path, rng):
    losses = rng.uniform(1, 5, size=7)
    log = MetricsLogger(tmp_path)  # a directory gets metrics.jsonl
    for step, loss in enumerate(losses, 1):
        val = float(loss) + 0.1 if step % 3 == 0 else None
        log.log(step, np.float32(loss), tokens_per_s=1000.0 + step, val_loss=val,
                lr=np.float64(1e-3), grad_norm=np.float32(0.5))
        # flushed: readable while the logger is still open
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == step
    log.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 8))
    for r, loss in zip(records, losses):
        assert {"step", "loss", "tokens_per_s", "lr", "grad_norm"} <= set(r)
        assert r["loss"] == pytest.approx(float(np.float32(loss)))
        assert ("val_loss" in r) == (r["step"] % 3 == 0)
    assert read_metrics(tmp_path) == records


def test_non_finite_is_null(tmp_path):
    with MetricsLogger(tmp_path / "m.jsonl") as log:
        log.log(1, float("nan"), tokens_per_s=float("inf"))
    (rec,) = read_metrics(tmp_path / "m.jsonl")
    assert rec["loss"] is None and rec["tokens_per_s"] is None


def test_resume_truncates_later_steps_and_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path) as log:
        for step in range(1, 11):
            log.log(step, 1.0 / step, tokens_per_s=5.0)
    with open(path, "a") as f:
        f.write('{"step": 11, "lo')  # the job died mid-line
    assert len(read_metrics(path)) == 10
    with MetricsLogger(path, resume_step=6) as log:
        log.log(7, 0.5, tokens_per_s=6.0, val_loss=0.7)
    steps = [r["step"] for r in read_metrics(path)]
    assert steps == [1, 2, 3, 4, 5, 6, 7]
    assert read_metrics(path)[-1]["val_loss"] == 0.7


def test_fresh_run_overwrites(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path) as log:
        log.log(1, 2.0, 1.0)
    with MetricsLogger(path) as log:
        log.log(1, 3.0, 1.0)
    assert [r["loss"] for r in read_metrics(path)] == [3.0]


def test_resume_of_a_non_jsonl_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("this is not json\n")
    with pytest.raises(ValueError, match="metrics.jsonl.*not JSON lines"):
        MetricsLogger(path, resume_step=3)


@pytest.mark.parametrize("line", ["[1, 2]", "3", '{"loss": 1.0}', '{"step": "4"}', '{"step": true}'])
def test_resume_of_lines_that_are_not_records(tmp_path, line):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n' + line + "\n")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="metrics.jsonl, line 2: not a metrics record"):
        MetricsLogger(path, resume_step=3)
    assert path.read_bytes() == before   # nothing dropped
