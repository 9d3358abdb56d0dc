"""LayerNorm forward + backward, bf16: ringloom's CUDA kernels vs PyTorch eager
(F.layer_norm, then torch.autograd.grad for dx, dgamma, dbeta).

Bytes counted (the floor): forward reads x and writes y, backward reads x and dy and writes
dx: 10 bytes per element in bf16 (statistics and parameters are negligible).
"""
from __future__ import annotations

import torch

import ringloom as rl
from common import Row, parse_args, report, rl_view, time_ms

SHAPES = [(16384, 768), (8192, 4096)]
L2_COPIES = 4  # rotate inputs so that each pass comes from memory, not L2


def bench_shape(R: int, C: int) -> list[Row]:
    g = torch.Generator(device="cuda").manual_seed(0)
    xs = [torch.randn(R, C, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(L2_COPIES)]
    dys = [torch.randn(R, C, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(L2_COPIES)]
    w = (1 + 0.1 * torch.randn(C, device="cuda", generator=g)).bfloat16()
    b = (0.1 * torch.randn(C, device="cuda", generator=g)).bfloat16()

    rx, rdy = [rl_view(t) for t in xs], [rl_view(t) for t in dys]
    rw, rb = rl_view(w), rl_view(b)
    dgamma = rl.zeros([C], device="cuda:0")
    dbeta = rl.zeros([C], device="cuda:0")
    torch.cuda.synchronize()

    def ours(i):
        k = i % L2_COPIES
        y, mean, rstd = rl.ops.layernorm_forward(rx[k], rw, rb, 1e-5)
        rl.ops.layernorm_backward(rdy[k], rx[k], rw, mean, rstd, dgamma, dbeta)

    tw, tb = w.clone().requires_grad_(), b.clone().requires_grad_()
    txs = [x.clone().requires_grad_() for x in xs]

    def peer(i):
        k = i % L2_COPIES
        y = torch.nn.functional.layer_norm(txs[k], (C,), tw, tb, 1e-5)
        torch.autograd.grad(y, (txs[k], tw, tb), dys[k])

    # Check before timing: same inputs, results within bf16 tolerance of torch.
    y, mean, rstd = rl.ops.layernorm_forward(rx[0], rw, rb, 1e-5)
    yt = torch.nn.functional.layer_norm(xs[0].float(), (C,), w.float(), b.float(), 1e-5)
    err = (torch.from_dlpack(y).float() - yt).norm() / yt.norm()
    assert err < 2e-2, f"layernorm mismatch {err}"

    # The two halves alone (peer backward: autograd.grad on a retained graph).
    saved = [rl.ops.layernorm_forward(x, rw, rb, 1e-5) for x in rx]
    ys = [torch.nn.functional.layer_norm(x, (C,), tw, tb, 1e-5) for x in txs]

    def ours_bwd(i):
        k = i % L2_COPIES
        rl.ops.layernorm_backward(rdy[k], rx[k], rw, saved[k][1], saved[k][2], dgamma, dbeta)

    def peer_bwd(i):
        k = i % L2_COPIES
        torch.autograd.grad(ys[k], (txs[k], tw, tb), dys[k], retain_graph=True)

    with torch.no_grad():
        fwd = Row(f"  {R}x{C} fwd", time_ms(lambda i: rl.ops.layernorm_forward(rx[i % L2_COPIES], rw, rb, 1e-5)),
                  time_ms(lambda i: torch.nn.functional.layer_norm(xs[i % L2_COPIES], (C,), w, b, 1e-5)),
                  work=4.0 * R * C)
    bwd = Row(f"  {R}x{C} bwd", time_ms(ours_bwd), time_ms(peer_bwd), work=6.0 * R * C)
    t_ours, t_peer = time_ms(ours), time_ms(peer)
    return [Row(f"{R}x{C} bf16 fwd+bwd", t_ours, t_peer, work=10.0 * R * C, unit="GB/s"), fwd, bwd]


def main() -> None:
    args = parse_args(__doc__)
    rows = [r for R, C in SHAPES for r in bench_shape(R, C)]
    report("LayerNorm fwd+bwd", "torch", rows, args.json)


if __name__ == "__main__":
    main()
