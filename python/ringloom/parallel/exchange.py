"""Which changes to the data-parallel gradient exchange combine: ZeRO-1 (reduce-scatter and
sharded AdamW), gradient compression (parallel/compression.py) and local SGD (averaging
weights every H steps instead of gradients every step). ParallelEngine and the trainer's
option check (train/options.py) both ask here."""
from __future__ import annotations


def compression_kind(spec: str | None) -> str:
    """"none" for no compression, else the method name of a --compression spec."""
    kind = (spec or "none").split(":")[0].strip().lower()
    return "none" if kind in ("", "none", "fp32") else kind


def check_gradient_exchange(zero: bool, compression: str | None, local_sgd: int) -> None:
    """The three ways to change the dp gradient exchange, and which of them combine."""
    if not isinstance(local_sgd, int) or isinstance(local_sgd, bool) or local_sgd < 0:
        raise ValueError(f"local_sgd must be an integer >= 0 (0 = off), got {local_sgd!r}")
    compressed = compression_kind(compression) != "none"
    if local_sgd and (zero or compressed):
        raise ValueError("local_sgd averages weights, not gradients: it cannot be combined with zero or "
                         "compression")
    if compressed and zero:
        raise ValueError(f"gradient compression {compression!r} cannot be combined with ZeRO (it compresses the "
                         "all-reduce, ZeRO reduce-scatters)")
