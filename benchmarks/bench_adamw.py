"""AdamW step over GPT-2 124M's parameter tensors (fp32 master weights, fp32 grads):
ringloom's multi-tensor kernel vs torch.optim.AdamW(fused=True).

Bytes counted (the floor): read p, g, m, v and write p, m, v: 28 bytes per parameter
(3.5 GB); the row with a bf16 compute copy writes 2 more, which torch does not do.
"""
from __future__ import annotations

import torch

import ringloom as rl
from common import Row, parse_args, report, rl_view, time_ms


def gpt2_shapes(n_layer=12, C=768, V=50304, T=1024):
    shapes = [(V, C), (T, C)]
    for _ in range(n_layer):
        shapes += [(C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,), (C,), (C,), (4 * C, C), (4 * C,), (C, 4 * C), (C,)]
    return shapes + [(C,), (C,)]


def main() -> None:
    args = parse_args(__doc__)
    shapes = gpt2_shapes()
    g = torch.Generator(device="cuda").manual_seed(0)
    params = [torch.randn(s, device="cuda", generator=g) * 0.02 for s in shapes]
    grads = [torch.randn(s, device="cuda", generator=g) * 1e-3 for s in shapes]
    n = sum(p.numel() for p in params)

    tp = [p.clone().requires_grad_() for p in params]
    for t, gr in zip(tp, grads):
        t.grad = gr.clone()
    opt = torch.optim.AdamW(tp, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)

    P = [rl_view(p.clone()) for p in params]
    G = [rl_view(gr) for gr in grads]
    M = [rl.zeros(list(s), device="cuda:0") for s in shapes]
    Vv = [rl.zeros(list(s), device="cuda:0") for s in shapes]
    wd = [0.1 if len(s) == 2 else 0.0 for s in shapes]
    Cb = [rl.empty(list(s), dtype="bfloat16", device="cuda:0") for s in shapes]
    torch.cuda.synchronize()
    step = [0]

    def ours(i):
        step[0] += 1
        rl.ops.adamw_step(P, G, M, Vv, wd, 3e-4, 0.9, 0.95, 1e-8, step[0])

    def ours_clip_bf16(i):
        step[0] += 1
        norm = rl.ops.grad_norm(G)
        rl.ops.adamw_step(P, G, M, Vv, wd, 3e-4, 0.9, 0.95, 1e-8, step[0], 1.0, norm, Cb)

    def ours_norm(i):
        rl.ops.grad_norm(G)

    def peer(i):
        opt.step()

    def peer_clip(i):
        torch.nn.utils.clip_grad_norm_(tp, 1.0, foreach=True)
        opt.step()

    def peer_norm(i):
        torch.nn.utils.get_total_norm([t.grad for t in tp], foreach=True)

    rows = [
        Row(f"{n/1e6:.1f}M fp32 params ({len(shapes)} tensors)", time_ms(ours), time_ms(peer), work=28.0 * n),
        Row("  + clip, + bf16 copy (peer: clip)", time_ms(ours_clip_bf16), time_ms(peer_clip), work=30.0 * n + 4.0 * n),
        Row("  grad_norm alone", time_ms(ours_norm), time_ms(peer_norm), work=4.0 * n),
    ]
    report("AdamW step", "torch fused", rows, args.json)


if __name__ == "__main__":
    main()
