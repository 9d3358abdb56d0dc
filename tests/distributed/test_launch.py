"""The launcher: rank variables, "[rank N] " prefixes, ending the group when a rank fails
and returning its exit code, restarts, -m modules and usage errors; the watchdog for a rank
that outlives a finished one, ranks dying with a launcher killed by SIGKILL, option checks
and the mpirun-style ``python script.py`` form."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import WORKER, child_env, launch
from ringloom.launch import HUNG, MAX_RANKS, parse_args, UsageError

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


def test_watchdog_ends_ranks_that_outlive_a_finished_one():
    # Rank 0 exits 0 at once, rank 1 sleeps 60 s: without a watchdog the launcher waits for it.
    t0 = time.monotonic()
    res = launch(2, "launcher", "0=0", "hang", launcher_args=("--exit-timeout", "1", "--grace", "1"))
    assert res.returncode == HUNG, res.stdout + res.stderr
    assert "rank 1 still running 1 s after another rank exited successfully" in res.stderr
    assert time.monotonic() - t0 < 30


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's prctl")
def test_ranks_die_with_a_launcher_killed_by_sigkill(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text("import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-m", "ringloom.launch", "-n", "2", str(script)], env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pids = []
    try:
        while len(pids) < 2:
            line = p.stdout.readline()
            assert line, "the launcher ended before its ranks started"
            pids.append(int(line.split()[-1]))
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(pid) for pid in pids), f"ranks {pids} outlived their launcher"
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("argv,msg", [
    (["--grace", "nan", "a.py"], "--grace must be a finite number of seconds >= 0, got nan"),
    (["--grace", "-5", "a.py"], "--grace must be a finite number of seconds >= 0, got -5"),
    (["--grace", "inf", "a.py"], "--grace must be a finite number"),
    (["--grace", "soon", "a.py"], "--grace needs a number of seconds"),
    (["--exit-timeout", "nan", "a.py"], "--exit-timeout must be a finite number"),
    (["--master-port", "70000", "a.py"], "--master-port must be >= 1 and <= 65535, got 70000"),
    (["--master-port", "0", "a.py"], "--master-port must be >= 1"),
    (["-n", str(MAX_RANKS + 1), "a.py"], f"<= {MAX_RANKS}"),
    (["--max-restarts", "-1", "a.py"], "--max-restarts must be >= 0"),
    (["-n", "2", "python"], "no script or -m module after it"),
    (["-n", "2", "python", "-u", "a.py"], "interpreter option -u is not supported"),
    (["-n", "2", "/opt/other/bin/python3", "a.py"], "is another interpreter than this one"),
])
def test_bad_options_are_refused(argv, msg):
    with pytest.raises(UsageError, match=msg.replace("(", r"\(").replace("+", r"\+")):
        parse_args(argv)


@pytest.mark.parametrize("interpreter", ["python", "python3", "python3.11", sys.executable])
def test_interpreter_before_the_script_is_dropped(interpreter):
    cfg = parse_args(["-n", "2", interpreter, "x.py", "--lr", "1"])
    assert (cfg.script, cfg.module, cfg.args) == ("x.py", None, ["--lr", "1"])
    cfg = parse_args(["-n", "2", interpreter, "-m", "pkg.mod", "-x"])
    assert (cfg.script, cfg.module, cfg.args) == (None, "pkg.mod", ["-x"])


def test_python_script_form_runs():
    res = launch(2, "launcher", launcher_args=("python",))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[rank 1] hello from 1 of 2 restart 0" in res.stdout.splitlines()


def test_missing_script_and_bad_address_are_one_line(tmp_path, capfd):
    from ringloom.launch import main
    assert main(["-n", "2", str(tmp_path / "nope.py")]) == 2
    assert "error: script" in capfd.readouterr().err
    assert main(["-n", "2", "--master-addr", "no-such-host.invalid", WORKER]) == 2
    assert "--master-addr 'no-such-host.invalid': cannot resolve it" in capfd.readouterr().err
