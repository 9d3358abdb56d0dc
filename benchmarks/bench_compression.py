"""The gradient-compression ops on one 25 MiB bucket (the default bucket: 6.55M fp32
elements) and PowerSGD-sized matrices, against PyTorch doing the same work.

  topk_compress    k = 1% of the bucket; peer: torch.topk of |x| (unordered), the values
                   gathered and zeroed (torch picks ties in no defined order)
  topk_accumulate  4 ranks' payloads into the bucket; peer: zero_ + index_add_ per rank
  orthonormalize   P [rows, 4] by modified Gram-Schmidt; peer: torch.linalg.qr (Householder)

Bytes counted (the floor): top-k reads the bucket once and writes 2k words; accumulate
writes the bucket and reads the payloads; Gram-Schmidt reads P r (r + 1) / 2 times.
"""
from __future__ import annotations

import torch

import ringloom as rl
from common import Row, parse_args, report, rl_view, time_ms

N = 25 * 2**20 // 4
WORLD = 4


def main() -> None:
    args = parse_args(__doc__)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(N, device="cuda", generator=g)
    k = N // 100
    acc_t, acc_r = x.clone(), rl_view(x.clone())

    def topk_ours(i):
        rl.ops.topk_compress(acc_r, k)

    def topk_peer(i):
        idx = torch.topk(acc_t.abs(), k, sorted=False).indices
        torch.cat([acc_t[idx], idx.to(torch.int32).view(torch.float32)])
        acc_t[idx] = 0.0

    parts = [rl.ops.topk_compress(rl_view(torch.randn(N, device="cuda", generator=g)), k) for _ in range(WORLD)]
    gathered = rl.empty([2 * k * WORLD], device="cuda:0")
    for r, p in enumerate(parts):
        gathered.narrow0(2 * k * r, 2 * k).copy_(p)
    gathered_t = torch.from_dlpack(gathered)
    out_r, out_t = rl_view(torch.empty(N, device="cuda")), torch.empty(N, device="cuda")

    def acc_ours(i):
        rl.ops.topk_accumulate(out_r, gathered, WORLD, k)

    def acc_peer(i):
        out_t.zero_()
        for r in range(WORLD):
            part = gathered_t[2 * k * r:2 * k * (r + 1)]
            out_t.index_add_(0, part[k:].view(torch.int32), part[:k])

    rows = [
        Row(f"topk_compress n={N} k={k}", time_ms(topk_ours), time_ms(topk_peer), work=4.0 * N + 8.0 * k),
        Row(f"topk_accumulate world={WORLD}", time_ms(acc_ours), time_ms(acc_peer), work=4.0 * N + 8.0 * k * WORLD),
    ]
    for rows_, r in ((50304, 4), (3072, 4), (768, 4)):
        p = torch.randn(rows_, r, device="cuda", generator=g)
        p_r = rl_view(p.clone())

        def mgs_ours(i, p_r=p_r):
            rl.ops.orthonormalize_columns_(p_r)

        def mgs_peer(i, p=p):
            torch.linalg.qr(p)

        rows.append(Row(f"orthonormalize [{rows_}, {r}]", time_ms(mgs_ours), time_ms(mgs_peer),
                        work=4.0 * rows_ * r * (r + 1) / 2))
    report("Gradient-compression ops", "torch", rows, args.json)


if __name__ == "__main__":
    main()
