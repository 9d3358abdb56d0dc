"""Rendezvous variables from torchrun / ringloom launch, Slurm and Open MPI."""
from __future__ import annotations

import pytest

from ringloom.distributed import read_env


def test_torchrun_variables():
    info = read_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "10.1.2.3",
                     "MASTER_PORT": "4567", "RINGLOOM_JOB_TOKEN": "t0k"})
    assert (info.rank, info.world_size, info.local_rank, info.master_addr, info.master_port, info.token,
            info.source) == (3, 8, 1, "10.1.2.3", 4567, "t0k", "torchrun")


def test_slurm_variables():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "98765",
           "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.9"}
    info = read_env(env)
    assert (info.rank, info.world_size, info.local_rank, info.master_addr, info.source) == (5, 16, 1, "10.0.0.9", "slurm")
    assert info.master_port == 20000 + 98765 % 20000  # the same in every task of the job
    assert info.token == "ringloom-job-98765"
    assert read_env({**env, "RINGLOOM_MASTER_ADDR": "node001", "MASTER_PORT": "1234"}).master_addr == "node001"
    assert read_env({**env, "MASTER_PORT": "1234"}).master_port == 1234


def test_openmpi_variables():
    info = read_env({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "2",
                     "MASTER_ADDR": "head"})
    assert (info.rank, info.world_size, info.local_rank, info.master_addr, info.source) == (2, 4, 2, "head", "mpi")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        read_env({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4"})


def test_no_variables_is_a_world_of_one():
    info = read_env({})
    assert (info.rank, info.world_size, info.source) == (0, 1, "single")


@pytest.mark.parametrize("env,msg", [
    ({"RANK": "4", "WORLD_SIZE": "4"}, "outside world size"),
    ({"RANK": "x", "WORLD_SIZE": "4"}, "RANK='x' is not an integer"),
])
def test_bad_variables(env, msg):
    with pytest.raises(ValueError, match=msg):
        read_env(env)
