"""Running a function in N ranks through ringloom's launcher and gathering what each
rank returned.

    results = run_in_ranks(check_all_reduce, 4, 1024)   # [rank 0's result, ..., rank 3's]

`fn` must be a module-level function (the ranks import it by module name, or from its
source file when that module cannot be imported, as with pytest's test files); its
arguments and result travel pickled. Each rank runs in its own process with RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT and the job token set, so
ringloom.distributed.init_process_group() works inside it. A rank that raises fails the
call with that rank's traceback; a run past `timeout` seconds is ended (every rank).
"""
from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
import tempfile
from typing import Any, Callable


class RankError(AssertionError):
    """One or more ranks failed: the message holds each failing rank's traceback or exit code."""


def run_in_ranks(fn: Callable[..., Any], nproc: int, *args: Any, timeout: float = 120.0,
                 env: dict[str, str] | None = None, **kwargs: Any) -> list[Any]:
    """fn(*args, **kwargs) in `nproc` ranks; returns the results in rank order."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"run_in_ranks: nproc must be a positive integer, got {nproc!r}")
    if not (timeout > 0):
        raise ValueError(f"run_in_ranks: timeout must be > 0 seconds, got {timeout!r}")
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module is None or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError("run_in_ranks: fn must be a module-level function (the ranks import it by name)")
    try:
        source = inspect.getsourcefile(fn)
    except TypeError:
        source = None
    with tempfile.TemporaryDirectory(prefix="ringloom-ranks-") as work:
        spec = {"module": module, "qualname": qualname, "source": source, "args": args, "kwargs": kwargs,
                "sys_path": [p for p in sys.path if p], "out": work}
        with open(os.path.join(work, "spec.pkl"), "wb") as f:
            pickle.dump(spec, f)
        cmd = [sys.executable, "-m", "ringloom.launch", "-n", str(nproc), "--grace", "2",
               "-m", "ringloom.testing._rank_main", work]
        try:
            proc = subprocess.run(cmd, env=child_env(**(env or {})), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace")
            raise RankError(f"run_in_ranks({qualname}, {nproc}): no result within {timeout:g} s; output:\n{out[-4000:]}") from None
        output = proc.stdout.decode(errors="replace")
        results, failures = [], []
        for r in range(nproc):
            path = os.path.join(work, f"rank{r}.pkl")
            if not os.path.exists(path):
                failures.append(f"rank {r}: no result (launcher exit code {proc.returncode})")
                results.append(None)
                continue
            with open(path, "rb") as f:
                ok, value = pickle.load(f)
            if ok:
                results.append(value)
            else:
                failures.append(f"rank {r} raised:\n{value}")
                results.append(None)
        if failures:
            raise RankError(f"run_in_ranks({qualname}, {nproc}) failed:\n" + "\n".join(failures)
                            + f"\n--- output ---\n{output[-4000:]}")
        return results


# Variables through which a launcher tells a process its rank: a child started from inside
# a launched process must not inherit them.
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                  "RINGLOOM_JOB_TOKEN", "RINGLOOM_RESTART_COUNT", "SLURM_PROCID", "SLURM_NTASKS",
                  "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a process started by a test: this one less the rank variables,
    with the ringloom this process imported first on PYTHONPATH (installed or a source
    tree) and one OpenMP thread; `extra` is set last."""
    import ringloom

    env = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
    parent = os.path.dirname(os.path.dirname(os.path.abspath(ringloom.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env
