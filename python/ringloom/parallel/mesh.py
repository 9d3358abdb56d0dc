"""The dp x pp x tp device mesh: which rank holds which tensor-parallel slice of which
pipeline stage of which replica.

Layout: world rank = (pp_index * dp + dp_index) * tp + tp_index. The tp ranks of one stage
are consecutive (tensor parallelism talks in every layer, several times per micro-batch:
on GPUs of one host its groups are the nearest neighbours), then the dp ranks of one stage
(the gradient all-reduce, once per step), then the stages of a replica.

Groups (made with new_group, members only; every rank makes them in the same order):
  tp        the tp ranks sharing this rank's layers: the collectives inside each layer
  dp        the dp ranks holding this rank's stage and slice: gradient all-reduce / ZeRO
  pp_fwd    the stages of this rank's replica: activations (stage s -> s+1)
  pp_bwd    the same ranks: gradients (stage s -> s-1); a separate group (own
            connections, own worker thread), so an activation and a gradient between the
            same two ranks never share one FIFO channel
  tied      {first stage, last stage} of this replica, when pp > 1: the tied wte gradient
The pp and tied groups join ranks of the same tp index.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MeshCoord:
    dp_index: int
    pp_index: int
    tp_index: int = 0


def mesh_rank(dp: int, pp: int, dp_index: int, pp_index: int, tp: int = 1, tp_index: int = 0) -> int:
    """World rank of (dp_index, pp_index, tp_index) in a dp x pp x tp mesh."""
    if not (0 <= dp_index < dp and 0 <= pp_index < pp and 0 <= tp_index < tp):
        raise ValueError(f"mesh coordinate ({dp_index}, {pp_index}, {tp_index}) is outside dp={dp} x pp={pp} "
                         f"x tp={tp}")
    return (pp_index * dp + dp_index) * tp + tp_index


def mesh_coord(dp: int, pp: int, rank: int, tp: int = 1) -> MeshCoord:
    if not 0 <= rank < dp * pp * tp:
        raise ValueError(f"rank {rank} is outside a dp={dp} x pp={pp} x tp={tp} mesh")
    outer = rank // tp
    return MeshCoord(outer % dp, outer // dp, rank % tp)


class DeviceMesh:
    """This rank's place in a dp x pp x tp mesh and its process groups.

    ``DeviceMesh(dp, pp, world, tp=1)`` with ``world`` a ProcessGroup of size dp * pp * tp
    (default: the group from ringloom.distributed.init). Attributes: dp, pp, tp, rank,
    dp_index, pp_index, tp_index, dp_group, pp_fwd_group, pp_bwd_group, tied_group (None
    when pp == 1), tp_group, world.
    """

    def __init__(self, dp: int, pp: int, world: Any = None, tp: int = 1):
        if world is None:
            from ..distributed import world as _world
            world = _world()
        dp, pp, tp = int(dp), int(pp), int(tp)
        if dp < 1 or pp < 1 or tp < 1:
            raise ValueError(f"DeviceMesh: dp ({dp}), pp ({pp}) and tp ({tp}) must be positive")
        if dp * pp * tp != world.size:
            raise ValueError(f"DeviceMesh: dp x pp x tp = {dp} x {pp} x {tp} = {dp * pp * tp} does not match the "
                             f"world size {world.size}")
        self.dp, self.pp, self.tp, self.world = dp, pp, tp, world
        self.rank = world.rank
        c = mesh_coord(dp, pp, self.rank, tp)
        self.dp_index, self.pp_index, self.tp_index = c.dp_index, c.pp_index, c.tp_index
        # new_group is collective over its members only; still, every rank walks the same
        # lists in the same order so that the groups' names agree everywhere.
        outer = [(d, s) for s in range(pp) for d in range(dp)]
        self.tp_group = self._first([self.tp_ranks(d, s) for d, s in outer])
        self.dp_group = self._first([self.dp_ranks(s, t) for s in range(pp) for t in range(tp)])
        replicas = [(d, t) for d in range(dp) for t in range(tp)]
        self.pp_fwd_group = self._first([self.pp_ranks(d, t) for d, t in replicas])
        self.pp_bwd_group = self._first([self.pp_ranks(d, t) for d, t in replicas])
        self.tied_group = None
        if pp > 1:
            self.tied_group = self._first([[self._at(d, 0, t), self._at(d, pp - 1, t)] for d, t in replicas])

    def _at(self, dp_index: int, pp_index: int, tp_index: int) -> int:
        return mesh_rank(self.dp, self.pp, dp_index, pp_index, self.tp, tp_index)

    def _first(self, rank_lists: list[list[int]]) -> Any:
        """Joins every group of the list this rank belongs to; returns the (one) it is in."""
        mine = None
        for ranks in rank_lists:
            g = self._join(ranks)
            if g is not None:
                mine = g
        return mine

    def _join(self, ranks: list[int]) -> Any:
        if len(ranks) == 1:
            # A group of one needs no connections; ops on it are identities.
            return _SelfGroup() if ranks[0] == self.rank else None
        return self.world.new_group(ranks) if self.rank in ranks else None

    def tp_ranks(self, dp_index: int, pp_index: int) -> list[int]:
        return [self._at(dp_index, pp_index, t) for t in range(self.tp)]

    def dp_ranks(self, pp_index: int, tp_index: int = 0) -> list[int]:
        return [self._at(d, pp_index, tp_index) for d in range(self.dp)]

    def pp_ranks(self, dp_index: int, tp_index: int = 0) -> list[int]:
        return [self._at(dp_index, s, tp_index) for s in range(self.pp)]

    @property
    def is_first_stage(self) -> bool:
        return self.pp_index == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_index == self.pp - 1

    def __repr__(self) -> str:
        return (f"DeviceMesh(dp={self.dp}, pp={self.pp}, tp={self.tp}, rank={self.rank}: dp_index={self.dp_index}, "
                f"pp_index={self.pp_index}, tp_index={self.tp_index})")


class _SelfGroup:
    """A process group of one rank: every collective is the identity."""

    rank, size = 0, 1

    class _Done:
        def __init__(self, result: Any):
            self._result = result

        def wait(self, timeout: float | None = None) -> Any:
            return self._result

        def is_completed(self) -> bool:
            return True

    def _id(self, t: Any, async_op: bool) -> Any:
        return self._Done(t) if async_op else t

    def all_reduce(self, tensor: Any, op: str = "sum", async_op: bool = False) -> Any:
        return self._id(tensor, async_op)

    def broadcast(self, tensor: Any, src: int, async_op: bool = False) -> Any:
        return self._id(tensor, async_op)

    def reduce_scatter(self, output: Any, input: Any, op: str = "sum", async_op: bool = False) -> Any:
        output.copy_(input.reshape(*output.shape))
        return self._id(output, async_op)

    def all_gather(self, output: Any, input: Any, async_op: bool = False) -> Any:
        output.copy_(input.reshape(*output.shape))
        return self._id(output, async_op)

    def barrier(self, async_op: bool = False) -> Any:
        return self._id(None, async_op)
