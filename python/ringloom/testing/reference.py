"""A float64 NumPy GPT-2 / LLaMA with a hand-written backward and an AdamW step: the exact
math that ringloom's models are checked against (`reference_model(config)` at the end
wraps it for a user's own checks).

Written for reading, not speed: every op has a forward that returns (output, cache) and a
backward that takes (d_output, cache) and applies the chain rule. Parameters live in a dict
under the same names and layouts as ringloom.models (weights [out, in]):

  embedding.wte.weight [V, C]    embedding.wpe.weight [max_seq_len, C]   (GPT-2 only)
  blocks.{i}.ln1.weight/.bias    blocks.{i}.attn.qkv.weight [(Hq + 2 Hkv) D, C] (+ .bias)
  blocks.{i}.attn.proj.weight [C, C]        blocks.{i}.ln2.weight/.bias
  blocks.{i}.mlp.fc.weight [F or 2F, C]     blocks.{i}.mlp.proj.weight [C, F]   (+ .bias)
  head.norm.weight/.bias         head.out.weight [V, C]   (absent when tied to wte)

LayerNorm has a bias, RMSNorm none. `cfg` is any object with the ModelConfig fields
(arch, n_layer, n_head, n_kv_head, norm_eps, rope_base, tie_embeddings).
"""
from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- single ops


def linear_forward(x, w, b=None):
    y = x @ w.T
    if b is not None:
        y = y + b
    return y, (x, w, b is not None)


def linear_backward(dy, cache):
    """y = x w^T + b  =>  dx = dy w,  dw = dy^T x,  db = sum of dy over rows."""
    x, w, has_bias = cache
    dx = dy @ w
    dw = dy.reshape(-1, dy.shape[-1]).T @ x.reshape(-1, x.shape[-1])
    db = dy.reshape(-1, dy.shape[-1]).sum(0) if has_bias else None
    return dx, dw, db


def layernorm_forward(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    xc = x - mean
    rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + eps)
    xhat = xc * rstd
    return xhat * gamma + beta, (xhat, rstd, gamma)


def layernorm_backward(dy, cache):
    """dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma."""
    xhat, rstd, gamma = cache
    g = dy * gamma
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = dy.reshape(-1, dy.shape[-1])
    dgamma = (rows * xhat.reshape(rows.shape)).sum(0)
    dbeta = rows.sum(0)
    return dx, dgamma, dbeta


def rmsnorm_forward(x, gamma, eps):
    rstd = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return x * rstd * gamma, (x, rstd, gamma)


def rmsnorm_backward(dy, cache):
    """y = x rstd gamma, rstd = (mean(x^2) + eps)^-1/2  =>  dx = rstd (g - x rstd^2 mean(g x))."""
    x, rstd, gamma = cache
    g = dy * gamma
    dx = rstd * (g - x * rstd**2 * (g * x).mean(-1, keepdims=True))
    dgamma = (dy * x * rstd).reshape(-1, x.shape[-1]).sum(0)
    return dx, dgamma


GELU_C = np.sqrt(2.0 / np.pi)


def gelu_forward(x):
    u = GELU_C * (x + 0.044715 * x**3)
    return 0.5 * x * (1.0 + np.tanh(u)), x


def gelu_backward(dy, x):
    u = GELU_C * (x + 0.044715 * x**3)
    t = np.tanh(u)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3 * 0.044715 * x * x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def swiglu_forward(x):
    """x = [gate | up] on the last dim; y = silu(gate) * up."""
    F = x.shape[-1] // 2
    a, b = x[..., :F], x[..., F:]
    return a * sigmoid(a) * b, x


def swiglu_backward(dy, x):
    F = x.shape[-1] // 2
    a, b = x[..., :F], x[..., F:]
    s = sigmoid(a)
    da = dy * b * s * (1.0 + a * (1.0 - s))
    db = dy * a * s
    return np.concatenate([da, db], axis=-1)


