"""LayerNorm and RMSNorm over the last dim, float64 (csrc/ops/layernorm.h, rmsnorm.h)."""
import numpy as np


def layernorm_stats(x, eps):
    """Returns (mean, rstd), one per row (the leading dims flattened)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=-1)
    var = ((x - mean[..., None]) ** 2).mean(axis=-1)
    return mean.reshape(-1), (1.0 / np.sqrt(var + eps)).reshape(-1)


def layernorm(x, gamma, beta, eps):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta (biased variance)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(gamma, np.float64) + np.asarray(beta, np.float64)


def rmsnorm_rstd(x, eps):
    """1 / sqrt(mean(x^2) + eps), one per row."""
    x = np.asarray(x, np.float64)
    return (1.0 / np.sqrt((x * x).mean(axis=-1) + eps)).reshape(-1)


def rmsnorm(x, gamma, eps):
    """y = x / sqrt(mean(x^2) + eps) * gamma."""
    x = np.asarray(x, np.float64)
    ms = (x * x).mean(axis=-1, keepdims=True)
    return x / np.sqrt(ms + eps) * np.asarray(gamma, np.float64)
