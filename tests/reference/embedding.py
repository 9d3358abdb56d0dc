"""Token (+ learned position) embedding, float64 (csrc/ops/embedding.h)."""
import numpy as np


def embedding(ids, wte, wpe=None):
    """out[b, t] = wte[ids[b, t]] + wpe[t]; ids [B, T], wte [V, C], wpe [maxT, C] or None."""
    out = np.asarray(wte, np.float64)[np.asarray(ids)]
    if wpe is not None:
        T = out.shape[1]
        out = out + np.asarray(wpe, np.float64)[:T]
    return out
