"""What tensor parallelism sends: the bytes one rank hands to its tp group, by formula and
by count.

Ring collectives over R ranks move (R-1)/R of the gathered size per rank for an all-gather
or a reduce-scatter, and twice that for an all-reduce. Per micro-batch of N tokens,
activations of A bytes per element (2 in bf16, 4 in fp32), width C:

  block      forward: 2 all-gathers + 2 reduce-scatters of [N, C]
             backward: 2 all-gathers of the upstream gradient, 2 re-gathers of the norm
             outputs, 2 reduce-scatters, 1 all-reduce of the fp32 norm-gain gradients
  embedding  forward: 1 reduce-scatter; backward: 1 all-gather
  head       forward: 1 all-gather of [N, C] and 1 of the fp32 loss statistics [N, 3];
             backward: 1 re-gather, 1 reduce-scatter, 1 all-reduce of its norm gradients

so a block costs 10 (R-1)/R N C A bytes per micro-batch and rank, against 4 (R-1)/R N C A
for Megatron's tensor parallelism without sequence parallelism (two all-reduces forward,
two backward): the same volume as reduce-scatter + all-gather, plus the two re-gathers
that let the full h1, h2 go after forward. Replicated kv heads (fewer kv heads than tp
ranks) add an all-reduce of their weight gradient in their own sub-group, not counted here.
"""
from __future__ import annotations

from typing import Any

from ..models import ModelConfig


def tp_bytes_per_micro_batch(config: ModelConfig, tp: int, tokens: int, act_bytes: int, blocks: int,
                             embedding: bool = True, head: bool = True) -> int:
    """Bytes one rank sends in its tp group for one micro-batch's forward and backward."""
    R, N, C = tp, tokens, config.n_embd

    def ring(nbytes: int) -> int:   # one all-gather / reduce-scatter of nbytes gathered
        return nbytes * (R - 1) // R

    act = ring(N * C * act_bytes)
    norm = 4 * C * (2 if config.norm == "layernorm" else 1)   # fp32 gain (+ bias) gradient
    total = blocks * (10 * act + 2 * ring(2 * norm))
    if embedding:
        total += 2 * act
    if head:
        total += 3 * act + ring(4 * 3 * N * R) + 2 * ring(norm)
    return total


class CountingGroup:
    """A process group that adds up, in ``sent``, the bytes this rank sends in each
    collective by the ring formula above (all other calls pass through)."""

    def __init__(self, group: Any):
        self.group, self.sent = group, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.group, name)

    def _ring(self, t: Any) -> int:
        elem = 2 if "bfloat16" in str(t.dtype) else 4
        n = 1
        for d in t.shape:
            n *= int(d)
        return n * elem * (self.size - 1) // self.size

    def all_gather(self, out: Any, inp: Any, async_op: bool = False) -> Any:
        self.sent += self._ring(out)
        return self.group.all_gather(out, inp, async_op=async_op)

    def reduce_scatter(self, out: Any, inp: Any, op: str = "sum", async_op: bool = False) -> Any:
        self.sent += self._ring(inp)
        return self.group.reduce_scatter(out, inp, op=op, async_op=async_op)

    def all_reduce(self, t: Any, op: str = "sum", async_op: bool = False) -> Any:
        self.sent += 2 * self._ring(t)
        return self.group.all_reduce(t, op=op, async_op=async_op)
