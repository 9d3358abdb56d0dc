"""AdamW (Loshchilov & Hutter 2019) with global-norm clipping, in float64."""
import numpy as np


def grad_norm(grads):
    """sqrt of the sum of squares over every element of every tensor."""
    return float(np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads)))


def adamw_step(params, grads, m, v, weight_decay, lr, beta1, beta2, eps, step, max_norm=0.0, norm=None):
    """One step over lists of arrays; returns new (params, m, v) as float64 lists."""
    clip = 1.0
    if max_norm > 0:
        norm = grad_norm(grads) if norm is None else norm
        clip = min(1.0, max_norm / (norm + 1e-6))
    new_p, new_m, new_v = [], [], []
    for p, g, mi, vi, wd in zip(params, grads, m, v, weight_decay):
        p, g = np.asarray(p, np.float64), np.asarray(g, np.float64) * clip
        mi = beta1 * np.asarray(mi, np.float64) + (1 - beta1) * g
        vi = beta2 * np.asarray(vi, np.float64) + (1 - beta2) * g * g
        mhat = mi / (1 - beta1 ** step)
        vhat = vi / (1 - beta2 ** step)
        new_p.append(p - lr * (mhat / (np.sqrt(vhat) + eps) + wd * p))
        new_m.append(mi)
        new_v.append(vi)
    return new_p, new_m, new_v
