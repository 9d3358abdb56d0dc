"""The PyTorch peer of ringloom's LLaMA (bench_llama_step.py): pre-norm blocks with RMSNorm,
grouped-query attention through F.scaled_dot_product_attention, rotary positions in the
"rotate half" layout (ops/rope.h), a SwiGLU MLP, no biases, tied or untied embeddings as
the config says, and ringloom's initialisation (models/init.py: N(0, 0.02), the residual
projections scaled by 1/sqrt(2L), norm gains 1). The q/k/v and gate/up projections are
packed as in ringloom ([Hq + 2Hkv] x D rows; [gate F | up F]). Imports torch lazily."""
from __future__ import annotations

import math


def torch_llama(cfg, device="cuda"):
    """The whole model of the ringloom ModelConfig ``cfg`` (arch "llama") on ``device``;
    calling it with (idx, targets) returns the mean cross-entropy in fp32."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    C, Hq, Hkv, Fh, eps = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.ffn_hidden, cfg.norm_eps
    D = C // Hq

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.RMSNorm(C, eps=eps), nn.RMSNorm(C, eps=eps)
            self.qkv = nn.Linear(C, (Hq + 2 * Hkv) * D, bias=False)
            self.proj = nn.Linear(Hq * D, C, bias=False)
            self.fc = nn.Linear(C, 2 * Fh, bias=False)
            self.fc2 = nn.Linear(Fh, C, bias=False)

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            qkv = self.qkv(self.ln1(x)).view(B, T, Hq + 2 * Hkv, D)
            q, k, v = qkv.split([Hq, Hkv, Hkv], dim=2)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True, enable_gqa=Hkv != Hq)
            x = x + self.proj(a.transpose(1, 2).reshape(B, T, Hq * D))
            gate, up = self.fc(self.ln2(x)).chunk(2, dim=-1)
            return x + self.fc2(F.silu(gate) * up)

    def rotate(x, cos, sin):
        """y[i] = x[i] c - x[i + D/2] s, y[i + D/2] = x[i + D/2] c + x[i] s (ops/rope.h)."""
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg.vocab_size, C)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.lnf = nn.RMSNorm(C, eps=eps)
            self.head = None if cfg.tie_embeddings else nn.Linear(C, cfg.vocab_size, bias=False)
            inv = cfg.rope_base ** (-torch.arange(0, D // 2, dtype=torch.float64) * 2.0 / D)
            ang = torch.arange(cfg.max_seq_len, dtype=torch.float64)[:, None] * inv[None, :]
            self.register_buffer("cos", ang.cos().float()[None, :, None, :], persistent=False)  # [1, T, 1, D/2]
            self.register_buffer("sin", ang.sin().float()[None, :, None, :], persistent=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    residual = name.endswith(("proj.weight", "fc2.weight"))
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer) if residual else 0.02)

        def forward(self, idx, targets):
            T = idx.shape[1]
            cos, sin = self.cos[:, :T], self.sin[:, :T]
            x = self.wte(idx)
            for b in self.blocks:
                x = b(x, cos, sin)
            w = self.wte.weight if self.head is None else self.head.weight
            logits = self.lnf(x) @ w.T
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    return Llama().to(device)
