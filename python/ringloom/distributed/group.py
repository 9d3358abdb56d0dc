"""The process group: ringloom's collectives (ring, tree: over TCP, and over CUDA IPC for
GPUs of one host; NCCL) from Python.

Tensors are ringloom Tensors or C-contiguous NumPy arrays (used in place, no copy). Ops
are in place on the tensors given; ``async_op=True`` returns a :class:`Work` to wait on,
so communication overlaps compute. Ranks given to ``broadcast``/``send``/``recv`` are
ranks within the group; ``new_group`` takes world ranks.
"""
from __future__ import annotations

import atexit
import os
import time
from typing import Any, Sequence

import numpy as np

from .. import _C
from .env import Rendezvous, read_env

_comm = _C.comm
BACKENDS = ("auto", "ring", "tree", "nccl")
DEFAULT_TIMEOUT = 300.0

_world: "ProcessGroup | None" = None


def _as_tensor(t: Any, what: str) -> _C.Tensor:
    if isinstance(t, _C.Tensor):
        return t
    if isinstance(t, np.ndarray):
        if not t.flags.c_contiguous or not t.flags.writeable:
            raise ValueError(f"ringloom.distributed: {what} must be a C-contiguous, writeable array")
        if t.dtype.name == "bfloat16":
            return _bf16(t)
        return _C.from_numpy(t)
    raise TypeError(f"ringloom.distributed: {what} must be a ringloom.Tensor or numpy.ndarray, got {type(t).__name__}")


def _bf16(t: np.ndarray) -> _C.Tensor:
    raise TypeError("ringloom.distributed: pass bfloat16 data as a ringloom.Tensor "
                    "(ringloom.tensor(x, dtype='bfloat16')); NumPy has no native bfloat16")


