"""ringloom.parallel: data, pipeline and tensor parallelism (a dp x pp x tp mesh).

    import ringloom.distributed as dist
    from ringloom.parallel import DeviceMesh, ParallelEngine
    mesh = DeviceMesh(dp=2, pp=2, world=dist.init(), tp=2)
    engine = ParallelEngine(config, mesh, schedule="zb-h1", micro_batches=8, lr=1e-3)
    loss = engine.train_step(inputs, targets)   # this dp rank's rows of the global batch

Modules: mesh (ranks and groups), partition (stage splits), schedules (per-rank action
lists, checked by simulation), data_parallel (bucketed gradient reduction), zero (ZeRO-1
sharded AdamW), engine (the executor), trace (Chrome trace timelines); beyond all-reduce:
compression (bf16, top-k, PowerSGD, QSGD on the dp reduction), param_server + ps_worker (sync and
bounded-staleness async parameter servers); tensor parallelism: tp_layout (the split),
tp_layers (the layers), tensor_parallel (build_tp_model), tp_traffic (bytes per step).
"""
from .data_parallel import DEFAULT_BUCKET_MB, GradReducer, broadcast_parameters
from .compression import (BF16Compression, Compressor, PowerSGDCompression, QSGDCompression, TopKCompression,
                          parse_compression)
from .engine import ParallelEngine
from .param_server import ParameterServer, ParameterServerError, PSLayout
from .ps_worker import PSWorker
from .mesh import DeviceMesh, mesh_coord, mesh_rank
from .partition import balanced_split, check_split, stage_blocks
from .schedules import SCHEDULES, Action, Schedule, ideal_bubble, make_schedule, simulate
from .trace import Timeline, merge_traces, rank_path
from .tensor_parallel import TPModel, build_tp_model, gather_full
from .tp_layout import TPLayout, check_tp
from .zero import ShardedAdamW

__all__ = ["DEFAULT_BUCKET_MB", "GradReducer", "broadcast_parameters", "ParallelEngine", "DeviceMesh", "mesh_coord",
           "mesh_rank", "balanced_split", "check_split", "stage_blocks", "SCHEDULES", "Action", "Schedule",
           "ideal_bubble", "make_schedule", "simulate", "Timeline", "merge_traces", "rank_path", "ShardedAdamW", "BF16Compression", "Compressor",
           "PowerSGDCompression", "QSGDCompression", "TopKCompression", "parse_compression", "ParameterServer", "ParameterServerError",
           "PSLayout", "PSWorker", "TPModel", "build_tp_model", "gather_full", "TPLayout", "check_tp"]
