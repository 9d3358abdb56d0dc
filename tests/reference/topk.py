"""Top-k selection with error feedback and the rank-ordered sum of sparse payloads
(csrc/ops/topk.h), in NumPy."""
import numpy as np


def topk_indices(acc: np.ndarray, k: int) -> np.ndarray:
    """The k indices of the largest |acc| (NaN above everything, all NaNs equal, ties to the
    lower index), ascending."""
    mag = np.abs(acc.astype(np.float64))
    mag[np.isnan(mag)] = np.inf   # NaN sorts above +inf: rank by (is NaN, |x|)
    order = np.lexsort((np.arange(acc.size), -mag, -np.isnan(acc).astype(np.int64)))
    return np.sort(order[:k]).astype(np.int32)


def topk_compress(acc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(payload fp32 [2k], residual fp32 [n]) for the accumulator acc."""
    idx = topk_indices(acc, k)
    payload = np.concatenate([acc[idx].astype(np.float32), idx.view(np.float32)])
    residual = acc.astype(np.float32, copy=True)
    residual[idx] = 0.0
    return payload, residual


def topk_accumulate(gathered: np.ndarray, n: int, world: int, k: int) -> np.ndarray:
    """Rank 0's values, then rank 1's, ... added into zeros, in float64."""
    out = np.zeros(n, np.float64)
    for r in range(world):
        part = gathered[2 * k * r:2 * k * (r + 1)]
        out[part[k:].view(np.int32)] += part[:k]
    return out
