"""ringloom.distributed: process groups and collectives (docs/architecture.md).

    pg = ringloom.distributed.init(backend="auto", timeout=60)
    pg.all_reduce(grad, op="avg")
    dp = pg.new_group([0, 2])          # sub-groups for a dp x pp mesh

Backends: "ring" and "tree" (ours: over TCP for CPU tensors; for CUDA tensors over CUDA IPC
when every rank is on one host, with a one-shot all-reduce for small messages, else staged
through host memory), "auto" (tree for small messages, ring for large), "nccl" (GPU builds
with NCCL). ``pg.cuda_transport`` says which path CUDA tensors take. ``backend_for(device)``
is the rule that picks between NCCL and ours for a job (the trainer's ``--backend auto``).
"""
from .env import Rendezvous, read_env
from .group import BACKENDS, ProcessGroup, Work, backend_for, destroy, init, is_initialized, world

__all__ = ["BACKENDS", "ProcessGroup", "Rendezvous", "Work", "backend_for", "destroy", "init", "is_initialized",
           "read_env", "world"]
