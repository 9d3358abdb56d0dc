"""QSGD encode and decode-sum on the GPU (ops/qsgd.h) over GPT-2 124M's gradient size:
ringloom's ops vs the same quantisation written in torch (norms per bucket, torch.rand
draws, one uint8 code per element: no bit packing, so the peer writes more bytes and does
less work; its draws are not ours, only the cost is compared).

Bytes counted for ours: encode reads the fp32 gradient (4 per element) and writes the
payload (bits / 8 per element plus 4 per bucket); decode-sum reads world payloads and
writes the fp32 sum.
"""
from __future__ import annotations

import torch

import ringloom as rl
from common import Row, parse_args, report, rl_view, time_ms

LEVELS, BITS, BUCKET, WORLD = 7, 4, 512, 2


def main() -> None:
    args = parse_args(__doc__)
    n = BUCKET * 242_000   # about 124M elements, whole buckets for the torch view
    g_t = torch.randn(n, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0)) * 1e-3
    g = rl_view(g_t)
    torch.cuda.synchronize()
    payload = rl.ops.qsgd_encode(g, LEVELS, BUCKET, BITS, 0, 0, 0, 0)
    size = payload.numel()
    gathered = rl.empty([size * WORLD], "uint8", "cuda:0")
    for r in range(WORLD):
        gathered.narrow0(r * size, size).copy_(payload)
    out = rl.empty([n], "float32", "cuda:0")
    step = [0]

    def ours_encode(i):
        step[0] += 1
        rl.ops.qsgd_encode(g, LEVELS, BUCKET, BITS, 0, step[0], 0, 0)

    def ours_decode(i):
        rl.ops.qsgd_decode_sum(out, gathered, WORLD, n, LEVELS, BUCKET, BITS)

    def peer_quantise():
        v = g_t.view(-1, BUCKET)
        norm = torch.linalg.vector_norm(v, dim=1, keepdim=True)
        r = LEVELS * v.abs() / norm
        lo = r.floor()
        xi = lo + (torch.rand_like(r) < r - lo)
        return (torch.sign(v) * xi + LEVELS).to(torch.uint8), norm

    codes, norm = peer_quantise()

    def peer_encode(i):
        peer_quantise()

    def peer_decode(i):
        total = torch.zeros_like(g_t)
        for _ in range(WORLD):
            total += ((codes.float() - LEVELS) * (norm / LEVELS)).view(-1)

    rows = [
        Row(f"encode {n/1e6:.0f}M fp32, s={LEVELS}, bucket {BUCKET}", time_ms(ours_encode), time_ms(peer_encode),
            work=4.0 * n + size),
        Row(f"decode-sum of {WORLD} payloads", time_ms(ours_decode), time_ms(peer_decode),
            work=float(WORLD * size) + 4.0 * n),
    ]
    report("QSGD", "torch", rows, args.json)


if __name__ == "__main__":
    main()
