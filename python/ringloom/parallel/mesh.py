"""The dp x pp device mesh: which rank holds which pipeline stage of which replica.

Layout: world rank = pp_index * dp + dp_index. The dp ranks of one stage are consecutive
(on GPUs of one host the gradient all-reduce, the largest traffic, stays between
neighbours); the stages of one replica are dp apart.

Groups (made with new_group, members only; every rank makes them in the same order):
  dp        the dp ranks holding this rank's stage: gradient all-reduce / ZeRO
  pp_fwd    the stages of this rank's replica: activations (stage s -> s+1)
  pp_bwd    the same ranks: gradients (stage s -> s-1); a separate group (own
            connections, own worker thread), so an activation and a gradient between the
            same two ranks never share one FIFO channel
  tied      {first stage, last stage} of this replica, when pp > 1: the tied wte gradient
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MeshCoord:
    dp_index: int
    pp_index: int


def mesh_rank(dp: int, pp: int, dp_index: int, pp_index: int) -> int:
    """World rank of (dp_index, pp_index) in a dp x pp mesh."""
    if not (0 <= dp_index < dp and 0 <= pp_index < pp):
        raise ValueError(f"mesh coordinate ({dp_index}, {pp_index}) is outside dp={dp} x pp={pp}")
    return pp_index * dp + dp_index


def mesh_coord(dp: int, pp: int, rank: int) -> MeshCoord:
    if not 0 <= rank < dp * pp:
        raise ValueError(f"rank {rank} is outside a dp={dp} x pp={pp} mesh")
    return MeshCoord(rank % dp, rank // dp)


class DeviceMesh:
    """This rank's place in a dp x pp mesh and its process groups.

    ``DeviceMesh(dp, pp, world)`` with ``world`` a ProcessGroup of size dp * pp (default: the
    group from ringloom.distributed.init). Attributes: dp, pp, rank, dp_index, pp_index,
    dp_group, pp_fwd_group, pp_bwd_group, tied_group (None when pp == 1), world.
    """

    def __init__(self, dp: int, pp: int, world: Any = None):
        if world is None:
            from ..distributed import world as _world
            world = _world()
        dp, pp = int(dp), int(pp)
        if dp < 1 or pp < 1:
            raise ValueError(f"DeviceMesh: dp ({dp}) and pp ({pp}) must be positive")
        if dp * pp != world.size:
            raise ValueError(f"DeviceMesh: dp x pp = {dp} x {pp} = {dp * pp} does not match the world size "
                             f"{world.size}")
        self.dp, self.pp, self.world = dp, pp, world
        self.rank = world.rank
        c = mesh_coord(dp, pp, self.rank)
        self.dp_index, self.pp_index = c.dp_index, c.pp_index
        self.dp_group = None
        # new_group is collective over its members only; still, every rank walks the same
        # list in the same order so that the groups' names agree everywhere.
        for s in range(pp):
            g = self._join(self.dp_ranks(s))
            if g is not None:
                self.dp_group = g
        self.pp_fwd_group = self.pp_bwd_group = None
        for d in range(dp):
            g = self._join(self.pp_ranks(d))
            if g is not None:
                self.pp_fwd_group = g
        for d in range(dp):
            g = self._join(self.pp_ranks(d))
            if g is not None:
                self.pp_bwd_group = g
        self.tied_group = None
        if pp > 1:
            for d in range(dp):
                g = self._join([mesh_rank(dp, pp, d, 0), mesh_rank(dp, pp, d, pp - 1)])
                if g is not None:
                    self.tied_group = g

    def _join(self, ranks: list[int]) -> Any:
        if len(ranks) == 1:
            # A group of one needs no connections; ops on it are identities.
            return _SelfGroup() if ranks[0] == self.rank else None
        return self.world.new_group(ranks) if self.rank in ranks else None

    def dp_ranks(self, pp_index: int) -> list[int]:
        return [mesh_rank(self.dp, self.pp, d, pp_index) for d in range(self.dp)]

    def pp_ranks(self, dp_index: int) -> list[int]:
        return [mesh_rank(self.dp, self.pp, dp_index, s) for s in range(self.pp)]

    @property
    def is_first_stage(self) -> bool:
        return self.pp_index == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_index == self.pp - 1

    def __repr__(self) -> str:
        return (f"DeviceMesh(dp={self.dp}, pp={self.pp}, rank={self.rank}: dp_index={self.dp_index}, "
                f"pp_index={self.pp_index})")


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
