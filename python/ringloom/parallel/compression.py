"""Gradient compression for the data-parallel reduction (GradReducer's ``compression=``).

Every compressor turns one bucket of this rank's fp32 gradients into an approximation of
their *sum over the group*, written back in place, and returns the payload bytes this rank
handed to collectives for it (``comm_bytes``: the message sizes, not wire traffic; a ring
all-reduce of B bytes puts 2 (n-1)/n B on each rank's link, an all-gather (n-1) B).

  none          fp32 all-reduce (4 bytes per element)
  bf16          cast to bf16, all-reduce, cast back (2 bytes per element). Our TCP ring
                widens bf16 to fp32 for the reduction (csrc/comm/process_group.cpp,
                WireBuffer), so on the CPU backend the wire still carries 4 bytes per
                element; NCCL sends bf16. The rounding error is the point of the test.
  topk:RATIO    top-k sparsification with error feedback (Stich et al. 2018, "Sparsified SGD
                with memory"; Lin et al. 2018, DGC): each rank adds the residual it did not
                send before, keeps the k = ceil(RATIO n) largest |values| of its bucket,
                all-gathers (value, index) pairs (8 bytes each) and sums them in rank
                order; what it did not send becomes its new residual.
  powersgd:RANK PowerSGD (Vogels et al. 2019, Algorithm 1) with error feedback: each matrix
                M (the gradient plus this rank's error, viewed [rows, cols]) becomes
                P = M Q, all-reduce P, orthonormalise P, Q = M^T P, all-reduce Q, and the
                sum is approximated by P Q^T. Q is warm-started from the last step (one
                power iteration per step). Each rank's new error is M - P Q^T / n (so the
                errors sum to what the group did not send). Tensors with one dimension, or
                too small for rank-r factors to be smaller, are all-reduced uncompressed.

All ranks end with bit-identical sums: collectives return identical buffers everywhere and
the host-side sums run in rank order.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import _C

# (offset into the flat bucket, shape) of each parameter of a bucket.
Layout = Sequence[tuple[int, tuple[int, ...]]]


def parse_compression(spec: "str | Compressor | None") -> "Compressor | None":
    """'none' | 'bf16' | 'topk:RATIO' | 'powersgd:RANK' -> a compressor (None for 'none')."""
    if spec is None or isinstance(spec, Compressor):
        return spec
    s = str(spec).strip().lower()
    name, _, arg = s.partition(":")
    if name in ("", "none", "fp32"):
        return None
    if name == "bf16" and not arg:
        return BF16Compression()
    if name == "topk":
        try:
            ratio = float(arg)
        except ValueError:
            ratio = float("nan")
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"compression {spec!r}: topk needs a ratio in (0, 1], e.g. topk:0.01")
        return TopKCompression(ratio)
    if name == "powersgd":
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"compression {spec!r}: powersgd needs a positive integer rank, e.g. powersgd:2")
        return PowerSGDCompression(int(arg))
    raise ValueError(f"unknown compression {spec!r}: expected none, bf16, topk:RATIO or powersgd:RANK")


def _host(flat: Any) -> tuple[np.ndarray, Any]:
    """An fp32 NumPy view of ``flat`` (a copy for GPU tensors) and a function writing it back."""
    if flat.device == "cpu":
        return flat.numpy(), lambda: None
    host = flat.cpu()
    return host.numpy(), lambda: flat.copy_(host.to(flat.device))


class Compressor:
    name = "none"

    def reduce(self, key: int, flat: Any, numel: int, layout: Layout, group: Any) -> int:
        """Replaces flat[:numel] (this rank's bucket ``key``) by the approximate sum over
        ``group``; returns the payload bytes this rank sent."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class BF16Compression(Compressor):
    name = "bf16"

    def reduce(self, key: int, flat: Any, numel: int, layout: Layout, group: Any) -> int:
        half = flat.narrow0(0, numel).to(_C.DType.bfloat16)
        group.all_reduce(half, op="sum")
        flat.narrow0(0, numel).copy_(half.to(_C.DType.float32))
        return 2 * numel


class TopKCompression(Compressor):
    def __init__(self, ratio: float):
        self.ratio = float(ratio)
        self.name = f"topk:{ratio:g}"
        self.residual: dict[int, np.ndarray] = {}   # per bucket: what this rank has not sent yet

    def k_of(self, numel: int) -> int:
        return max(1, min(numel, math.ceil(self.ratio * numel)))

    def reduce(self, key: int, flat: Any, numel: int, layout: Layout, group: Any) -> int:
        arr, write_back = _host(flat)
        acc = arr[:numel].astype(np.float32, copy=True)
        res = self.residual.get(key)
        if res is not None:
            acc += res
        k = self.k_of(numel)
        idx = np.argpartition(np.abs(acc), numel - k)[numel - k:].astype(np.int32)
        idx.sort()
        # One message: k values, then the k int32 indices reinterpreted as fp32 bits.
        payload = np.empty(2 * k, np.float32)
        payload[:k] = acc[idx]
        payload[k:] = idx.view(np.float32)
        acc[idx] = 0.0
        self.residual[key] = acc
        gathered = np.empty(2 * k * group.size, np.float32)
        group.all_gather(gathered, payload)
        out = arr[:numel]
        out[:] = 0.0
        for r in range(group.size):
            part = gathered[2 * k * r: 2 * k * (r + 1)]
            out[part[k:].view(np.int32)] += part[:k]   # indices are distinct within a rank
        write_back()
        return 8 * k


class PowerSGDCompression(Compressor):
    def __init__(self, rank: int, seed: int = 0):
        self.rank = int(rank)
        self.name = f"powersgd:{rank}"
        self.seed = seed
        self.error: dict[int, np.ndarray] = {}        # per bucket, this rank's error (flat)
        self.q: dict[tuple[int, int], np.ndarray] = {}  # per (bucket, param): warm-started Q [cols, r]

    def _matrix(self, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """[rows, cols] when rank-r factors are smaller than the tensor, else None."""
        if len(shape) < 2:
            return None
        rows = shape[0]
        cols = int(np.prod(shape[1:]))
        r = min(self.rank, rows, cols)
        return (rows, cols) if (rows + cols) * r < rows * cols else None

    def reduce(self, key: int, flat: Any, numel: int, layout: Layout, group: Any) -> int:
        arr, write_back = _host(flat)
        m_all = arr[:numel].astype(np.float32, copy=True)
        if key in self.error:
            m_all += self.error[key]
        mats, plain = [], []
        for j, (off, shape) in enumerate(layout):
            size = int(np.prod(shape))
            rc = self._matrix(tuple(shape))
            if rc is None:
                plain.append((off, size))
            else:
                mats.append((j, off, rc))
        sent = 0
        # Uncompressed tensors: one fp32 all-reduce.
        if plain:
            u = np.concatenate([m_all[o:o + s] for o, s in plain])
            group.all_reduce(u, op="sum")
            sent += 4 * u.size
            pos = 0
            for o, s in plain:
                arr[o:o + s] = u[pos:pos + s]
                pos += s
        approx = np.zeros(numel, np.float32)   # the matrices' P Q^T, to compute the error
        if mats:
            ms, qs = [], []
            for j, off, (rows, cols) in mats:
                ms.append(m_all[off:off + rows * cols].reshape(rows, cols))
                r = min(self.rank, rows, cols)
                q = self.q.get((key, j))
                if q is None:   # the same random start on every rank
                    q = np.random.default_rng([self.seed, key, j]).standard_normal((cols, r)).astype(np.float32)
                qs.append(q)
            ps = [m @ q for m, q in zip(ms, qs)]
            sent += 4 * self._all_reduce_list(ps, group)
            ps = [_orthonormal(p) for p in ps]
            qs = [m.T @ p for m, p in zip(ms, ps)]
            sent += 4 * self._all_reduce_list(qs, group)
            for (j, off, (rows, cols)), p, q in zip(mats, ps, qs):
                self.q[(key, j)] = q
                mhat = p @ q.T
                approx[off:off + rows * cols] = mhat.reshape(-1)
                arr[off:off + rows * cols] = mhat.reshape(-1)
        # Error feedback: what this rank wanted to send minus its share of what arrived.
        err = m_all - approx / group.size
        for o, s in plain:
            err[o:o + s] = 0.0
        self.error[key] = err
        write_back()
        return sent

    @staticmethod
    def _all_reduce_list(mats: list[np.ndarray], group: Any) -> int:
        flat = np.concatenate([m.reshape(-1) for m in mats]).astype(np.float32)
        group.all_reduce(flat, op="sum")
        pos = 0
        for m in mats:
            m[...] = flat[pos:pos + m.size].reshape(m.shape)
            pos += m.size
        return flat.size


def _orthonormal(p: np.ndarray) -> np.ndarray:
    """Orthonormal columns spanning p's (Gram-Schmidt via a reduced QR, in float64)."""
    q, _ = np.linalg.qr(p.astype(np.float64))
    return q.astype(np.float32)
