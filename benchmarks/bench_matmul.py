"""Linear-layer GEMMs of GPT-2 124M at B16 x T1024 (M = 16384 rows), bf16: ringloom
(cuBLASLt, bias fused in the epilogue; weight gradient written as fp32 with beta = 1)
vs PyTorch (F.linear; dy @ w; dy^T @ x, bf16 out).

Work counted: 2 M N K flops per GEMM (the floor is the matrix-unit rate).
"""
from __future__ import annotations

import torch

import ringloom as rl
from common import Row, parse_args, report, rl_view, time_ms

M = 16384
SHAPES = [("qkv", 768, 2304, True), ("attn proj", 768, 768, True), ("fc", 768, 3072, True),
          ("fc proj", 3072, 768, True), ("lm head", 768, 50304, False)]


def main() -> None:
    args = parse_args(__doc__)
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for name, K, N, bias in SHAPES:
        x = torch.randn(M, K, device="cuda", generator=g).bfloat16()
        w = (torch.randn(N, K, device="cuda", generator=g) / K ** 0.5).bfloat16()
        b = torch.randn(N, device="cuda", generator=g).bfloat16() if bias else None
        dy = torch.randn(M, N, device="cuda", generator=g).bfloat16()
        rx, rw, rdy = rl_view(x), rl_view(w), rl_view(dy)
        rb = rl_view(b) if bias else None
        dw = rl.zeros([N, K], device="cuda:0")
        db = rl.zeros([N], device="cuda:0") if bias else None
        torch.cuda.synchronize()
        y = torch.from_dlpack(rl.ops.matmul_forward(rx, rw, rb)).float()
        yt = torch.nn.functional.linear(x, w, b).float()
        assert (y - yt).norm() / yt.norm() < 2e-2
        flops = 2.0 * M * N * K
        rows.append(Row(f"{name} fwd {M}x{K}x{N}", time_ms(lambda i: rl.ops.matmul_forward(rx, rw, rb)),
                        time_ms(lambda i: torch.nn.functional.linear(x, w, b)), flops, "TFLOP/s"))
        rows.append(Row(f"{name} bwd-in", time_ms(lambda i: rl.ops.matmul_backward_input(rdy, rw)),
                        time_ms(lambda i: dy @ w), flops, "TFLOP/s"))

        def peer_dw(i):
            dwt = dy.t() @ x
            if bias:
                dy.sum(0)
            return dwt

        rows.append(Row(f"{name} bwd-w (+db)", time_ms(lambda i: rl.ops.matmul_backward_weight(rdy, rx, dw, db, True)),
                        time_ms(peer_dw), flops, "TFLOP/s", "ours: fp32 dw, beta=1"))
        del x, w, b, dy
    report("matmul (GPT-2 124M, M=16384, bf16)", "torch", rows, args.json)


if __name__ == "__main__":
    main()
