"""The rule behind --backend auto (ringloom.distributed.backend_for): NCCL only where the
build has it and every rank of the host has a GPU of its own; ours otherwise."""
from __future__ import annotations

import pytest

import ringloom.distributed as dist
from ringloom.distributed import group


@pytest.fixture
def machine(monkeypatch):
    def set_(gpus: int, nccl: bool, local: str | None, world: str | None = None) -> None:
        monkeypatch.setattr(group._C, "cuda_device_count", lambda: gpus)
        monkeypatch.setattr(group._comm, "has_nccl", nccl, raising=False)
        for name, value in (("LOCAL_WORLD_SIZE", local), ("WORLD_SIZE", world)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
    return set_


def test_cpu_jobs_use_ours(machine):
    machine(gpus=8, nccl=True, local="2")
    assert dist.backend_for("cpu") == "auto"


def test_a_gpu_per_rank_gets_nccl(machine):
    machine(gpus=4, nccl=True, local="4")
    assert dist.backend_for("cuda") == "nccl"
    assert dist.backend_for("cuda:1", None) == "nccl"


def test_ranks_sharing_a_gpu_get_ours(machine):
    machine(gpus=1, nccl=True, local="2")
    assert dist.backend_for("cuda") == "auto"


def test_world_size_stands_in_for_the_local_count(machine):
    machine(gpus=2, nccl=True, local=None, world="4")
    assert dist.backend_for("cuda") == "auto"
    machine(gpus=2, nccl=True, local=None, world="2")
    assert dist.backend_for("cuda") == "nccl"


def test_builds_without_nccl_use_ours(machine):
    machine(gpus=8, nccl=False, local="2")
    assert dist.backend_for("cuda") == "auto"


def test_an_explicit_choice_is_kept(machine):
    machine(gpus=1, nccl=True, local="2")
    assert dist.backend_for("cuda", "nccl") == "nccl"
    assert dist.backend_for("cpu", "tree") == "tree"
