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
                order; what it did not send becomes its new residual. Ties go to the lower
                index, NaN counts as largest (csrc/ops/topk.h).
  powersgd:RANK PowerSGD (Vogels et al. 2019, Algorithm 1) with error feedback: each matrix
                M (the gradient plus this rank's error, viewed [rows, cols]) becomes
                P = M Q, all-reduce P, orthonormalise P, Q = M^T P, all-reduce Q, and the
                sum is approximated by P Q^T. Q is warm-started from the last step (one
                power iteration per step); P is orthonormalised by modified Gram-Schmidt.
                Each rank's new error is M - P Q^T / n (so the errors sum to what the group
                did not send). Tensors with one dimension, or
                too small for rank-r factors to be smaller, are all-reduced uncompressed.
  qsgd:S[:BUCKET]  QSGD (Alistarh et al. 2017): stochastic quantisation of each run of
                BUCKET elements (default 512, the paper's bucket for its 4-bit runs) to S
                levels of |g_i| / ||g||, with the sign; unbiased, so no error feedback.
                Each rank all-gathers its packed levels (the fewest whole bits per element
                that hold 2S + 1 signed levels) plus one fp32 norm per bucket, and sums the
                decoded gradients in rank order. It runs on the gradient's device (ops
                qsgd_encode / qsgd_decode_sum). The math is at QSGDCompression.

Where they run: every method works on the bucket's own device (CPU tensors on the CPU,
CUDA tensors on their GPU) with ops that do the same math on both (top-k: csrc/ops/topk.h;
PowerSGD: the GEMM ops and csrc/ops/orthonormalize.h; QSGD: csrc/ops/qsgd.h), and hands the
collectives device tensors, so a GPU run copies no gradient to the host.

All ranks end with bit-identical sums: collectives return identical buffers everywhere, the
sparse and dequantised sums run in rank order, and every rank computes PowerSGD's P Q^T
from the same all-reduced factors.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import _C

# (offset into the flat bucket, shape) of each parameter of a bucket.
Layout = Sequence[tuple[int, tuple[int, ...]]]


def parse_compression(spec: "str | Compressor | None") -> "Compressor | None":
    """'none' | 'bf16' | 'topk:RATIO' | 'powersgd:RANK' | 'qsgd:S[:BUCKET]' -> a compressor
    (None for 'none')."""
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
    if name == "qsgd":
        levels, _, bucket = arg.partition(":")
        if not levels.isdigit() or not 1 <= int(levels) <= QSGDCompression.MAX_LEVELS:
            raise ValueError(f"compression {spec!r}: qsgd needs an integer number of levels in "
                             f"[1, {QSGDCompression.MAX_LEVELS}], e.g. qsgd:7 (4 bits per element)")
        if bucket and (not bucket.isdigit() or int(bucket) < 1):
            raise ValueError(f"compression {spec!r}: the qsgd bucket must be a positive integer, e.g. qsgd:7:512")
        return QSGDCompression(int(levels), int(bucket) if bucket else QSGDCompression.DEFAULT_BUCKET)
    raise ValueError(f"unknown compression {spec!r}: expected none, bf16, topk:RATIO, powersgd:RANK or "
                     "qsgd:LEVELS[:BUCKET]")


class Compressor:
    name = "none"

    def begin_step(self, step: int) -> None:
        """Called before each step's reductions with the number of steps taken before it
        (skipped ones too; a resume restores it), for compressors whose randomness must
        follow the step."""

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
    """Top-k with error feedback, on the bucket's own device: topk_compress picks the k
    largest |values| of gradient + residual (ties to the lower index, the same set on CPU
    and GPU: csrc/ops/topk.h) and zeroes them in the accumulator, which stays behind as the
    residual; the payloads are all-gathered and topk_accumulate adds them in rank order."""

    def __init__(self, ratio: float):
        self.ratio = float(ratio)
        self.name = f"topk:{ratio:g}"
        self.residual: dict[int, Any] = {}   # per bucket, a Tensor: what this rank has not sent yet

    def k_of(self, numel: int) -> int:
        return max(1, min(numel, math.ceil(self.ratio * numel)))

    def reduce(self, key: int, flat: Any, numel: int, layout: Layout, group: Any) -> int:
        grad = flat.narrow0(0, numel)
        acc = self.residual.get(key)
        if acc is None:
            acc = self.residual[key] = grad.clone()
        else:
            _C.ops.add_(acc, grad)
        k = self.k_of(numel)
        payload = _C.ops.topk_compress(acc, k)   # acc keeps what was not sent
        gathered = _C.empty([2 * k * group.size], "float32", flat.device)
        group.all_gather(gathered, payload)
        _C.ops.topk_accumulate(grad, gathered, group.size, k)
        return 8 * k


