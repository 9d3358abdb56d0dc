"""GELU (tanh approximation) and SwiGLU, float64 (csrc/ops/activation.h)."""
import numpy as np


def sigmoid(a):
    """1 / (1 + exp(-a)), evaluated through exp(-|a|) so that it neither overflows nor
    loses its relative accuracy in the tails (as 0.5 (1 + tanh(a/2)) would for a << 0)."""
    a = np.asarray(a, np.float64)
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def gelu(x):
    """0.5 x (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3), as GPT-2 uses.
    Written as x * sigmoid(2u) (the same function: 0.5 (1 + tanh u) = sigmoid(2u)) because
    1 + tanh u cancels to exactly 0 in float64 for x < -7, where the true value is ~1e-16."""
    x = np.asarray(x, np.float64)
    u = np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)
    return x * sigmoid(2.0 * u)


def silu(a):
    return np.asarray(a, np.float64) * sigmoid(a)


def swiglu(x):
    """x [..., 2F] packed as gate | up: silu(gate) * up, [..., F]."""
    x = np.asarray(x, np.float64)
    F = x.shape[-1] // 2
    gate, up = x[..., :F], x[..., F:]
    return silu(gate) * up
