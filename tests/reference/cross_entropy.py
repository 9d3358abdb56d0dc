"""Softmax cross-entropy over rows of logits, in float64."""
import numpy as np


def cross_entropy(logits, targets, ignore_index=-100):
    """Per-row losses [N]: log(sum_j exp(x_j)) - x[target], 0 where target == ignore_index."""
    x = np.asarray(logits, np.float64)
    t = np.asarray(targets)
    m = x.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    keep = t != ignore_index
    picked = x[np.arange(len(t)), np.where(keep, t, 0)]
    return np.where(keep, lse - picked, 0.0)


def cross_entropy_grad(logits, targets, ignore_index=-100, grad_scale=1.0):
    """d(grad_scale * sum(losses)) / dlogits = grad_scale * (softmax(x) - onehot(t)), 0 on ignored rows."""
    x = np.asarray(logits, np.float64)
    t = np.asarray(targets)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    keep = t != ignore_index
    p[np.arange(len(t))[keep], t[keep]] -= 1.0
    p[~keep] = 0.0
    return grad_scale * p