class Work:
    """Handle of an op issued with ``async_op=True``."""

    def __init__(self, work: Any, result: Any, rank: int):
        self._work, self._result, self._rank = work, result, rank

    def wait(self, timeout: float | None = None) -> Any:
        """Blocks until the op is done and returns its output tensor; raises the op's error,
        or TimeoutError if ``timeout`` seconds pass first (the op keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # Short slices keep Ctrl-C working while we wait.
        while True:
            step = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            if self._work.wait_for(step):
                return self._result
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"ringloom.distributed: {self._work.op} on rank {self._rank} did not "
                                   f"complete within {timeout} s")

    def is_completed(self) -> bool:
        return self._work.is_completed()

    @property
    def op(self) -> str:
        return self._work.op


class ProcessGroup:
    """A group of ranks and its collectives. ``rank`` is this process's index in the group."""

    def __init__(self, core: Any, info: Rendezvous | None = None, nccl: Any = None):
        self._pg = core        # our group: CPU tensors over TCP, CUDA tensors over IPC (one host) or TCP
        self._nccl = nccl      # the NCCL communicator, when the backend is "nccl": CUDA tensors
        self.info = info

    def _for(self, t: _C.Tensor) -> Any:
        return self._nccl if self._nccl is not None and t.device != "cpu" else self._pg

    @property
    def rank(self) -> int:
        return self._pg.rank

    @property
    def size(self) -> int:
        return self._pg.size

    @property
    def members(self) -> list[int]:
        """World ranks of the group's members, in group order."""
        return list(self._pg.members)

    @property
    def backend(self) -> str:
        return "nccl" if self._nccl is not None else self._pg.backend

    @property
    def timeout(self) -> float:
        return self._pg.timeout

    @property
    def cuda_transport(self) -> str:
        """How CUDA tensors travel in ring/tree/auto groups: "ipc" (kernels on peer buffers,
        every rank on one host), "tcp (<why not ipc>)" (staged through host memory), or
        "undecided" before the first CUDA op. NCCL groups send CUDA tensors to NCCL."""
        return "nccl" if self._nccl is not None else self._pg.cuda_transport

    @property
    def ipc_oneshot_max_bytes(self) -> int:
        """CUDA all_reduce up to this many bytes runs one-shot over IPC (default 256 KiB, or
        RINGLOOM_IPC_ONESHOT_MAX_BYTES); set the same value on every rank."""
        return self._pg.ipc_oneshot_max_bytes

    @ipc_oneshot_max_bytes.setter
    def ipc_oneshot_max_bytes(self, value: int) -> None:
        self._pg.ipc_oneshot_max_bytes = int(value)

    @property
    def store(self) -> Any:
        """The job's key-value store (set/get/wait/add/check)."""
        return self._pg.store

    def _run(self, work: Any, result: Any, async_op: bool) -> Any:
        w = Work(work, result, self.rank)
        return w if async_op else w.wait()

    def all_reduce(self, tensor: Any, op: str = "sum", async_op: bool = False) -> Any:
        """tensor[...] <- op over ranks of tensor[...]; op is "sum", "avg" or "max"."""
        t = _as_tensor(tensor, "all_reduce tensor")
        return self._run(self._for(t).all_reduce(t, op), tensor, async_op)

    def reduce_scatter(self, output: Any, input: Any, op: str = "sum", async_op: bool = False) -> Any:
        """input: [size * m] elements (any shape); output: [m], this rank's slice of the reduction."""
        o, i = _as_tensor(output, "reduce_scatter output"), _as_tensor(input, "reduce_scatter input")
        return self._run(self._for(i).reduce_scatter(o, i, op), output, async_op)

    def all_gather(self, output: Any, input: Any, async_op: bool = False) -> Any:
        """input: [m]; output: [size * m], rank i's input at elements [i*m, (i+1)*m)."""
        o, i = _as_tensor(output, "all_gather output"), _as_tensor(input, "all_gather input")
        return self._run(self._for(i).all_gather(o, i), output, async_op)

    def broadcast(self, tensor: Any, src: int, async_op: bool = False) -> Any:
        """Copies rank ``src``'s tensor into every rank's tensor."""
        t = _as_tensor(tensor, "broadcast tensor")
        return self._run(self._for(t).broadcast(t, int(src)), tensor, async_op)

    def barrier(self, async_op: bool = False) -> Any:
        return self._run(self._pg.barrier(), None, async_op)

    def send(self, tensor: Any, dst: int, async_op: bool = False) -> Any:
        t = _as_tensor(tensor, "send tensor")
        return self._run(self._for(t).send(t, int(dst)), tensor, async_op)

    def recv(self, tensor: Any, src: int, async_op: bool = False) -> Any:
        """Receives into ``tensor``; its byte size must match what ``src`` sends."""
        t = _as_tensor(tensor, "recv tensor")
        return self._run(self._for(t).recv(t, int(src)), tensor, async_op)

    def new_group(self, ranks: Sequence[int], backend: str | None = None) -> "ProcessGroup | None":
        """A sub-group of the given world ranks, in that order; None on ranks outside it.
        Only the members need to call it (in the same order as their other new_group calls)."""
        backend = backend or self.backend
        _check_backend(backend)
        sub = self._pg.new_group([int(r) for r in ranks], "auto" if backend == "nccl" else backend)
        if sub is None:
            return None
        nccl = None
        if backend == "nccl":
            nccl = _comm.NcclGroup(sub.store, sub.name, sub.rank, sub.size, self._device(), sub.timeout)
        return ProcessGroup(sub, self.info, nccl)

    def _device(self) -> int:
        if self._nccl is not None:
            return self._nccl.device
        return (self.info.local_rank if self.info else 0) % max(1, _C.cuda_device_count())

    def shutdown(self) -> None:
        """Closes the group's connections; queued ops fail. Idempotent."""
        self._pg.shutdown()

    def __repr__(self) -> str:
        return f"ProcessGroup(rank={self.rank}, size={self.size}, backend={self.backend!r})"


