"""The PyTorch peer model of the benchmarks: ringloom's GPT-2 (pre-LN blocks, tanh GELU,
learned positions, tied embeddings, GPT-2 initialisation) written in plain PyTorch, whole
(bench_gpt2_step.py, bench_train_cpu.py, DDP in bench_parallel.py) or as pipeline stages
(torch.distributed.pipelining in bench_parallel.py). Imports torch lazily so the benchmarks
run without it (their peer columns are then empty)."""
from __future__ import annotations

import math


def torch_modules(cfg):
    """(Block, GPT, Stage) classes for the GPT-2 shape of ``cfg`` (a ringloom ModelConfig)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    C, H, Fh, eps = cfg.n_embd, cfg.n_head, cfg.ffn_hidden, cfg.norm_eps

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(C, eps=eps), nn.LayerNorm(C, eps=eps)
            self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.fc, self.fc2 = nn.Linear(C, Fh), nn.Linear(Fh, C)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
            return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    def init_(module):
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L), zero biases."""
        for name, p in module.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith(("proj.weight", "fc2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(cfg.vocab_size, C), nn.Embedding(cfg.max_seq_len, C)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.lnf = nn.LayerNorm(C, eps=eps)
            init_(self)

        def forward(self, idx, targets):
            T = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
            for b in self.blocks:
                x = b(x)
            logits = self.lnf(x) @ self.wte.weight.T
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    class Stage(nn.Module):
        """Blocks [lo, hi) of the model; the first stage also embeds, the last also applies the
        final norm and an (untied: the stages live on different GPUs) output projection and
        returns logits. bf16 autocast inside; activations leave a stage in bf16."""

        def __init__(self, lo: int, hi: int, first: bool, last: bool, autocast: bool):
            super().__init__()
            self.first, self.last, self.autocast = first, last, autocast
            if first:
                self.wte, self.wpe = nn.Embedding(cfg.vocab_size, C), nn.Embedding(cfg.max_seq_len, C)
            self.blocks = nn.ModuleList(Block() for _ in range(lo, hi))
            if last:
                self.lnf, self.head = nn.LayerNorm(C, eps=eps), nn.Linear(C, cfg.vocab_size, bias=False)
            init_(self)

        def forward(self, x):
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                if self.first:
                    x = self.wte(x) + self.wpe(torch.arange(x.shape[1], device=x.device))
                else:
                    x = x.float()
                for b in self.blocks:
                    x = b(x)
                if self.last:
                    return self.head(self.lnf(x))
            return x.to(torch.bfloat16) if self.autocast else x

    return Block, GPT, Stage


def torch_gpt2(cfg, device="cuda"):
    """The whole model on ``device``."""
    return torch_modules(cfg)[1]().to(device)
