"""The communication-methods benchmark (ringloom.bench.comm_methods) end to end on CPU
processes: per-step rows, the final val loss and tokens/s, and the printed table."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import child_env  # noqa: E402


@pytest.mark.multiproc
def test_comm_methods_writes_rows_and_throughput(tmp_path):
    out = tmp_path / "cm"
    cmd = [sys.executable, "-m", "ringloom", "launch", "-n", "2", "-m", "ringloom.bench.comm_methods", "--out",
           str(out), "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--steps", "6", "--batch-size", "4",
           "--seq-len", "16", "--eval-batches", "1", "allreduce", "qsgd:3"]
    res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    for name in ("allreduce", "qsgd-3"):
        rows = [json.loads(line) for line in open(out / f"{name}.jsonl")]
        steps, last = rows[:-1], rows[-1]
        assert [r["step"] for r in steps] == list(range(1, 7))
        assert all(np.isfinite(r["loss"]) and r["comm_bytes"] > 0 and r["seconds"] > 0 for r in steps)
        assert np.isfinite(last["val_loss"]) and last["tokens_per_s"] > 0
        assert name.split("-")[0] in res.stdout, "the summary table lacks the method"
    q = json.loads(open(out / "qsgd-3.jsonl").readline())["comm_bytes"]
    a = json.loads(open(out / "allreduce.jsonl").readline())["comm_bytes"]
    assert q < a / 4, f"QSGD at 3 levels (3 bits) should send far fewer bytes than fp32: {q} vs {a}"
    assert "tokens/s" in res.stdout