def backend_for(device: str, requested: str | None = "auto") -> str:
    """The backend a job on ``device`` ("cpu", "cuda", "cuda:N") gets for ``requested``
    (None or "auto": the rule below; any other name is returned as given).

    The rule, the same on every rank of a job whose hosts are alike: on the CPU, "auto"
    (ours: tree for small messages, ring for large). On GPUs, "nccl" when the build has
    NCCL and every rank of this host can have a GPU of its own (LOCAL_WORLD_SIZE, else
    WORLD_SIZE, at most the visible GPUs); otherwise "auto", whose CUDA tensors travel over
    CUDA IPC (ranks on one host, each on its own GPU or sharing GPUs as clients of the CUDA
    Multi-Process Service) or else through host memory over TCP. NCCL refuses ranks that
    share a GPU, so it is never picked for them."""
    if requested not in (None, "auto"):
        return requested
    if device == "cpu" or not getattr(_comm, "has_nccl", False):
        return "auto"
    local = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE") or "1"
    return "nccl" if int(local) <= _C.cuda_device_count() else "auto"


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"ringloom.distributed: unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    if backend == "nccl" and not getattr(_comm, "has_nccl", False):
        raise NotImplementedError("ringloom.distributed: this build of ringloom has no NCCL backend "
                                  "(built without CUDA/NCCL); use backend='ring', 'tree' or 'auto'")


def init(backend: str = "auto", timeout: float = DEFAULT_TIMEOUT, *, rank: int | None = None,
         world_size: int | None = None, master_addr: str | None = None, master_port: int | None = None,
         token: str | None = None) -> ProcessGroup:
    """Joins the job and returns the world ProcessGroup (also kept as the default group).

    Reads the launcher's variables (see ringloom.distributed.env); keyword arguments override
    them. Rank 0 serves the rendezvous store on master_addr:master_port. Every blocking step
    (connecting, waiting for the other ranks, each later op) gives up after ``timeout`` seconds
    with an error naming the op and the rank it waited for.
    """
    global _world
    _check_backend(backend)
    if _world is not None:
        raise RuntimeError("ringloom.distributed: init() was already called in this process; "
                           "use ringloom.distributed.world() or call destroy() first")
    info = read_env()
    info = Rendezvous(
        rank=info.rank if rank is None else rank,
        world_size=info.world_size if world_size is None else world_size,
        local_rank=info.local_rank,
        master_addr=info.master_addr if master_addr is None else master_addr,
        master_port=info.master_port if master_port is None else master_port,
        token=info.token if token is None else token,
        source=info.source,
    )
    server = None
    port = info.master_port
    if info.rank == 0:
        try:
            server = _comm.StoreServer(info.master_addr, port, info.token)
        except RuntimeError as e:
            if "assign requested address" not in str(e):
                raise
            # MASTER_ADDR names this host by an address we cannot bind (NAT, a DNS alias):
            # listen on every interface instead.
            server = _comm.StoreServer("0.0.0.0", port, info.token)
        port = server.port
    store = _comm.Store(info.master_addr, port, info.token, info.rank, float(timeout))
    core_backend = "auto" if backend == "nccl" else backend
    core = _comm.ProcessGroup(store, server, "world", list(range(info.world_size)), info.rank, core_backend,
                              float(timeout), info.token)
    nccl = None
    if backend == "nccl":
        # One GPU per local rank; CPU tensors keep going through our TCP group.
        device = info.local_rank % max(1, _C.cuda_device_count())
        nccl = _comm.NcclGroup(store, "world", info.rank, info.world_size, device, float(timeout))
    _world = ProcessGroup(core, info, nccl)
    return _world


def world() -> ProcessGroup:
    """The world group made by init()."""
    if _world is None:
        raise RuntimeError("ringloom.distributed: init() has not been called")
    return _world


def is_initialized() -> bool:
    return _world is not None


def destroy() -> None:
    """Shuts the world group down (safe to call twice); init() may be called again."""
    global _world
    if _world is not None:
        _world.shutdown()
        _world = None


atexit.register(destroy)
