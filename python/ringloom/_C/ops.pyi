"""
Forward/backward ops (CPU fp32; CUDA bf16/fp32)
"""
from __future__ import annotations
import collections.abc
import ringloom._C
import typing
__all__: list[str] = ['adamw_step', 'adamw_write_scalars', 'add', 'add_', 'attention_auto_choice', 'attention_backend_candidates', 'attention_backward', 'attention_forward', 'cross_entropy_forward', 'cross_entropy_forward_backward', 'cross_entropy_shard_backward', 'cross_entropy_shard_combine', 'cross_entropy_shard_stats', 'cudnn_attention_built', 'embedding_backward', 'embedding_forward', 'embedding_shard_backward', 'embedding_shard_forward', 'gelu_backward', 'gelu_forward', 'get_attention_backend', 'grad_norm', 'hopper_attention_built', 'layernorm_backward', 'layernorm_forward', 'matmul_backward_input', 'matmul_backward_weight', 'matmul_forward', 'orthonormalize_columns_', 'qsgd_decode_sum', 'qsgd_encode', 'qsgd_payload_bytes', 'rmsnorm_backward', 'rmsnorm_forward', 'rope_backward', 'rope_forward', 'scale_', 'set_attention_backend', 'swiglu_backward', 'swiglu_forward', 'topk_accumulate', 'topk_compress']
def adamw_step(params: collections.abc.Sequence[ringloom._C.Tensor], grads: collections.abc.Sequence[ringloom._C.Tensor], m: collections.abc.Sequence[ringloom._C.Tensor], v: collections.abc.Sequence[ringloom._C.Tensor], weight_decay: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex], lr: typing.SupportsFloat | typing.SupportsIndex, beta1: typing.SupportsFloat | typing.SupportsIndex = 0.8999999761581421, beta2: typing.SupportsFloat | typing.SupportsIndex = 0.949999988079071, eps: typing.SupportsFloat | typing.SupportsIndex = 9.99999993922529e-09, step: typing.SupportsInt | typing.SupportsIndex = 1, max_norm: typing.SupportsFloat | typing.SupportsIndex = 0.0, grad_norm: ringloom._C.Tensor | None = None, compute: collections.abc.Sequence[ringloom._C.Tensor] = [], scalars: ringloom._C.Tensor | None = None) -> None:
    """
    scalars: optional 3-element float32 tensor [lr, 1/bc1, 1/bc2] read instead of lr and step (CUDA Graph replay; fill it with adamw_write_scalars)
    """
def adamw_write_scalars(scalars: ringloom._C.Tensor, lr: typing.SupportsFloat | typing.SupportsIndex, beta1: typing.SupportsFloat | typing.SupportsIndex = 0.8999999761581421, beta2: typing.SupportsFloat | typing.SupportsIndex = 0.949999988079071, step: typing.SupportsInt | typing.SupportsIndex = 1) -> None:
    """
    Writes [lr, 1/(1-beta1^step), 1/(1-beta2^step)] into a 3-element float32 tensor, in stream order
    """
def add(a: ringloom._C.Tensor, b: ringloom._C.Tensor) -> ringloom._C.Tensor:
    ...
def add_(a: ringloom._C.Tensor, b: ringloom._C.Tensor) -> None:
    ...
def attention_auto_choice(head_dim: typing.SupportsInt | typing.SupportsIndex, causal: bool, seq_len: typing.SupportsInt | typing.SupportsIndex, backward: bool) -> str:
    """
    The backend "auto" runs for a bf16 problem of this shape and direction (the measured table ops/attention_auto_table.h; cuDNN only where it is built)
    """
def attention_backend_candidates() -> list[str]:
    """
    The backends "auto" chooses among in this build (benchmarks/tune_attention_auto.py times each)
    """
def attention_backward(dout: ringloom._C.Tensor, qkv: ringloom._C.Tensor, out: ringloom._C.Tensor, lse: ringloom._C.Tensor, n_head: typing.SupportsInt | typing.SupportsIndex, n_kv_head: typing.SupportsInt | typing.SupportsIndex, causal: bool = True, scale: typing.SupportsFloat | typing.SupportsIndex = 0.0, deterministic: bool = False) -> ringloom._C.Tensor:
    ...
