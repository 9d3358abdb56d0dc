"""
Layers with explicit forward/backward
"""
from __future__ import annotations
import ringloom._C
import typing
__all__: list[str] = ['BlockConfig', 'Embedding', 'LMHead', 'Layer', 'Param', 'TransformerBlock']
class Param:
    """
    A parameter: name, value (layer dtype), grad (float32), decay (weight decay applies)
    """
    def __repr__(self) -> str:
        ...
    @property
    def decay(self) -> bool:
        ...
    @property
    def grad(self) -> ringloom._C.Tensor:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> ringloom._C.Tensor:
        ...
class BlockConfig:
    """
    Configuration of one TransformerBlock
    """
    def __init__(self, n_embd: typing.SupportsInt | typing.SupportsIndex, n_head: typing.SupportsInt | typing.SupportsIndex, n_kv_head: typing.SupportsInt | typing.SupportsIndex = 0, ffn_hidden: typing.SupportsInt | typing.SupportsIndex = 0, norm: str = 'layernorm', mlp: str = 'gelu', bias: bool = True, rope: bool = False, rope_base: typing.SupportsFloat | typing.SupportsIndex = 10000.0, norm_eps: typing.SupportsFloat | typing.SupportsIndex = 9.999999747378752e-06) -> None:
        """
        n_kv_head 0 means n_head; ffn_hidden 0 means 4 * n_embd
        """
    @property
    def bias(self) -> bool:
        ...
    @property
    def ffn_hidden(self) -> int:
        ...
    @property
    def head_dim(self) -> int:
        ...
    @property
    def mlp(self) -> str:
        ...
    @property
    def n_embd(self) -> int:
        ...
    @property
    def n_head(self) -> int:
        ...
    @property
    def n_kv_head(self) -> int:
        ...
    @property
    def norm(self) -> str:
        ...
    @property
    def norm_eps(self) -> float:
        ...
    @property
    def rope(self) -> bool:
        ...
    @property
    def rope_base(self) -> float:
        ...
class Layer:
    """
    Base of the layers: slots, forward/backward halves
    """
    def backward(self, slot: typing.SupportsInt | typing.SupportsIndex, dy: ringloom._C.Tensor | None) -> ringloom._C.Tensor | None:
        """
        backward_input then backward_weight
        """
    def backward_input(self, slot: typing.SupportsInt | typing.SupportsIndex, dy: ringloom._C.Tensor | None) -> ringloom._C.Tensor | None:
        """
        Input gradient (None for Embedding); keeps what backward_weight needs
        """
    def backward_weight(self, slot: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Accumulate the parameter gradients of `slot` and free it
        """
    def forward(self, slot: typing.SupportsInt | typing.SupportsIndex, x: ringloom._C.Tensor) -> ringloom._C.Tensor:
        """
        Forward for micro-batch `slot`, saving what backward needs
        """
    def infer(self, x: ringloom._C.Tensor) -> ringloom._C.Tensor:
        """
        Forward without saving anything
        """
    def params(self) -> list[Param]:
        """
        This layer's parameters (local names)
        """
    def release(self, slot: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Drop a slot's activations (no-op when unused)
        """
    def release_grads(self) -> None:
        """
        Free the gradients' memory until the next backward_weight or zero_grad (torch's zero_grad(set_to_none=True)); meanwhile .grad has no memory
        """
    def replace_grads_next(self) -> None:
        """
        The next backward's gradients replace .grad instead of adding to it (zero_grad without the pass over the gradients, where the layer writes them in place)
        """
    def slots(self) -> list[int]:
        """
        Slots holding activations, ascending
        """
    def zero_grad(self) -> None:
        """
        Zero every gradient (giving released ones memory again)
        """
    @property
    def kind(self) -> str:
        ...
class Embedding(Layer):
    def __init__(self, vocab_size: typing.SupportsInt | typing.SupportsIndex, n_embd: typing.SupportsInt | typing.SupportsIndex, max_seq_len: typing.SupportsInt | typing.SupportsIndex, learned_positions: bool = True, dtype: typing.Any = 'float32', device: typing.Any = 'cpu') -> None:
        ...
    @property
    def max_seq_len(self) -> int:
        ...
    @property
    def n_embd(self) -> int:
        ...
    @property
    def vocab_size(self) -> int:
        ...
    @property
    def wte(self) -> Param:
        ...
class TransformerBlock(Layer):
    def __init__(self, config: BlockConfig, dtype: typing.Any = 'float32', device: typing.Any = 'cpu') -> None:
        ...
    def saved_bytes(self, slot: typing.SupportsInt | typing.SupportsIndex) -> int:
        """
        Bytes of activations the slot holds now (each storage once, the block input included)
        """
    @property
    def attention_backend(self) -> str | None:
        """
        This block's attention implementation on a GPU: "ours" | "cudnn" | "auto", or None for the process-wide setting (ops.set_attention_backend)
        """
    @attention_backend.setter
    def attention_backend(self, arg1: str | None) -> None:
        ...
    @property
    def config(self) -> BlockConfig:
        ...
    @property
    def deterministic_attention(self) -> bool:
        """
        Whether the attention backward is bitwise reproducible run to run (slower on a GPU; not with the cudnn backend)
        """
    @deterministic_attention.setter
    def deterministic_attention(self, arg1: bool) -> None:
        ...
    @property
    def recompute(self) -> str:
        """
        What a slot keeps between forward and backward_input: "none" (everything), "selective" (recomputes the norm outputs and the MLP activation), "full" (only the block input; the forward is re-run in backward_input). Applies to later forwards.
        """
    @recompute.setter
    def recompute(self, arg1: str) -> None:
        ...
class LMHead(Layer):
    @typing.overload
    def __init__(self, n_embd: typing.SupportsInt | typing.SupportsIndex, vocab_size: typing.SupportsInt | typing.SupportsIndex, norm: str = 'layernorm', norm_eps: typing.SupportsFloat | typing.SupportsIndex = 9.999999747378752e-06, dtype: typing.Any = 'float32', device: typing.Any = 'cpu') -> None:
        ...
    @typing.overload
    def __init__(self, tied: Embedding, norm: str = 'layernorm', norm_eps: typing.SupportsFloat | typing.SupportsIndex = 9.999999747378752e-06) -> None:
        """
        Tied to the embedding's wte: shares its value and grad tensors
        """
    def forward_loss(self, slot: typing.SupportsInt | typing.SupportsIndex, x: ringloom._C.Tensor, targets: ringloom._C.Tensor, grad_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0, ignore_index: typing.SupportsInt | typing.SupportsIndex = -100) -> ringloom._C.Tensor:
        ...
    def logits(self, x: ringloom._C.Tensor) -> ringloom._C.Tensor:
        ...
    def loss(self, x: ringloom._C.Tensor, targets: ringloom._C.Tensor, ignore_index: typing.SupportsInt | typing.SupportsIndex = -100) -> ringloom._C.Tensor:
        ...
    @property
    def tied(self) -> bool:
        ...
    @property
    def vocab_size(self) -> int:
        ...
    @property
    def weight(self) -> Param:
        ...
