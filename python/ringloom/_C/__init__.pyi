"""
ringloom's compiled core
"""
from __future__ import annotations
import collections.abc
import typing
import typing_extensions
from . import ops
from . import layers
from . import comm
__all__: list[str] = ['CudaGraph', 'DType', 'Tensor', 'comm', 'cuda_available', 'cuda_device_count', 'cuda_empty_cache', 'cuda_memory_stats', 'cuda_reset_peak_memory', 'cuda_synchronize', 'empty', 'from_dlpack', 'from_numpy', 'get_num_threads', 'has_cuda_build', 'host_transfer_stats', 'layers', 'ops', 'pinned_empty', 'reset_host_transfer_stats', 'set_num_threads', 'zeros']
class DType:
    """
    Members:
    
      float32
    
      bfloat16
    
      int32
    
      int64
    
      uint8
    
      float16
    """
    __members__: typing.ClassVar[dict[str, DType]]
    bfloat16: typing.ClassVar[DType]
    float16: typing.ClassVar[DType]
    float32: typing.ClassVar[DType]
    int32: typing.ClassVar[DType]
    int64: typing.ClassVar[DType]
    uint8: typing.ClassVar[DType]
    @typing.overload
    def __eq__(self, other: DType) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: DType) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @typing.overload
    def __str__(self) -> str:
        ...
    @typing.overload
    def __str__(self) -> str:
        ...
    @property
    def itemsize(self) -> int:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class Tensor:
    """
    A contiguous n-d array on the CPU or a CUDA device
    """
    def __array__(self, dtype: typing.Any = None, copy: typing.Any = None) -> numpy.ndarray:
        ...
    def __dlpack__(self, *, stream: typing.Any = None, max_version: typing.Any = None, dl_device: typing.Any = None, copy: typing.Any = None) -> typing_extensions.CapsuleType:
        ...
    def __dlpack_device__(self) -> tuple[int, int]:
        ...
    def __len__(self) -> int:
        ...
    def __repr__(self) -> str:
        ...
    def allocate_storage_(self) -> None:
        """
        Fresh uninitialised memory for this tensor's whole storage
        """
    def bind_storage_(self, src: Tensor) -> None:
        """
        Point this tensor's whole storage at src's memory (same dtype, size, device); keeps src alive
        """
    def clone(self) -> Tensor:
        ...
    def copy_(self, src: Tensor) -> Tensor:
        ...
    def cpu(self) -> Tensor:
        ...
    def cuda(self, index: typing.SupportsInt | typing.SupportsIndex = 0) -> Tensor:
        ...
    def data_ptr(self) -> int:
        ...
    def narrow0(self, start: typing.SupportsInt | typing.SupportsIndex, length: typing.SupportsInt | typing.SupportsIndex) -> Tensor:
        ...
    def numel(self) -> int:
        ...
    def numpy(self) -> numpy.ndarray:
        """
        A NumPy array: a view for CPU tensors (bfloat16 as ml_dtypes.bfloat16), a copy for CUDA tensors
        """
    def release_storage_(self) -> None:
        """
        Free the memory of this tensor's whole storage (every view of it sees no memory until bind_storage_/allocate_storage_; ops must not get it meanwhile)
        """
    def reshape(self, *args) -> Tensor:
        ...
    def shares_memory(self, arg0: Tensor) -> bool:
        ...
    def size(self, dim: typing.SupportsInt | typing.SupportsIndex) -> int:
        ...
    def storage_id(self) -> int:
        """
        A number naming this tensor's storage, stable while its memory is released and bound again
        """
    def to(self, target: typing.Any) -> Tensor:
        """
        Copy to a device ('cpu', 'cuda:0') or convert to a dtype
        """
    def zero_(self) -> Tensor:
        ...
    @property
    def device(self) -> str:
        ...
    @property
    def dtype(self) -> DType:
        ...
    @property
    def has_memory(self) -> bool:
        """
        False while the storage is released (core/storage_swap.h)
        """
    @property
    def is_cuda(self) -> bool:
        ...
    @property
    def nbytes(self) -> int:
        ...
    @property
    def ndim(self) -> int:
        ...
    @property
    def read_only(self) -> bool:
        """
        Whether this tensor views read-only memory (writes into it raise)
        """
    @property
    def shape(self) -> tuple:
        ...
class CudaGraph:
    """
    A CUDA Graph of the work issued on a device's compute stream between capture_begin and capture_end; replay() launches it again (same kernels, arguments, addresses)
    """
    def __init__(self, device: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
        ...
    def capture_abort(self) -> None:
        """
        Discard a capture after an error (no-op when not capturing)
        """
    def capture_begin(self) -> None:
        """
        Start recording the compute stream; allocations come from this graph's private pool, from the cache only (no cudaMalloc)
        """
    def capture_end(self) -> None:
        """
        Stop recording and instantiate
        """
    def replay(self) -> None:
        """
        Launch the graph on the compute stream
        """
    @property
    def capturing(self) -> bool:
        ...
    @property
    def device(self) -> int:
        ...
    @property
    def num_nodes(self) -> int:
        ...
    @property
    def ready(self) -> bool:
        ...
def cuda_available() -> bool:
    ...
def cuda_device_count() -> int:
    ...
def cuda_empty_cache(device: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    ...
def cuda_memory_stats(device: typing.SupportsInt | typing.SupportsIndex = 0) -> dict:
    """
    Caching-allocator statistics for a CUDA device
    """
def cuda_reset_peak_memory(device: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    ...
def cuda_synchronize(device: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    ...
def empty(shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], dtype: typing.Any = 'float32', device: typing.Any = 'cpu') -> Tensor:
    ...
def from_dlpack(obj: typing.Any) -> Tensor:
    """
    Zero-copy import from any DLPack producer
    """
def from_numpy(array: typing.Any) -> Tensor:
    """
    Zero-copy view of a C-contiguous NumPy array (float32, bfloat16, float16, int32, int64, uint8). A read-only array gives a read-only tensor: ops that write into it raise ValueError
    """
def get_num_threads() -> int:
    """
    Threads the CPU ops use (OpenMP loops and OpenBLAS GEMMs).
    """
def host_transfer_stats() -> dict:
    """
    Bytes and copies Tensor copies moved between host memory and a device in this process (device->host: to_host_*, host->device: from_host_*) since the start or the last reset
    """
def pinned_empty(shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], dtype: typing.Any = 'float32') -> Tensor:
    """
    An uninitialised CPU tensor in page-locked memory (device copies into it run at full PCIe speed); plain host memory where no CUDA device is visible or the build has no CUDA
    """
def reset_host_transfer_stats() -> None:
    ...
def set_num_threads(n: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Set the threads of the CPU ops: OpenMP (for the calling thread) and OpenBLAS (process-wide) together. 1 <= n <= max(64, 4 x the hardware threads); anything else raises ValueError.
    """
def zeros(shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], dtype: typing.Any = 'float32', device: typing.Any = 'cpu') -> Tensor:
    ...
has_cuda_build: bool = False
