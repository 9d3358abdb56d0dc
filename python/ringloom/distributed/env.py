"""Where this process sits in the job, read from the variables the launchers set.

Precedence: explicit arguments, then torchrun / ``ringloom launch`` (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), then Slurm (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID; master from RINGLOOM_MASTER_ADDR, MASTER_ADDR or SLURM_LAUNCH_NODE_IPADDR),
then Open MPI (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK; master from RINGLOOM_MASTER_ADDR or
MASTER_ADDR). With none of these the process is a world of one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Rendezvous:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    token: str
    source: str  # which variables it came from: "torchrun", "slurm", "mpi", "single"


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"ringloom.distributed: {name}={env[name]!r} is not an integer") from None


def _master(env: Mapping[str, str], fallback: str | None) -> str:
    addr = env.get("RINGLOOM_MASTER_ADDR") or env.get("MASTER_ADDR") or fallback
    if not addr:
        raise ValueError("ringloom.distributed: no master address: set MASTER_ADDR (or RINGLOOM_MASTER_ADDR)")
    return addr


def _port(env: Mapping[str, str], job_id: str | None = None) -> int:
    if env.get("MASTER_PORT"):
        return _int(env, "MASTER_PORT")
    if job_id and job_id.isdigit():
        # Different Slurm jobs on one node get different ports without coordination.
        return 20000 + int(job_id) % 20000
    return DEFAULT_PORT


def read_env(env: Mapping[str, str] | None = None) -> Rendezvous:
    """Reads rank, world size, local rank, master address/port and job token."""
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID") or env.get("TORCHELASTIC_RUN_ID") or ""
    token = env.get("RINGLOOM_JOB_TOKEN") or f"ringloom-job-{job_id}"
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, size = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        info = Rendezvous(rank, size, local, _master(env, "127.0.0.1"), _port(env), token, "torchrun")
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, size = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        info = Rendezvous(rank, size, local, _master(env, env.get("SLURM_LAUNCH_NODE_IPADDR")),
                          _port(env, env.get("SLURM_JOB_ID")), token, "slurm")
    elif "OMPI_COMM_WORLD_RANK" in env and "OMPI_COMM_WORLD_SIZE" in env:
        rank, size = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE")
        local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK") if "OMPI_COMM_WORLD_LOCAL_RANK" in env else 0
        info = Rendezvous(rank, size, local, _master(env, "127.0.0.1" if size == 1 else None), _port(env), token, "mpi")
    else:
        return Rendezvous(0, 1, 0, "127.0.0.1", 0, token, "single")
    if info.world_size < 1 or not 0 <= info.rank < info.world_size:
        raise ValueError(f"ringloom.distributed: rank {info.rank} is outside world size {info.world_size} "
                         f"(from the {info.source} variables)")
    return info