def attention_forward(qkv: ringloom._C.Tensor, n_head: typing.SupportsInt | typing.SupportsIndex, n_kv_head: typing.SupportsInt | typing.SupportsIndex, causal: bool = True, scale: typing.SupportsFloat | typing.SupportsIndex = 0.0) -> tuple[ringloom._C.Tensor, ringloom._C.Tensor]:
    ...
def cross_entropy_forward(logits: ringloom._C.Tensor, targets: ringloom._C.Tensor, ignore_index: typing.SupportsInt | typing.SupportsIndex = -100) -> ringloom._C.Tensor:
    ...
def cross_entropy_forward_backward(logits: ringloom._C.Tensor, targets: ringloom._C.Tensor, ignore_index: typing.SupportsInt | typing.SupportsIndex = -100, grad_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0) -> ringloom._C.Tensor:
    ...
def cross_entropy_shard_backward(logits: ringloom._C.Tensor, targets: ringloom._C.Tensor, lse: ringloom._C.Tensor, vocab_start: typing.SupportsInt | typing.SupportsIndex, ignore_index: typing.SupportsInt | typing.SupportsIndex = -100, grad_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0) -> None:
    ...
def cross_entropy_shard_combine(stats: ringloom._C.Tensor, targets: ringloom._C.Tensor, ignore_index: typing.SupportsInt | typing.SupportsIndex = -100) -> tuple[ringloom._C.Tensor, ringloom._C.Tensor]:
    ...
def cross_entropy_shard_stats(logits: ringloom._C.Tensor, targets: ringloom._C.Tensor, vocab_start: typing.SupportsInt | typing.SupportsIndex) -> ringloom._C.Tensor:
    ...
def cudnn_attention_built() -> bool:
    """
    Whether this build has the cuDNN attention backend (CUDA, cuDNN and the cudnn-frontend headers)
    """
def embedding_backward(ids: ringloom._C.Tensor, dout: ringloom._C.Tensor, dwte: ringloom._C.Tensor, dwpe: ringloom._C.Tensor | None = None) -> None:
    ...
def embedding_forward(ids: ringloom._C.Tensor, wte: ringloom._C.Tensor, wpe: ringloom._C.Tensor | None = None) -> ringloom._C.Tensor:
    ...
