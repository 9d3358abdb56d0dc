"""float64 NumPy forward passes written against the Hugging Face tensor layouts, following
transformers' modeling_gpt2.py and modeling_llama.py step by step (Conv1D x W + b; separate
q/k/v and gate/up projections; rotate_half RoPE; repeat_kv for GQA). They share no code with
ringloom's packing, so they check that an exported file means the same model.

`hf` is {name: array} as in model.safetensors; `cfg` is a transformers config.json dict.
Both return logits [B, T, V].
"""
from __future__ import annotations

import numpy as np


def _layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _causal_softmax_attention(q, k, v):
    """q, k, v: [B, H, T, D] -> [B, H, T, D]."""
    T, D = q.shape[-2], q.shape[-1]
    s = q @ k.swapaxes(-1, -2) / np.sqrt(D)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def gpt2_logits(hf, cfg, ids):
    P = {k[len("transformer."):] if k.startswith("transformer.") else k: np.asarray(v, np.float64)
         for k, v in hf.items()}
    B, T = ids.shape
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    x = P["wte.weight"][ids] + P["wpe.weight"][np.arange(T)]
    for i in range(cfg["n_layer"]):
        h = f"h.{i}."
        a = _layernorm(x, P[h + "ln_1.weight"], P[h + "ln_1.bias"], eps)
        qkv = a @ P[h + "attn.c_attn.weight"] + P[h + "attn.c_attn.bias"]  # Conv1D: [in, out]
        q, k, v = np.split(qkv, 3, axis=-1)
        q, k, v = (t.reshape(B, T, H, C // H).transpose(0, 2, 1, 3) for t in (q, k, v))
        att = _causal_softmax_attention(q, k, v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + att @ P[h + "attn.c_proj.weight"] + P[h + "attn.c_proj.bias"]
        m = _layernorm(x, P[h + "ln_2.weight"], P[h + "ln_2.bias"], eps)
        m = _gelu_new(m @ P[h + "mlp.c_fc.weight"] + P[h + "mlp.c_fc.bias"])
        x = x + m @ P[h + "mlp.c_proj.weight"] + P[h + "mlp.c_proj.bias"]
    x = _layernorm(x, P["ln_f.weight"], P["ln_f.bias"], eps)
    head = P.get("lm_head.weight", P["wte.weight"])
    return x @ head.T


def _rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def llama_logits(hf, cfg, ids):
    P = {k: np.asarray(v, np.float64) for k, v in hf.items()}
    B, T = ids.shape
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or H
    D, eps = C // H, cfg["rms_norm_eps"]
    inv_freq = 1.0 / cfg["rope_theta"] ** (np.arange(0, D, 2) / D)
    freqs = np.outer(np.arange(T), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)  # [T, D]
    cos, sin = np.cos(emb), np.sin(emb)

    def lin(x, name):
        y = x @ P[name + ".weight"].T
        return y + P[name + ".bias"] if name + ".bias" in P else y

    x = P["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        h = f"model.layers.{i}."
        a = _rmsnorm(x, P[h + "input_layernorm.weight"], eps)
        q = lin(a, h + "self_attn.q_proj").reshape(B, T, H, D).transpose(0, 2, 1, 3)
        k = lin(a, h + "self_attn.k_proj").reshape(B, T, Hkv, D).transpose(0, 2, 1, 3)
        v = lin(a, h + "self_attn.v_proj").reshape(B, T, Hkv, D).transpose(0, 2, 1, 3)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = np.repeat(k, H // Hkv, axis=1), np.repeat(v, H // Hkv, axis=1)  # repeat_kv
        att = _causal_softmax_attention(q, k, v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + lin(att, h + "self_attn.o_proj")
        m = _rmsnorm(x, P[h + "post_attention_layernorm.weight"], eps)
        g = lin(m, h + "mlp.gate_proj")
        x = x + lin(g / (1 + np.exp(-g)) * lin(m, h + "mlp.up_proj"), h + "mlp.down_proj")
    x = _rmsnorm(x, P["model.norm.weight"], eps)
    head = P["lm_head.weight"] if "lm_head.weight" in P else P["model.embed_tokens.weight"]
    return x @ head.T
