"""The launcher: rank variables, "[rank N] " prefixes, ending the group when a rank fails
and returning its exit code, restarts, -m modules and usage errors."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import WORKER, child_env, launch
from ringloom.launch import parse_args, UsageError

pytestmark = pytest.mark.multiproc


def test_prefixes_every_line_and_sets_variables():
    res = launch(3, "launcher")
    assert res.returncode == 0, res.stdout + res.stderr
    for r in range(3):
        assert f"[rank {r}] hello from {r} of 3 restart 0" in res.stdout.splitlines()
        assert f"[rank {r}] to stderr {r}" in res.stderr.splitlines()
    for line in res.stdout.splitlines():
        assert line.startswith("[rank "), line


def test_failing_rank_ends_the_group_and_its_code_is_returned():
    t0 = time.monotonic()
    res = launch(3, "launcher", "1=3", "hang", launcher_args=("--grace", "2"))
    elapsed = time.monotonic() - t0
    assert res.returncode == 3, res.stdout + res.stderr
    assert "[launch] rank 1 exited with code 3" in res.stderr
    assert elapsed < 30  # the others (sleeping 60 s) were ended, not waited for


def test_restarts_the_group():
    res = launch(2, "launcher", "0=5", launcher_args=("--max-restarts", "2"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[rank 0] hello from 0 of 2 restart 0" in res.stdout
    assert "[rank 0] hello from 0 of 2 restart 1" in res.stdout
    assert "restarting the group (1/2)" in res.stderr


def test_restarts_run_out():
    res = launch(2, "launcher", "1=4", "always", launcher_args=("--max-restarts", "1"))
    assert res.returncode == 4
    assert "restart 1" in res.stdout and "restart 2" not in res.stdout


def test_module_form_and_signal_exit_code(tmp_path):
    mod = tmp_path / "rl_launch_probe.py"
    mod.write_text("import os, signal\nprint('module rank', os.environ['RANK'])\n"
                   "if os.environ['RANK'] == '1': os.kill(os.getpid(), signal.SIGKILL)\n"
                   "import time; time.sleep(30)\n")
    env = child_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    res = subprocess.run([sys.executable, "-m", "ringloom.launch", "-n", "2", "--grace", "1", "-m", "rl_launch_probe"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert "[rank 1] module rank 1" in res.stdout, res.stdout + res.stderr
    assert res.returncode == 128 + 9  # killed by SIGKILL


def test_main_is_callable_in_process(capfd):
    from ringloom.launch import main
    assert main(["-n", "1", "--no-prefix", WORKER, "launcher"]) == 0
    assert "hello from 0 of 1" in capfd.readouterr().out


def test_parse_args():
    cfg = parse_args(["-n", "4", "--max-restarts=2", "train.py", "-n", "9", "--lr", "1"])
    assert (cfg.nproc, cfg.max_restarts, cfg.script, cfg.args) == (4, 2, "train.py", ["-n", "9", "--lr", "1"])
    cfg = parse_args(["--nproc", "2", "-m", "pkg.mod", "x"])
    assert (cfg.module, cfg.args) == ("pkg.mod", ["x"])
    for bad, msg in ((["-n", "0", "a.py"], ">= 1"), (["-n", "x", "a.py"], "not an integer"), (["-n", "2"], "no script"),
                     (["--bogus", "a.py"], "unknown option")):
        with pytest.raises(UsageError, match=msg):
            parse_args(bad)
