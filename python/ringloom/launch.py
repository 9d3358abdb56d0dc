"""``ringloom launch``: start N ranks of a script on this machine.

    python -m ringloom.launch -n 4 train.py --lr 3e-4
    python -m ringloom.launch -n 2 -m ringloom.bench.allreduce

Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
(a free port), RINGLOOM_JOB_TOKEN (random, so another job's processes cannot join) and
RINGLOOM_RESTART_COUNT. Every line a rank prints is prefixed with "[rank N] ". When a rank
exits with a non-zero code the others get SIGTERM, then SIGKILL after a grace period, and
the launcher returns that rank's exit code (128 + signal for a rank killed by a signal).
When a rank exits successfully the others have ``--exit-timeout`` seconds to follow (rank 0
often saves and samples after the others are done); a rank still running then is taken to
hang and the group is ended the same way, exit code 124. ``--max-restarts K`` restarts the
whole group up to K times after a failure.

The ranks die with the launcher. Each rank leads its own process group, which the launcher
signals when it ends normally, on SIGTERM, SIGHUP or Ctrl-C. Where the launcher cannot clean
up (``kill -9``) Linux does it: every rank is started with a parent-death signal
(prctl(PR_SET_PDEATHSIG, SIGKILL), set by a few lines run before the rank's script), so
the kernel kills the ranks when the launcher dies. (Processes a rank starts itself are not
covered by that signal; they are in the rank's process group, which a launcher that can
still act kills.)

``ringloom launch -n 2 python x.py`` is accepted as one types it for mpirun: a leading
``python``, ``python3``, ``python3.N`` or this interpreter's path is dropped (the ranks
always run this interpreter, ``sys.executable -u``); the path of another interpreter, and
interpreter options after it, are refused with the reason.
Across machines use torchrun, srun or mpirun: ringloom.distributed reads their variables.
"""
from __future__ import annotations

import ctypes
import math
import os
import re
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
  --exit-timeout SECONDS
                      after a rank exits successfully, how long the others may keep running
                      before they are taken to hang and ended (default 300)
  --no-prefix         do not prefix output lines with "[rank N] "
