"""
CUDA IPC transport bookkeeping (plans, flags, set-up decision)
"""
from __future__ import annotations
import collections.abc
import typing
__all__: list[str] = ['ALIGN', 'MAX_CHANNELS', 'MAX_RANKS', 'Plan', 'Rounds', 'STEP_BITS', 'ack_needed', 'all_reduce_segments', 'channel_limit', 'choose_algo', 'equal_segments', 'host_id', 'make_plan', 'ready_value', 'refusal', 'tree_node']
class Plan:
    """
    How a collective's data moves through the IPC buffers
    """
    def piece(self, round: typing.SupportsInt | typing.SupportsIndex, seg: typing.SupportsInt | typing.SupportsIndex, channel: typing.SupportsInt | typing.SupportsIndex, sub: typing.SupportsInt | typing.SupportsIndex) -> tuple[int, int, int]:
        """
        (data index, region index, count) of one sub-chunk
        """
    @property
    def channels(self) -> int:
        ...
    @property
    def nseg(self) -> int:
        ...
    @property
    def nsub(self) -> int:
        ...
    @property
    def off(self) -> list[int]:
        ...
    @property
    def per_channel(self) -> int:
        ...
    @property
    def per_round(self) -> int:
        ...
    @property
    def rounds(self) -> int:
        ...
    @property
    def steps(self) -> int:
        ...
    @property
    def sub_elems(self) -> int:
        ...
class Rounds:
    """
    Round numbering over a group's life
    """
    def __init__(self) -> None:
        ...
    def take(self, rounds: typing.SupportsInt | typing.SupportsIndex) -> int:
        ...
    @property
    def next(self) -> int:
        ...
def ack_needed(round: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def all_reduce_segments(count: typing.SupportsInt | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex) -> list[int]:
    ...
def channel_limit(gpus: collections.abc.Sequence[str]) -> int:
    ...
def choose_algo(tree: bool, nbytes: typing.SupportsInt | typing.SupportsIndex, oneshot_max: typing.SupportsInt | typing.SupportsIndex, region_bytes: typing.SupportsInt | typing.SupportsIndex) -> str:
    ...
def equal_segments(seg_len: typing.SupportsInt | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex) -> list[int]:
    ...
def host_id() -> str:
    ...
def make_plan(off: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], region_elems: typing.SupportsInt | typing.SupportsIndex, esize: typing.SupportsInt | typing.SupportsIndex, sub_bytes: typing.SupportsInt | typing.SupportsIndex, min_channel_bytes: typing.SupportsInt | typing.SupportsIndex, steps: typing.SupportsInt | typing.SupportsIndex, max_channels: typing.SupportsInt | typing.SupportsIndex = 32) -> Plan:
    ...
def ready_value(round: typing.SupportsInt | typing.SupportsIndex, step: typing.SupportsInt | typing.SupportsIndex, sub: typing.SupportsInt | typing.SupportsIndex, nsub: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def refusal(hosts: collections.abc.Sequence[str], gpus: collections.abc.Sequence[str], mps: collections.abc.Sequence[bool] = [], disabled: bool = False) -> str:
    ...
def tree_node(n: typing.SupportsInt | typing.SupportsIndex, shift: typing.SupportsInt | typing.SupportsIndex, rank: typing.SupportsInt | typing.SupportsIndex) -> tuple[int, int, int]:
    """
    (parent, child0, child1) of `rank` in tree `shift` (-1: none)
    """
ALIGN: int = 16
MAX_CHANNELS: int = 32
MAX_RANKS: int = 16
STEP_BITS: int = 16
