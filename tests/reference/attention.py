"""Multi-head self-attention with grouped-query attention on packed qkv, in float64.

qkv[B, T, Hq + 2*Hkv, D]: query heads first, then key heads, then value heads. Query head h
uses kv head h // (Hq // Hkv), done here by repeating each kv head for its query group.
"""
import numpy as np


def split_heads(qkv, n_head, n_kv_head):
    """Returns q[B, Hq, T, D] and k, v[B, Hq, T, D] (kv heads repeated over their group)."""
    qkv = np.asarray(qkv, np.float64)
    q = qkv[:, :, :n_head].transpose(0, 2, 1, 3)
    k = qkv[:, :, n_head:n_head + n_kv_head].transpose(0, 2, 1, 3)
    v = qkv[:, :, n_head + n_kv_head:].transpose(0, 2, 1, 3)
    group = n_head // n_kv_head
    return q, np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)


def attention(qkv, n_head, n_kv_head, causal=True, scale=None):
    """Returns out[B, T, Hq, D] and lse[B, Hq, T] with the full T x T score matrix:
    s = scale q k^T (-inf above the diagonal when causal), p = softmax(s), out = p v."""
    q, k, v = split_heads(qkv, n_head, n_kv_head)
    T, D = q.shape[2], q.shape[3]
    if scale is None or scale <= 0:
        scale = 1.0 / np.sqrt(D)
    s = scale * q @ k.transpose(0, 1, 3, 2)  # [B, Hq, T, T]
    if causal:
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(s - m).sum(axis=-1, keepdims=True))
    p = np.exp(s - lse)
    out = p @ v  # [B, Hq, T, D]
    return out.transpose(0, 2, 1, 3), lse[..., 0]


def attention_out(qkv, n_head, n_kv_head, causal=True, scale=None):
    return attention(qkv, n_head, n_kv_head, causal, scale)[0]
