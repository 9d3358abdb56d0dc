"""``ringloom launch``: start N ranks of a script on this machine.

    python -m ringloom.launch -n 4 train.py --lr 3e-4
    python -m ringloom.launch -n 2 -m ringloom.bench.allreduce

Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
(a free port), RINGLOOM_JOB_TOKEN (random, so another job's processes cannot join) and
RINGLOOM_RESTART_COUNT. Every line a rank prints is prefixed with "[rank N] ". When a rank
exits with a non-zero code the others get SIGTERM, then SIGKILL after a grace period, and
the launcher returns that rank's exit code (128 + signal for a rank killed by a signal).
``--max-restarts K`` restarts the whole group up to K times after a failure.
Across machines use torchrun, srun or mpirun: ringloom.distributed reads their variables.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

USAGE = """usage: ringloom launch [-n N] [--max-restarts K] [--master-addr ADDR] [--master-port PORT]
                       [--grace SECONDS] [--no-prefix] (script.py | -m module) [args ...]

  -n, --nproc N       number of ranks to start (default 1)
  --max-restarts K    restart the whole group up to K times after a rank fails (default 0)
  --master-addr ADDR  address of rank 0's store (default 127.0.0.1)
  --master-port PORT  its port (default: a free one, chosen anew for each attempt)
  --grace SECONDS     time between SIGTERM and SIGKILL when ending the group (default 5)
  --no-prefix         do not prefix output lines with "[rank N] "
"""


@dataclass
class LaunchConfig:
    nproc: int = 1
    max_restarts: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    grace: float = 5.0
    prefix: bool = True
    module: str | None = None
    script: str | None = None
    args: list[str] = field(default_factory=list)


class UsageError(ValueError):
    pass


def parse_args(argv: list[str]) -> LaunchConfig:
    """Options come before the target; everything after the script (or -m module) is the
    script's own arguments, passed on untouched."""
    cfg = LaunchConfig()
    i = 0

    def value(opt: str) -> str:
        nonlocal i
        if "=" in argv[i]:
            return argv[i].split("=", 1)[1]
        if i + 1 >= len(argv):
            raise UsageError(f"{opt} needs a value")
        i += 1
        return argv[i]

    def as_int(opt: str, s: str, lo: int) -> int:
        try:
            v = int(s)
        except ValueError:
            raise UsageError(f"{opt}: {s!r} is not an integer") from None
        if v < lo:
            raise UsageError(f"{opt} must be >= {lo}, got {v}")
        return v

    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in ("-n", "--nproc", "--nproc-per-node", "--nproc_per_node"):
            cfg.nproc = as_int(name, value(name), 1)
        elif name in ("--max-restarts", "--max_restarts"):
            cfg.max_restarts = as_int(name, value(name), 0)
        elif name in ("--master-addr", "--master_addr"):
            cfg.master_addr = value(name)
        elif name in ("--master-port", "--master_port"):
            cfg.master_port = as_int(name, value(name), 1)
        elif name == "--grace":
            try:
                cfg.grace = float(value(name))
            except ValueError:
                raise UsageError("--grace needs a number of seconds") from None
        elif a == "--no-prefix":
            cfg.prefix = False
        elif a == "-m":
            cfg.module = value("-m")
            cfg.args = argv[i + 1:]
            return cfg
        elif a in ("-h", "--help"):
            raise UsageError("")
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a}")
        else:
            cfg.script = a
            cfg.args = argv[i + 1:]
            return cfg
        i += 1
    raise UsageError("no script or -m module to run")


def free_port(addr: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (bind to 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr if addr not in ("localhost",) else "127.0.0.1", 0))
        return s.getsockname()[1]


class _Output:
    """Copies a rank's stream to ours line by line, each line prefixed with its rank."""

    lock = threading.Lock()

    def __init__(self, stream, sink, prefix: bytes):
        self.thread = threading.Thread(target=self._pump, args=(stream, sink, prefix), daemon=True)
        self.thread.start()

    @classmethod
    def _pump(cls, stream, sink, prefix: bytes) -> None:
        for line in iter(stream.readline, b""):
            if not line.endswith(b"\n"):
                line += b"\n"
            with cls.lock:
                sink.write(prefix + line)
                sink.flush()
        stream.close()


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc  # killed by signal s: rc = -s -> 128 + s


def _end_group(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM to every rank still running (and whatever it started), SIGKILL after `grace`."""
    def signal_all(sig: int) -> None:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)  # each rank leads its own process group
                except (ProcessLookupError, PermissionError):
                    pass

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    signal_all(signal.SIGKILL)
    for p in procs:
        p.wait()


def run_group(cfg: LaunchConfig, restart: int) -> tuple[int, int | None]:
    """Runs one attempt; returns (exit code, failing rank or None)."""
    port = cfg.master_port or free_port(cfg.master_addr)
    token = secrets.token_hex(16)
    target = ["-m", cfg.module] if cfg.module else [cfg.script]
    cmd = [sys.executable, "-u", *target, *cfg.args]
    procs: list[subprocess.Popen] = []
    pumps: list[_Output] = []
    try:
        for r in range(cfg.nproc):
            env = dict(os.environ)
            env.update(RANK=str(r), WORLD_SIZE=str(cfg.nproc), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(cfg.nproc),
                       MASTER_ADDR=cfg.master_addr, MASTER_PORT=str(port), RINGLOOM_JOB_TOKEN=token,
                       RINGLOOM_RESTART_COUNT=str(restart), PYTHONUNBUFFERED="1")
            if cfg.nproc > 1:
                env.setdefault("OMP_NUM_THREADS", "1")  # N ranks x all cores each would oversubscribe
            pipe = subprocess.PIPE if cfg.prefix else None
            p = subprocess.Popen(cmd, env=env, stdout=pipe, stderr=pipe, start_new_session=True)
            procs.append(p)
            if cfg.prefix:
                pre = f"[rank {r}] ".encode()
                pumps.append(_Output(p.stdout, sys.stdout.buffer, pre))
                pumps.append(_Output(p.stderr, sys.stderr.buffer, pre))
        code, failed = 0, None
        while True:
            running = False
            for r, p in enumerate(procs):
                rc = p.poll()
                if rc is None:
                    running = True
                elif rc != 0 and failed is None:
                    code, failed = _exit_code(rc), r
            if failed is not None or not running:
                break
            time.sleep(0.05)
        if failed is not None:
            _end_group(procs, cfg.grace)
        return code, failed
    except BaseException:
        _end_group(procs, cfg.grace)
        raise
    finally:
        for pump in pumps:
            pump.thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ringloom launch`` / ``python -m ringloom.launch``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = parse_args(argv)
    except UsageError as e:
        sys.stderr.write(USAGE + (f"\nerror: {e}\n" if str(e) else ""))
        return 2 if str(e) else 0

    def on_term(signum, frame):
        raise KeyboardInterrupt  # unwinds into run_group, which ends the ranks

    prev = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None
    try:
        for attempt in range(cfg.max_restarts + 1):
            code, failed = run_group(cfg, attempt)
            if code == 0:
                return 0
            msg = f"[launch] rank {failed} exited with code {code}"
            if attempt < cfg.max_restarts:
                sys.stderr.write(f"{msg}; restarting the group ({attempt + 1}/{cfg.max_restarts})\n")
            else:
                sys.stderr.write(f"{msg}; ended the other ranks\n")
            sys.stderr.flush()
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        if prev is not None:
            signal.signal(signal.SIGTERM, prev)


if __name__ == "__main__":
    sys.exit(main())
