import numpy as np


def linear(x, w, b=None):
    """y = x @ w^T + b; w is [out, in]."""
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    return y + np.asarray(b, np.float64) if b is not None else y
