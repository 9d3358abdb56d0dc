"""GELU (tanh approximation) and SwiGLU, float64 (csrc/ops/activation.h)."""
import numpy as np


def gelu(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as GPT-2 uses."""
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def sigmoid(a):
    """1 / (1 + exp(-a)), written as (1 + tanh(a/2)) / 2, which cannot overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(a, np.float64)))


def silu(a):
    return np.asarray(a, np.float64) * sigmoid(a)


def swiglu(x):
    """x [..., 2F] packed as gate | up: silu(gate) * up, [..., F]."""
    x = np.asarray(x, np.float64)
    F = x.shape[-1] // 2
    gate, up = x[..., :F], x[..., F:]
    return silu(gate) * up
