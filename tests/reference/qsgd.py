"""QSGD (Alistarh et al. 2017) encoding and rank-order decoding, in float64 NumPy, bit for
bit what the ops compute (csrc/ops/qsgd.h documents the format, the norm's summation order
and the generator): the norms, the codes, the packed payload and the fp32 sums."""
from __future__ import annotations

import math

import numpy as np

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
LANES = 32


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (products wrap mod 2^64)."""
    z = np.asarray(z, np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stream_of(seed: int, step: int, key: int, rank: int) -> int:
    """The generator state: h = mix64((h ^ x) + GOLDEN) for x = seed, step, key, rank, from 0."""
    h = 0
    for x in (seed, step, key, rank):
        h = int(mix64(np.array([((h ^ x) + GOLDEN) & MASK], np.uint64))[0])
    return h


def uniform(stream: int, n: int) -> np.ndarray:
    """u_i = top 53 bits of mix64(stream + (i + 1) GOLDEN), times 2^-53, for i < n."""
    with np.errstate(over="ignore"):
        ctr = np.uint64(stream) + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(GOLDEN)
    return (mix64(ctr) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def bucket_sumsq(v: np.ndarray) -> float:
    """Sum of squares in the ops' order: 32 strided lanes, then the xor-butterfly tree."""
    lane = []
    for t in range(LANES):
        acc = 0.0
        for x in v[t::LANES].astype(np.float64):
            acc += x * x
        lane.append(acc)
    o = LANES // 2
    while o:
        for t in range(o):
            lane[t] = lane[t] + lane[t + o]
        o //= 2
    return lane[0]


def norm_of(sumsq: float) -> np.float32:
    """sqrt rounded to fp32, then up one ulp if below the float64 norm; NaN if not finite."""
    norm = math.sqrt(sumsq)
    with np.errstate(over="ignore"):
        n32 = np.float32(norm)
    if float(n32) < norm:
        n32 = np.nextafter(n32, np.float32(np.inf))
    return n32 if np.isfinite(n32) else np.float32(np.nan)


def quantize(g: np.ndarray, levels: int, bucket: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """g fp32 [n], draws u [n] -> (fp32 norms [ceil(n / bucket)], codes uint16 [n] in [0, 2s])."""
    s, n = levels, g.size
    norms = np.array([norm_of(bucket_sumsq(g[b:b + bucket])) for b in range(0, n, bucket)], np.float32)
    scale = np.repeat(norms.astype(np.float64), bucket)[:n]
    g64 = g.astype(np.float64)
    ok = scale > 0   # False for NaN norms and all-zero buckets: level 0
    r = np.zeros(n)
    r[ok] = (s * np.abs(g64[ok])) / scale[ok]
    lo = np.floor(r)
    xi = lo + (u < r - lo)
    codes = np.where(ok, np.sign(g64) * xi + s, s).astype(np.uint16)
    return norms, codes


def pack(norms: np.ndarray, codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 payload: the norms' bytes, then the codes, ``bits`` each, little-endian."""
    planes = ((codes[:, None] >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8)
    return np.concatenate([np.ascontiguousarray(norms, np.float32).view(np.uint8),
                           np.packbits(planes.reshape(-1), bitorder="little")])


def unpack(payload: np.ndarray, n: int, bucket: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    nb = -(-n // bucket)
    norms = payload[:4 * nb].copy().view(np.float32)
    planes = np.unpackbits(payload[4 * nb:], count=n * bits, bitorder="little").reshape(n, bits)
    codes = (planes.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(axis=1, dtype=np.uint16)
    return norms, codes


def dequantize(norms: np.ndarray, codes: np.ndarray, levels: int, bucket: int) -> np.ndarray:
    """float32((code - s) * (norm / s)), the float64 operations of the ops."""
    scale = np.repeat(norms.astype(np.float64) / levels, bucket)[:codes.size]
    return ((codes.astype(np.float64) - levels) * scale).astype(np.float32)


def encode(g: np.ndarray, levels: int, bucket: int, bits: int, seed: int, step: int, key: int,
           rank: int) -> np.ndarray:
    """The payload qsgd_encode sends for g."""
    u = uniform(stream_of(seed, step, key, rank), g.size)
    return pack(*quantize(np.asarray(g, np.float32).reshape(-1), levels, bucket, u), bits)


def decode_sum(gathered: np.ndarray, world: int, n: int, levels: int, bucket: int, bits: int) -> np.ndarray:
    """fp32 sum, in rank order from 0, of the vectors the world payloads encode."""
    size = gathered.size // world
    out = np.zeros(n, np.float32)
    for r in range(world):
        norms, codes = unpack(gathered[r * size:(r + 1) * size], n, bucket, bits)
        out += dequantize(norms, codes, levels, bucket)
    return out
