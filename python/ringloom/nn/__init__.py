"""Layers with explicit forward/backward (the C++ layers of csrc/layers/).

Every layer keeps activations per micro-batch ``slot`` (an int) and splits its backward:

    y  = layer.forward(slot, x)           saves what backward needs under slot
    dx = layer.backward_input(slot, dy)   input gradient; keeps what the weight half needs
    layer.backward_weight(slot)           accumulates param grads (float32), frees the slot
    dx = layer.backward(slot, dy)         both halves
    y  = layer.infer(x)                   forward, nothing saved
    layer.params()                        [Param(name, value, grad, decay)]
    layer.zero_grad(); layer.release(slot); layer.slots()

The layer keeps references to x (and dy) until the slot is freed: do not overwrite them
in place before then.

Shapes (B batch, T sequence, C n_embd, V vocab):

- ``Embedding(vocab_size, n_embd, max_seq_len, learned_positions=True, dtype, device)``:
  forward(slot, ids int32 [B, T]) -> [B, T, C]; backward_input returns None.
- ``TransformerBlock(BlockConfig(...), dtype, device)``: [B, T, C] -> [B, T, C]; pre-norm
  attention (RoPE, GQA) and MLP (GELU or SwiGLU) with residual adds. ``recompute`` ("none",
  "selective", "full") sets what a slot keeps for backward; ``saved_bytes(slot)`` reports it.
- ``LMHead(n_embd, vocab_size, norm, norm_eps, dtype, device)`` or ``LMHead(tied=embedding,
  norm=..., norm_eps=...)``: forward(slot, x) -> logits [B, T, V];
  forward_loss(slot, x, targets int32 [B, T], grad_scale, ignore_index) -> per-position
  losses [B, T] float32, then backward_input(slot, None); logits(x), loss(x, targets).
"""
from .._C import layers as _layers

Param = _layers.Param
Layer = _layers.Layer
BlockConfig = _layers.BlockConfig
Embedding = _layers.Embedding
TransformerBlock = _layers.TransformerBlock
LMHead = _layers.LMHead

__all__ = ["Param", "Layer", "BlockConfig", "Embedding", "TransformerBlock", "LMHead"]