def embedding_shard_backward(ids: ringloom._C.Tensor, dout: ringloom._C.Tensor, dwte: ringloom._C.Tensor, dwpe: ringloom._C.Tensor | None = None, vocab_start: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    ...
def embedding_shard_forward(ids: ringloom._C.Tensor, wte: ringloom._C.Tensor, wpe: ringloom._C.Tensor | None = None, vocab_start: typing.SupportsInt | typing.SupportsIndex = 0) -> ringloom._C.Tensor:
    ...
def gelu_backward(dy: ringloom._C.Tensor, x: ringloom._C.Tensor, return_output: bool = False) -> typing.Any:
    ...
def gelu_forward(x: ringloom._C.Tensor) -> ringloom._C.Tensor:
    ...
def get_attention_backend() -> str:
    ...
def grad_norm(grads: collections.abc.Sequence[ringloom._C.Tensor]) -> ringloom._C.Tensor:
    ...
def hopper_attention_built() -> bool:
    """
    Whether this build has the Hopper (sm_90a) attention kernels that "ours" runs on compute capability 9.0 GPUs (bf16, head dim 64/128)
    """
def layernorm_backward(dy: ringloom._C.Tensor, x: ringloom._C.Tensor, gamma: ringloom._C.Tensor, mean: ringloom._C.Tensor, rstd: ringloom._C.Tensor, dgamma: ringloom._C.Tensor, dbeta: ringloom._C.Tensor, residual: ringloom._C.Tensor | None = None, beta: ringloom._C.Tensor | None = None, return_output: bool = False) -> typing.Any:
    ...
def layernorm_forward(x: ringloom._C.Tensor, gamma: ringloom._C.Tensor, beta: ringloom._C.Tensor, eps: typing.SupportsFloat | typing.SupportsIndex = 9.999999747378752e-06) -> tuple[ringloom._C.Tensor, ringloom._C.Tensor, ringloom._C.Tensor]:
    ...
def matmul_backward_input(dy: ringloom._C.Tensor, w: ringloom._C.Tensor) -> ringloom._C.Tensor:
    ...
def matmul_backward_weight(dy: ringloom._C.Tensor, x: ringloom._C.Tensor, dw: ringloom._C.Tensor, dbias: ringloom._C.Tensor | None = None, accumulate: bool = True) -> None:
    ...
def matmul_forward(x: ringloom._C.Tensor, w: ringloom._C.Tensor, bias: ringloom._C.Tensor | None = None, residual: ringloom._C.Tensor | None = None) -> ringloom._C.Tensor:
    ...
def orthonormalize_columns_(p: ringloom._C.Tensor) -> None:
    ...
def qsgd_decode_sum(out: ringloom._C.Tensor, gathered: ringloom._C.Tensor, world: typing.SupportsInt | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex, levels: typing.SupportsInt | typing.SupportsIndex, bucket: typing.SupportsInt | typing.SupportsIndex, bits: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    out = sum, in rank order, of the vectors the world payloads in gathered encode
    """
def qsgd_encode(g: ringloom._C.Tensor, levels: typing.SupportsInt | typing.SupportsIndex, bucket: typing.SupportsInt | typing.SupportsIndex, bits: typing.SupportsInt | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex, step: typing.SupportsInt | typing.SupportsIndex, key: typing.SupportsInt | typing.SupportsIndex, rank: typing.SupportsInt | typing.SupportsIndex) -> ringloom._C.Tensor:
    """
    QSGD payload (uint8, on g's device) of float32 g: per-bucket fp32 norms, then bits-wide codes
    """
def qsgd_payload_bytes(n: typing.SupportsInt | typing.SupportsIndex, bucket: typing.SupportsInt | typing.SupportsIndex, bits: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def rmsnorm_backward(dy: ringloom._C.Tensor, x: ringloom._C.Tensor, gamma: ringloom._C.Tensor, rstd: ringloom._C.Tensor, dgamma: ringloom._C.Tensor, residual: ringloom._C.Tensor | None = None, return_output: bool = False) -> typing.Any:
    ...
def rmsnorm_forward(x: ringloom._C.Tensor, gamma: ringloom._C.Tensor, eps: typing.SupportsFloat | typing.SupportsIndex = 9.999999747378752e-06) -> tuple[ringloom._C.Tensor, ringloom._C.Tensor]:
    ...
def rope_backward(dx: ringloom._C.Tensor, n_rot_heads: typing.SupportsInt | typing.SupportsIndex, base: typing.SupportsFloat | typing.SupportsIndex = 10000.0, pos_offset: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    ...
def rope_forward(x: ringloom._C.Tensor, n_rot_heads: typing.SupportsInt | typing.SupportsIndex, base: typing.SupportsFloat | typing.SupportsIndex = 10000.0, pos_offset: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    ...
def scale_(a: ringloom._C.Tensor, s: typing.SupportsFloat | typing.SupportsIndex) -> None:
    ...
def set_attention_backend(name: str) -> None:
    """
    Which implementation the CUDA attention op runs: "ours", "cudnn" (cuDNN fused SDPA: bf16, head dim 64/128) or "auto" (per shape and direction, the one measured fastest: ops/attention_auto_table.h). Process-wide; the CPU op ignores it
    """
def swiglu_backward(dy: ringloom._C.Tensor, x: ringloom._C.Tensor, return_output: bool = False) -> typing.Any:
    ...
def swiglu_forward(x: ringloom._C.Tensor) -> ringloom._C.Tensor:
    ...
def topk_accumulate(out: ringloom._C.Tensor, gathered: ringloom._C.Tensor, world: typing.SupportsInt | typing.SupportsIndex, k: typing.SupportsInt | typing.SupportsIndex) -> None:
    ...
def topk_compress(acc: ringloom._C.Tensor, k: typing.SupportsInt | typing.SupportsIndex) -> ringloom._C.Tensor:
    ...
