"""The all-reduce benchmark runs end to end and checks its own results (#wrong)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import child_env
from ringloom.bench.allreduce import parse_size, sizes

pytestmark = pytest.mark.multiproc


def test_parse_size_and_sweep():
    assert [parse_size(s) for s in ("8", "4K", "64M", "1G", "2MiB", "16MB")] == [8, 4096, 64 << 20, 1 << 30, 2 << 20,
                                                                                 16 << 20]
    assert sizes(8, 100, 2) == [8, 16, 32, 64]


def test_bench_runs_and_is_correct(tmp_path):
    out = tmp_path / "rows.json"
    res = subprocess.run([sys.executable, "-m", "ringloom.bench.allreduce", "-n", "3", "-b", "8", "-e", "70K", "-f", "16",
                          "--iters", "3", "--warmup", "1", "--time-per-size", "0.01", "--json", str(out)],
                         env=child_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "busbw(GB/s)" in res.stdout and "out of bounds values: 0 OK" in res.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["backend"] for r in rows} >= {"ring", "tree", "auto"}
    assert [r["size"] for r in rows if r["backend"] == "ring"] == [8, 128, 2048, 32768]
    for r in rows:
        assert r["wrong"] == 0 and r["time_us"] > 0
        assert abs(r["busbw"] - r["algbw"] * 2 * 2 / 3) < 1e-9


def test_bench_ipc_rows_on_cpu(tmp_path):
    """The ipc-* rows (GPU rows) are well-formed anywhere; one-shot rows stop at --oneshot-max."""
    out = tmp_path / "rows.json"
    res = subprocess.run([sys.executable, "-m", "ringloom.bench.allreduce", "-n", "2", "-b", "64", "-e", "4K", "-f", "4",
                          "--cpu", "--no-peer", "--backends", "ipc-ring,ipc-oneshot", "--oneshot-max", "1K",
                          "--iters", "3", "--warmup", "1", "--time-per-size", "0.01", "--json", str(out)],
                         env=child_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["size"] for r in rows if r["backend"] == "ipc-ring"] == [64, 256, 1024, 4096]
    assert [r["size"] for r in rows if r["backend"] == "ipc-oneshot"] == [64, 256, 1024]
    assert all(r["wrong"] == 0 for r in rows)
