"""
Rendezvous store, process groups and collectives
"""
from __future__ import annotations
import collections.abc
import ringloom._C
import typing
from . import ipc
__all__: list[str] = ['MAX_FRAME', 'MAX_HELLO_FRAME', 'MAX_KEY', 'NcclGroup', 'NcclWork', 'ProcessGroup', 'Store', 'StoreServer', 'Work', 'has_nccl', 'ipc']
class StoreServer:
    """
    The key-value store server (runs on a background thread)
    """
    def __init__(self, host: str, port: typing.SupportsInt | typing.SupportsIndex, token: str) -> None:
        ...
    @property
    def port(self) -> int:
        ...
class Store:
    """
    A connection to the key-value store
    """
    def __init__(self, host: str, port: typing.SupportsInt | typing.SupportsIndex, token: str, rank: typing.SupportsInt | typing.SupportsIndex, timeout: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    def add(self, key: str, delta: typing.SupportsInt | typing.SupportsIndex) -> int:
        ...
    def check(self, keys: typing.Any) -> bool:
        ...
    def delete(self, key: str) -> bool:
        ...
    def get(self, key: str, timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> bytes:
        ...
    def set(self, key: str, value: bytes) -> None:
        ...
    def wait(self, keys: typing.Any, timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> None:
        ...
    @property
    def local_address(self) -> str:
        ...
    @property
    def rank(self) -> int:
        ...
    @property
    def timeout(self) -> float:
        ...
class Work:
    """
    Handle of a queued collective
    """
    def is_completed(self) -> bool:
        ...
    def wait_for(self, seconds: typing.SupportsFloat | typing.SupportsIndex) -> bool:
        """
        Waits up to `seconds` (<0: no limit); True when done (raises its error), False if still running
        """
    @property
    def op(self) -> str:
        ...
class ProcessGroup:
    """
    Collectives among a group of ranks
    """
    def __init__(self, store: Store, server: StoreServer, name: str, members: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], global_rank: typing.SupportsInt | typing.SupportsIndex, backend: str, timeout: typing.SupportsFloat | typing.SupportsIndex, token: str) -> None:
        ...
    def all_gather(self, output: ringloom._C.Tensor, input: ringloom._C.Tensor) -> Work:
        ...
    def all_reduce(self, tensor: ringloom._C.Tensor, op: str = 'sum') -> Work:
        ...
    def barrier(self) -> Work:
        ...
    def broadcast(self, tensor: ringloom._C.Tensor, src: typing.SupportsInt | typing.SupportsIndex) -> Work:
        ...
    def new_group(self, ranks: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], backend: str) -> ProcessGroup:
        ...
    def recv(self, tensor: ringloom._C.Tensor, src: typing.SupportsInt | typing.SupportsIndex) -> Work:
        ...
    def reduce_scatter(self, output: ringloom._C.Tensor, input: ringloom._C.Tensor, op: str = 'sum') -> Work:
        ...
    def send(self, tensor: ringloom._C.Tensor, dst: typing.SupportsInt | typing.SupportsIndex) -> Work:
        ...
    def shutdown(self) -> None:
        ...
    @property
    def backend(self) -> str:
        ...
    @property
    def cuda_transport(self) -> str:
        """
        'ipc', 'tcp (<why not ipc>)' or 'undecided' before the first CUDA op
        """
    @property
    def ipc_oneshot_max_bytes(self) -> int:
        """
        CUDA all_reduce up to this many bytes runs one-shot (same value on every rank)
        """
    @ipc_oneshot_max_bytes.setter
    def ipc_oneshot_max_bytes(self, arg1: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def members(self) -> list[int]:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def rank(self) -> int:
        ...
    @property
    def size(self) -> int:
        ...
    @property
    def store(self) -> Store:
        ...
    @property
    def timeout(self) -> float:
        ...
class NcclWork:
    """
    Handle of an NCCL op (ordered on the streams)
    """
    def is_completed(self) -> bool:
        ...
    def wait_for(self, seconds: typing.SupportsFloat | typing.SupportsIndex) -> bool:
        ...
    @property
    def op(self) -> str:
        ...
class NcclGroup:
    """
    An NCCL communicator for one group
    """
    def __init__(self, store: Store, name: str, rank: typing.SupportsInt | typing.SupportsIndex, size: typing.SupportsInt | typing.SupportsIndex, device: typing.SupportsInt | typing.SupportsIndex, timeout: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    def all_gather(self, output: ringloom._C.Tensor, input: ringloom._C.Tensor) -> NcclWork:
        ...
    def all_reduce(self, tensor: ringloom._C.Tensor, op: str = 'sum') -> NcclWork:
        ...
    def barrier(self) -> NcclWork:
        ...
    def broadcast(self, tensor: ringloom._C.Tensor, src: typing.SupportsInt | typing.SupportsIndex) -> NcclWork:
        ...
    def recv(self, tensor: ringloom._C.Tensor, src: typing.SupportsInt | typing.SupportsIndex) -> NcclWork:
        ...
    def reduce_scatter(self, output: ringloom._C.Tensor, input: ringloom._C.Tensor, op: str = 'sum') -> NcclWork:
        ...
    def send(self, tensor: ringloom._C.Tensor, dst: typing.SupportsInt | typing.SupportsIndex) -> NcclWork:
        ...
    @property
    def device(self) -> int:
        ...
    @property
    def rank(self) -> int:
        ...
    @property
    def size(self) -> int:
        ...
MAX_FRAME: int = 16777216
MAX_HELLO_FRAME: int = 4101
MAX_KEY: int = 4096
has_nccl: bool = False