def rope_angles(T, D, base):
    """cos and sin [T, D/2] of t * base^(-2i/D)."""
    theta = base ** (-2.0 * np.arange(D // 2) / D)
    ang = np.arange(T)[:, None] * theta[None, :]
    return np.cos(ang), np.sin(ang)


def rope_rotate(x, n_heads, base, inverse=False):
    """Rotate-half RoPE on the first n_heads heads of x [B, T, H, D]; inverse rotates back
    (the backward of a rotation is its transpose, the rotation by -angle)."""
    B, T, H, D = x.shape
    c, s = rope_angles(T, D, base)
    if inverse:
        s = -s
    c, s = c[None, :, None, :], s[None, :, None, :]
    y = x.copy()
    lo, hi = x[:, :, :n_heads, : D // 2], x[:, :, :n_heads, D // 2 :]
    y[:, :, :n_heads, : D // 2] = lo * c - hi * s
    y[:, :, :n_heads, D // 2 :] = hi * c + lo * s
    return y


def attention_forward(qkv, n_head, n_kv_head):
    """Causal attention on packed qkv [B, T, Hq + 2 Hkv, D] -> [B, T, Hq, D] (GQA: query head
    h reads key/value head h // (Hq / Hkv))."""
    B, T, _, D = qkv.shape
    group = n_head // n_kv_head
    q = qkv[:, :, :n_head]
    k = np.repeat(qkv[:, :, n_head : n_head + n_kv_head], group, axis=2)
    v = np.repeat(qkv[:, :, n_head + n_kv_head :], group, axis=2)
    scale = 1.0 / np.sqrt(D)
    s = np.einsum("bihd,bjhd->bhij", q, k) * scale
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bhij,bjhd->bihd", p, v)
    return out, (q, k, v, p, scale, n_head, n_kv_head)


def attention_backward(dout, cache):
    q, k, v, p, scale, n_head, n_kv_head = cache
    B, T, Hq, D = q.shape
    dv = np.einsum("bhij,bihd->bjhd", p, dout)
    dp = np.einsum("bihd,bjhd->bhij", dout, v)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))  # softmax backward; masked p are 0
    dq = np.einsum("bhij,bjhd->bihd", ds, k) * scale
    dk = np.einsum("bhij,bihd->bjhd", ds, q) * scale
    # Sum the gradients of the query heads that share one key/value head.
    group = n_head // n_kv_head
    dk = dk.reshape(B, T, n_kv_head, group, D).sum(3)
    dv = dv.reshape(B, T, n_kv_head, group, D).sum(3)
    return np.concatenate([dq, dk, dv], axis=2)


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean over counted rows of lse(logits) - logits[target]; returns (loss, per-row losses, cache)."""
    z = logits - logits.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1))
    keep = targets != ignore_index
    safe = np.where(keep, targets, 0)
    rows = np.where(keep, lse - np.take_along_axis(z, safe[:, None], 1)[:, 0], 0.0)
    count = max(int(keep.sum()), 1)
    return rows.sum() / count, rows, (z, lse, safe, keep, count)


def cross_entropy_backward(cache):
    z, lse, safe, keep, count = cache
    d = np.exp(z - lse[:, None])
    d[np.arange(len(safe)), safe] -= 1.0
    return d * keep[:, None] / count


# ---------------------------------------------------------------- the model


def _norm_forward(cfg, P, name, x):
    if cfg.arch == "gpt2":
        return layernorm_forward(x, P[name + ".weight"], P[name + ".bias"], cfg.norm_eps)
    return rmsnorm_forward(x, P[name + ".weight"], cfg.norm_eps)


def _norm_backward(cfg, grads, name, dy, cache):
    if cfg.arch == "gpt2":
        dx, dg, db = layernorm_backward(dy, cache)
        grads[name + ".bias"] = grads.get(name + ".bias", 0) + db
    else:
        dx, dg = rmsnorm_backward(dy, cache)
    grads[name + ".weight"] = grads.get(name + ".weight", 0) + dg
    return dx


def _linear_backward(grads, name, dy, cache):
    dx, dw, db = linear_backward(dy, cache)
    grads[name + ".weight"] = grads.get(name + ".weight", 0) + dw
    if db is not None:
        grads[name + ".bias"] = grads.get(name + ".bias", 0) + db
    return dx


def block_forward(cfg, P, i, x):
    pre = f"blocks.{i}."
    B, T, C = x.shape
    Hq, Hkv = cfg.n_head, cfg.n_kv_head
    D = C // Hq
    h1, c_n1 = _norm_forward(cfg, P, pre + "ln1", x)
    qkv, c_qkv = linear_forward(h1, P[pre + "attn.qkv.weight"], P.get(pre + "attn.qkv.bias"))
    qkv = qkv.reshape(B, T, Hq + 2 * Hkv, D)
    if cfg.arch == "llama":
        qkv = rope_rotate(qkv, Hq + Hkv, cfg.rope_base)
    att, c_att = attention_forward(qkv, Hq, Hkv)
    a, c_proj = linear_forward(att.reshape(B, T, Hq * D), P[pre + "attn.proj.weight"], P.get(pre + "attn.proj.bias"))
    x2 = x + a
    h2, c_n2 = _norm_forward(cfg, P, pre + "ln2", x2)
    f, c_fc = linear_forward(h2, P[pre + "mlp.fc.weight"], P.get(pre + "mlp.fc.bias"))
    g, c_act = gelu_forward(f) if cfg.arch == "gpt2" else swiglu_forward(f)
    m, c_down = linear_forward(g, P[pre + "mlp.proj.weight"], P.get(pre + "mlp.proj.bias"))
    return x2 + m, (c_n1, c_qkv, c_att, c_proj, c_n2, c_fc, c_act, c_down, (B, T, Hq, Hkv, D))


def block_backward(cfg, grads, i, dy, cache):
    pre = f"blocks.{i}."
    c_n1, c_qkv, c_att, c_proj, c_n2, c_fc, c_act, c_down, (B, T, Hq, Hkv, D) = cache
    # y = x2 + mlp(x2)
    dg = _linear_backward(grads, pre + "mlp.proj", dy, c_down)
    df = gelu_backward(dg, c_act) if cfg.arch == "gpt2" else swiglu_backward(dg, c_act)
    dh2 = _linear_backward(grads, pre + "mlp.fc", df, c_fc)
    dx2 = dy + _norm_backward(cfg, grads, pre + "ln2", dh2, c_n2)
    # x2 = x + attn(x)
    datt = _linear_backward(grads, pre + "attn.proj", dx2, c_proj).reshape(B, T, Hq, D)
    dqkv = attention_backward(datt, c_att)
    if cfg.arch == "llama":
        dqkv = rope_rotate(dqkv, Hq + Hkv, cfg.rope_base, inverse=True)
    dh1 = _linear_backward(grads, pre + "attn.qkv", dqkv.reshape(B, T, -1), c_qkv)
    return dx2 + _norm_backward(cfg, grads, pre + "ln1", dh1, c_n1)


def head_weight_prefix(cfg):
    """The output projection is the token embedding itself when tied."""
    return "embedding.wte" if cfg.tie_embeddings else "head.out"


def forward(cfg, P, ids, targets=None, ignore_index=-100):
    """Logits [B, T, V], or (mean loss, cache) when targets are given."""
    B, T = ids.shape
    x = P["embedding.wte.weight"][ids]
    if cfg.arch == "gpt2":
        x = x + P["embedding.wpe.weight"][:T]
    block_caches = []
    for i in range(cfg.n_layer):
        x, c = block_forward(cfg, P, i, x)
        block_caches.append(c)
    h, c_norm = _norm_forward(cfg, P, "head.norm", x)
    logits, c_out = linear_forward(h, P[head_weight_prefix(cfg) + ".weight"])
    if targets is None:
        return logits
    loss, _, c_xent = cross_entropy_forward(logits.reshape(B * T, -1), targets.reshape(-1), ignore_index)
    return loss, (ids, block_caches, c_norm, c_out, c_xent, logits.shape)


def backward(cfg, P, cache):
    """Gradients of the mean loss with respect to every parameter, by name."""
    ids, block_caches, c_norm, c_out, c_xent, lshape = cache
    grads: dict[str, np.ndarray] = {}
    dlogits = cross_entropy_backward(c_xent).reshape(lshape)
    dh = _linear_backward(grads, head_weight_prefix(cfg), dlogits, c_out)
    dx = _norm_backward(cfg, grads, "head.norm", dh, c_norm)
    for i in reversed(range(cfg.n_layer)):
        dx = block_backward(cfg, grads, i, dx, block_caches[i])
    # Embedding: scatter-add into the rows that were looked up; positions sum over the batch.
    dwte = np.zeros_like(P["embedding.wte.weight"])
    np.add.at(dwte, ids.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    grads["embedding.wte.weight"] = grads.get("embedding.wte.weight", 0) + dwte
    if cfg.arch == "gpt2":
        dwpe = np.zeros_like(P["embedding.wpe.weight"])
        dwpe[: ids.shape[1]] = dx.sum(0)
        grads["embedding.wpe.weight"] = dwpe
    return grads


def adamw_step(P, grads, m, v, decay, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step (decoupled weight decay on names where decay[name]) in place on P, m, v."""
    for name in P:
        g = grads[name]
        m[name] = beta1 * m[name] + (1 - beta1) * g
        v[name] = beta2 * v[name] + (1 - beta2) * g * g
        mhat = m[name] / (1 - beta1**step)
        vhat = v[name] / (1 - beta2**step)
        wd = weight_decay if decay[name] else 0.0
        P[name] = P[name] - lr * (mhat / (np.sqrt(vhat) + eps) + wd * P[name])


# ---------------------------------------------------------------- the public wrapper


def is_decayed(name: str, shape: tuple[int, ...]) -> bool:
    """Weight decay applies to matrices and embeddings, not to norm gains or biases."""
    return len(shape) == 2


class ReferenceModel:
    """The float64 NumPy model of a GPT-2 / LLaMA config, with the parameters of a ringloom
    model (same names and layouts as Model.state_dict()).

        ref = reference_model(config, params=model.state_dict())
        loss, grads = ref.loss_and_grads(ids, targets)        # float, {name: float64 array}
        ref.train_step(ids, targets, lr=1e-3)                 # AdamW (+ clipping), like ringloom.optim.AdamW

    ids / targets are integer arrays [B, T]; targets equal to ignore_index do not count.
    """

    def __init__(self, config, params: dict):
        self.config = config
        self.params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.step_count = 0

    def logits(self, ids) -> np.ndarray:
        """Logits [B, T, V]."""
        return forward(self.config, self.params, np.asarray(ids))

    def loss(self, ids, targets, ignore_index: int = -100) -> float:
        """Mean cross-entropy over the counted targets."""
        return float(forward(self.config, self.params, np.asarray(ids), np.asarray(targets), ignore_index)[0])

    def loss_and_grads(self, ids, targets, ignore_index: int = -100) -> tuple[float, dict[str, np.ndarray]]:
        """The mean loss and its gradient with respect to every parameter, by name."""
        loss, cache = forward(self.config, self.params, np.asarray(ids), np.asarray(targets), ignore_index)
        return float(loss), backward(self.config, self.params, cache)

    def train_step(self, ids, targets, *, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95),
                   eps: float = 1e-8, weight_decay: float = 0.1, max_grad_norm: float = 0.0,
                   ignore_index: int = -100) -> tuple[float, float]:
        """One AdamW step as ringloom.optim.AdamW takes it: gradients scaled by
        min(1, max_grad_norm / (norm + 1e-6)) when max_grad_norm > 0, decoupled weight
        decay on matrices. Returns (loss, gradient norm before clipping)."""
        loss, grads = self.loss_and_grads(ids, targets, ignore_index)
        norm = float(np.sqrt(sum(float((g * g).sum()) for g in grads.values())))
        if max_grad_norm > 0:
            clip = min(1.0, max_grad_norm / (norm + 1e-6))
            grads = {k: g * clip for k, g in grads.items()}
        self.step_count += 1
        decay = {k: is_decayed(k, v.shape) for k, v in self.params.items()}
        adamw_step(self.params, grads, self.m, self.v, decay, lr, betas[0], betas[1], eps, weight_decay,
                   self.step_count)
        return loss, norm


def reference_model(config, params: dict | None = None, seed: int = 0) -> ReferenceModel:
    """The float64 reference of `config` (a ringloom.models.ModelConfig): with `params`
    (a state dict, e.g. Model.state_dict()) or else the weights that
    build_model(config, seed=seed) initialises."""
    if params is None:
        from ..models import build_model

        params = build_model(config, device="cpu", seed=seed).state_dict()
    return ReferenceModel(config, params)
