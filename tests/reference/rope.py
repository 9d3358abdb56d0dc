"""Rotary position embedding, rotate-half layout, float64 (csrc/ops/rope.h)."""
import numpy as np


def rope(x, n_rot_heads, base=10000.0, pos_offset=0, inverse=False):
    """x [B, T, H, D]; rotates the first n_rot_heads heads by the angle (pos_offset + t) * theta_i,
    theta_i = base^(-2i/D), pairing x[i] with x[i + D/2]; inverse rotates the other way.
    Returns a new array; the other heads are copied unchanged."""
    y = np.array(x, np.float64)
    B, T, H, D = y.shape
    half = D // 2
    theta = float(base) ** (-2.0 * np.arange(half) / D)               # [D/2]
    angle = (pos_offset + np.arange(T))[:, None] * theta[None, :]      # [T, D/2]
    cos = np.cos(angle)[None, :, None, :]
    sin = np.sin(angle)[None, :, None, :] * (-1.0 if inverse else 1.0)
    a = y[:, :, :n_rot_heads, :half].copy()
    b = y[:, :, :n_rot_heads, half:].copy()
    y[:, :, :n_rot_heads, :half] = a * cos - b * sin
    y[:, :, :n_rot_heads, half:] = b * cos + a * sin
    return y