class PowerSGDCompression(Compressor):
    """PowerSGD with error feedback, on the bucket's own device: the products are the
    linear layer's GEMM ops (P = M Q is matmul_forward with Q stored transposed, [r, cols];
    Q^T = P^T M is matmul_backward_weight; P Q^T is matmul_backward_input; on a GPU they
    run fp32 at TF32 precision, ops/matmul.h) and P's columns are orthonormalised by
    modified Gram-Schmidt (orthonormalize_columns_, the same algorithm on CPU and GPU)."""

    def __init__(self, rank: int, seed: int = 0):
        self.rank = int(rank)
        self.name = f"powersgd:{rank}"
        self.seed = seed
        self.error: dict[int, Any] = {}   # per bucket, this rank's error (a flat Tensor)
        # Per bucket, the warm-started Q^T [r, cols] of each matrix back to back (a flat Tensor).
        self.q: dict[int, Any] = {}

    def _matrix(self, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """[rows, cols] when rank-r factors are smaller than the tensor, else None."""
        if len(shape) < 2:
            return None
        rows = shape[0]
        cols = int(np.prod(shape[1:]))
        r = min(self.rank, rows, cols)
        return (rows, cols) if (rows + cols) * r < rows * cols else None

    def _initial_q(self, key: int, mats: list[tuple[int, int, tuple[int, int], int]], device: str) -> Any:
        """Every matrix's random start Q^T, the same on every rank; made on the host once per
        bucket and moved to the device."""
        qs = [np.random.default_rng([self.seed, key, j]).standard_normal((cols, r)).astype(np.float32).T.reshape(-1)
              for j, _, (_, cols), r in mats]
        return _C.from_numpy(np.concatenate(qs)).to(device)

    def reduce(self, key: int, flat: Any, numel: int, layout: Layout, group: Any) -> int:
        device = flat.device
        grad = flat.narrow0(0, numel)
        m = self.error.get(key)   # becomes M = gradient + error, then the new error
        if m is None:
            m = self.error[key] = grad.clone()
        else:
            _C.ops.add_(m, grad)
        mats, plain = [], []
        for j, (off, shape) in enumerate(layout):
            rc = self._matrix(tuple(shape))
            if rc is None:
                plain.append((off, int(np.prod(shape))))
            else:
                mats.append((j, off, rc, min(self.rank, *rc)))
        sent = 0
        # Uncompressed tensors: one fp32 all-reduce; their error is zero.
        if plain:
            u = _C.empty([sum(s for _, s in plain)], "float32", device)
            sent += 4 * self._all_reduce_packed(u, [m.narrow0(o, s) for o, s in plain], group)
            for (o, s), part in zip(plain, _views(u, [s for _, s in plain])):
                grad.narrow0(o, s).copy_(part)
                m.narrow0(o, s).zero_()
        if mats:
            if key not in self.q:
                self.q[key] = self._initial_q(key, mats, device)
            ms = [m.narrow0(off, rows * cols).reshape([rows, cols]) for _, off, (rows, cols), _ in mats]
            qts = [q.reshape([r, cols]) for q, (_, _, (_, cols), r) in
                   zip(_views(self.q[key], [r * cols for _, _, (_, cols), r in mats]), mats)]
            # P = M Q for every matrix, all-reduced as one buffer.
            p_flat = _C.empty([sum(rows * r for _, _, (rows, _), r in mats)], "float32", device)
            ps = [_C.ops.matmul_forward(mj, qt) for mj, qt in zip(ms, qts)]
            sent += 4 * self._all_reduce_packed(p_flat, [p.reshape([-1]) for p in ps], group)
            ps = [v.reshape([rows, r]) for v, (_, _, (rows, _), r) in
                  zip(_views(p_flat, [rows * r for _, _, (rows, _), r in mats]), mats)]
            for p in ps:
                _C.ops.orthonormalize_columns_(p)
            # Q^T = P^T M, written over the previous Q^T (the warm start of the next step).
            for p, mj, qt in zip(ps, ms, qts):
                _C.ops.matmul_backward_weight(p, mj, qt, None, accumulate=False)
            group.all_reduce(self.q[key], op="sum")
            sent += 4 * self.q[key].numel()
            for p, mj, qt, (_, off, (rows, cols), _) in zip(ps, ms, qts, mats):
                approx = _C.ops.matmul_backward_input(p, qt)   # P Q^T, the sum's approximation
                grad.narrow0(off, rows * cols).copy_(approx.reshape([-1]))
                # Error feedback: what this rank wanted to send minus its share of what arrived.
                _C.ops.scale_(approx, -1.0 / group.size)
                _C.ops.add_(mj, approx)
        return sent

    @staticmethod
    def _all_reduce_packed(buf: Any, parts: list[Any], group: Any) -> int:
        """Copies the flat tensors ``parts`` into ``buf`` back to back and all-reduces it;
        returns its element count."""
        for view, part in zip(_views(buf, [p.numel() for p in parts]), parts):
            view.copy_(part)
        group.all_reduce(buf, op="sum")
        return buf.numel()


def _views(flat: Any, sizes: list[int]) -> list[Any]:
    """Consecutive views of ``flat`` with these element counts."""
    out, pos = [], 0
    for s in sizes:
        out.append(flat.narrow0(pos, s))
        pos += s
    return out


class QSGDCompression(Compressor):
    """QSGD (Alistarh, Grubic, Li, Tomioka, Vojnovic 2017, "QSGD: Communication-Efficient
    SGD via Gradient Quantization and Encoding"), with s = ``levels``, on runs ("buckets")
    of ``bucket`` consecutive elements of this rank's gradient.

    For a bucket v in R^d, with r_i = s |v_i| / ||v||_2 in [0, s] and l_i = floor(r_i):

        Q_s(v)_i = ||v||_2 * sgn(v_i) * xi_i / s,
        xi_i = l_i + 1 with probability p_i = r_i - l_i, else l_i.

    Unbiased: E[xi_i] = l_i + p_i = r_i, so E[Q_s(v)_i] = ||v|| sgn(v_i) r_i / s = v_i.
    Variance (their Lemma 3.1): Var(xi_i) = p_i (1 - p_i) <= 1/4 per element, and
        E ||Q_s(v) - v||^2 = (||v|| / s)^2 sum_i p_i (1 - p_i) <= min(d / s^2, sqrt(d) / s) ||v||^2
    (the first from p(1-p) <= 1/4 on all d elements, the second from p(1-p) <= p and
    sum_i r_i <= s sqrt(d)): smaller buckets or more levels, less noise.

    Encoding (what is sent): per bucket its norm as fp32, rounded *up* so that r_i <= s
    holds exactly for the norm the receiver multiplies by (rounding it down could push r_i
    past s and force a clip, a bias); per element the signed level sgn(v_i) xi_i in
    [-s, s] as the code sgn(v_i) xi_i + s in [0, 2s], packed in b = ceil(log2(2s + 1))
    bits (s = 1: 2 bits, s = 7: 4 bits, s = 127: 8 bits). The paper's Elias coding of
    the sparse levels would send fewer bits for small s; fixed-width codes keep every
    rank's payload the same size, which an all-gather needs. A rank sends
    4 ceil(n / bucket) + ceil(n b / 8) bytes for n elements: that is what reduce returns.

    Randomness: xi_i = l_i + [u_i < p_i], with u_i in [0, 1) from a counter-based generator
    (splitmix64, csrc/ops/qsgd_math.h) keyed by (seed, step t, bucket-list ``key``, rank r)
    and indexed by the element's position i in flat[:numel]: independent between ranks (each rank's quantisation noise is
    its own, so the sum's variance is the sum of theirs), the same in every run and after
    a resume (t is the step count, see begin_step), and the same on CPU and GPU.

    Where it runs: on the gradient's own device, in the ops qsgd_encode and qsgd_decode_sum
    (csrc/ops/qsgd.h: the norm's float64 summation order, the packing, non-finite input),
    which give the same payload bytes and the same sums, bit for bit, on CPU and CUDA; the
    payloads are all-gathered as uint8 tensors on that device, so no gradient data goes
    through the host. Every rank decodes the same gathered payloads and sums them in rank
    order, so all ranks end with bit-identical gradients. A bucket holding a NaN or inf
    decodes to NaN on every rank, which the trainer's non-finite check then sees.
    """

    DEFAULT_BUCKET = 512
    MAX_LEVELS = 32767   # codes up to 2s = 65534 fit 16 bits

    def __init__(self, levels: int, bucket: int = DEFAULT_BUCKET, seed: int = 0):
        if not 1 <= int(levels) <= self.MAX_LEVELS:
            raise ValueError(f"QSGDCompression: levels must be in [1, {self.MAX_LEVELS}], got {levels}")
        if int(bucket) < 1:
            raise ValueError(f"QSGDCompression: bucket must be positive, got {bucket}")
        if int(seed) < 0:
            raise ValueError(f"QSGDCompression: seed must be >= 0, got {seed}")
        self.levels, self.bucket, self.seed = int(levels), int(bucket), int(seed)
        self.bits = math.ceil(math.log2(2 * self.levels + 1))
        self.name = f"qsgd:{self.levels}" + (f":{self.bucket}" if self.bucket != self.DEFAULT_BUCKET else "")
        self.step = 0

    def begin_step(self, step: int) -> None:
        self.step = int(step)

    def payload_bytes(self, n: int) -> int:
        return _C.ops.qsgd_payload_bytes(n, self.bucket, self.bits)

    def reduce(self, key: int, flat: Any, numel: int, layout: Layout, group: Any) -> int:
        g = flat.narrow0(0, numel)
        payload = _C.ops.qsgd_encode(g, self.levels, self.bucket, self.bits, self.seed, self.step, key, group.rank)
        size = payload.numel()
        gathered = _C.empty([size * group.size], "uint8", flat.device)
        group.all_gather(gathered, payload)
        _C.ops.qsgd_decode_sum(g, gathered, group.size, numel, self.levels, self.bucket, self.bits)
        return size