"""
MAX_RANKS = 1024            # more local processes than this is a typo, not a job
_INTERPRETERS = re.compile(r"^python(3(\.\d+)?)?$")


@dataclass
class LaunchConfig:
    nproc: int = 1
    max_restarts: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    grace: float = 5.0
    exit_timeout: float = 300.0
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

    def as_int(opt: str, s: str, lo: int, hi: int | None = None) -> int:
        try:
            v = int(s)
        except ValueError:
            raise UsageError(f"{opt}: {s!r} is not an integer") from None
        if v < lo or (hi is not None and v > hi):
            raise UsageError(f"{opt} must be >= {lo}" + (f" and <= {hi}" if hi is not None else "") + f", got {v}")
        return v

    def as_seconds(opt: str, s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise UsageError(f"{opt} needs a number of seconds, got {s!r}") from None
        if not math.isfinite(v) or v < 0:
            raise UsageError(f"{opt} must be a finite number of seconds >= 0, got {s}")
        return v

    def target(a: str) -> LaunchConfig:
        """The script (or -m module) at argv[i]; a leading interpreter name is dropped."""
        nonlocal i
        if _is_interpreter(a):
            if os.path.sep in a and os.path.realpath(a) != os.path.realpath(sys.executable):
                raise UsageError(f"{a} is another interpreter than this one ({sys.executable}), which the ranks "
                                 f"run: start the launcher with {a} -m ringloom.launch instead")
            if i + 1 >= len(argv):
                raise UsageError(f"{a}: no script or -m module after it")
            i += 1
            a = argv[i]
            if a == "-m":
                cfg.module = value("-m")
                cfg.args = argv[i + 1:]
                return cfg
            if a.startswith("-"):
                raise UsageError(f"interpreter option {a} is not supported: the ranks run {sys.executable} -u; "
                                 "set PYTHON* environment variables instead")
        cfg.script = a
        cfg.args = argv[i + 1:]
        return cfg

    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in ("-n", "--nproc", "--nproc-per-node", "--nproc_per_node"):
            cfg.nproc = as_int(name, value(name), 1, MAX_RANKS)
        elif name in ("--max-restarts", "--max_restarts"):
            cfg.max_restarts = as_int(name, value(name), 0)
        elif name in ("--master-addr", "--master_addr"):
            cfg.master_addr = value(name)
        elif name in ("--master-port", "--master_port"):
            cfg.master_port = as_int(name, value(name), 1, 65535)
        elif name == "--grace":
            cfg.grace = as_seconds(name, value(name))
        elif name in ("--exit-timeout", "--exit_timeout"):
            cfg.exit_timeout = as_seconds(name, value(name))
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
            return target(a)
        i += 1
    raise UsageError("no script or -m module to run")


def _is_interpreter(arg: str) -> bool:
    """python, python3, python3.11 or this interpreter's own path: typed before the script as
    for mpirun, and not a script of that name in the current directory."""
    if os.path.isfile(arg) and arg.endswith(".py"):
        return False
    return os.path.realpath(arg) == os.path.realpath(sys.executable) or bool(_INTERPRETERS.match(os.path.basename(arg)))


def check_environment(cfg: LaunchConfig) -> None:
    """What parse_args cannot see: the script exists, the address resolves."""
    if cfg.script is not None and not os.path.isfile(cfg.script):
        raise UsageError(f"script {cfg.script!r} not found")
    try:
        socket.getaddrinfo(cfg.master_addr, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise UsageError(f"--master-addr {cfg.master_addr!r}: cannot resolve it ({e})") from None


# Run in each rank before its script: the kernel sends SIGKILL to the rank when the launcher
# dies (PR_SET_PDEATHSIG = 1), even by kill -9. Survives the exec; a launcher that died
# before prctl ran is caught by the parent check.
_BOOTSTRAP = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(128 + signal.SIGKILL)\n"
    "os.execv(sys.executable, [sys.executable, '-u'] + sys.argv[2:])\n")


def _has_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(ctypes.CDLL(None), "prctl")
    except OSError:
        return False


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


HUNG = 124   # the exit code of a group ended because a rank hung after another had finished


def _watch(procs: list[subprocess.Popen], exit_timeout: float) -> tuple[int, int | None, str]:
    """Waits for the ranks. Returns (0, None, "") when all exited with 0; (code, rank, what
    happened) for the first rank that failed, or (HUNG, rank, ...) for a rank still running
    ``exit_timeout`` seconds after another exited successfully (the watchdog: a rank whose
    peers are gone usually waits for them until its own timeouts, if it has any)."""
    first_done: float | None = None
    while True:
        running = []
        for r, p in enumerate(procs):
            rc = p.poll()
            if rc is None:
                running.append(r)
            elif rc != 0:
                return _exit_code(rc), r, f"rank {r} exited with code {_exit_code(rc)}"
            elif first_done is None:
                first_done = time.monotonic()
        if not running:
            return 0, None, ""
        if first_done is not None and time.monotonic() - first_done > exit_timeout:
            return HUNG, running[0], (f"rank {running[0]} still running {exit_timeout:g} s after another rank "
                                      f"exited successfully (--exit-timeout): taken to hang, exit code {HUNG}")
        time.sleep(0.05)


def run_group(cfg: LaunchConfig, restart: int) -> tuple[int, int | None, str]:
    """Runs one attempt; returns (exit code, failing rank or None, what happened)."""
    port = cfg.master_port or free_port(cfg.master_addr)
    token = secrets.token_hex(16)
    target = ["-m", cfg.module] if cfg.module else [cfg.script]
    if _has_pdeathsig():
        cmd = [sys.executable, "-c", _BOOTSTRAP, str(os.getpid()), *target, *cfg.args]
    else:
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
        code, failed, reason = _watch(procs, cfg.exit_timeout)
        if failed is not None:
            _end_group(procs, cfg.grace)
        return code, failed, reason
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
        check_environment(cfg)
    except UsageError as e:
        sys.stderr.write(USAGE + (f"\nerror: {e}\n" if str(e) else ""))
        return 2 if str(e) else 0

    def on_term(signum, frame):
        raise KeyboardInterrupt  # unwinds into run_group, which ends the ranks

    on_main = threading.current_thread() is threading.main_thread()
    prev = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGHUP)} if on_main else {}
    try:
        for attempt in range(cfg.max_restarts + 1):
            code, failed, reason = run_group(cfg, attempt)
            if code == 0:
                return 0
            msg = f"[launch] {reason}"
            if attempt < cfg.max_restarts:
                sys.stderr.write(f"{msg}; restarting the group ({attempt + 1}/{cfg.max_restarts})\n")
            else:
                sys.stderr.write(f"{msg}; ended the other ranks\n")
            sys.stderr.flush()
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        for sig, handler in prev.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
