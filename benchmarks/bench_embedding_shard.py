"""Vocabulary-parallel embedding on one rank's slice (bf16 wte rows [V/R, C], ids over the
whole vocabulary): ringloom's embedding_shard_forward + embedding_shard_backward (ids
outside the slice give zero rows and no gradient; deterministic backward) vs PyTorch's
masked F.embedding forward + backward on the same slice (Megatron's VocabParallelEmbedding
recipe: shift the ids, zero the rows outside, index_add the gradient).

Bytes counted (the floor): the output and the upstream gradient once each, 2 bytes per bf16
element, plus the touched rows of the fp32 weight gradient read and written.
Checked first against torch.
"""
from __future__ import annotations

import torch

import ringloom as rl
from common import Row, parse_args, report, rl_view, time_ms

SHAPES = [(8, 2048, 128256, 2048, 4), (16, 1024, 50304, 768, 2)]  # (B, T, V, C, R): llama-1b tp 4, GPT-2 tp 2


def bench_shape(B: int, T: int, V: int, C: int, R: int) -> Row:
    g = torch.Generator(device="cuda").manual_seed(0)
    Vr, start = V // R, V // R   # rank 1's slice
    ids = torch.randint(0, V, (B, T), device="cuda", generator=g, dtype=torch.int32)
    wte = (0.02 * torch.randn(Vr, C, device="cuda", generator=g)).bfloat16()
    dout = torch.randn(B, T, C, device="cuda", generator=g).bfloat16()
    dwte = torch.zeros(Vr, C, device="cuda")
    rid, rw, rdo, rdw = rl_view(ids), rl_view(wte), rl_view(dout), rl_view(dwte)

    local = ids.long() - start
    inside = (local >= 0) & (local < Vr)
    safe = torch.where(inside, local, torch.zeros_like(local))
    out = torch.from_dlpack(rl.ops.embedding_shard_forward(rid, rw, None, start))
    ref = torch.nn.functional.embedding(safe, wte) * inside[..., None]
    rl.ops.embedding_shard_backward(rid, rdo, rdw, None, start)
    ref_dw = torch.zeros(Vr, C, device="cuda").index_add_(0, safe[inside], dout[inside].float())
    torch.cuda.synchronize()
    assert torch.equal(out, ref), "forward mismatch"
    assert (dwte - ref_dw).norm() / ref_dw.norm() < 1e-5, "weight gradient mismatch"

    def ours(i):
        rl.ops.embedding_shard_forward(rid, rw, None, start)
        rl.ops.embedding_shard_backward(rid, rdo, rdw, None, start)

    tw = wte.clone().requires_grad_()

    def peer(i):
        y = torch.nn.functional.embedding(safe, tw) * inside[..., None]
        torch.autograd.grad(y, tw, dout)

    t_ours, t_peer = time_ms(ours, reps=5), time_ms(peer, reps=5)
    touched = int(inside.sum().item())
    return Row(f"B{B} T{T} V{V}/{R} C{C} bf16 fwd+bwd", t_ours, t_peer,
               work=4.0 * B * T * C + 8.0 * touched * C, unit="GB/s")


def main() -> None:
    args = parse_args(__doc__)
    rows = [bench_shape(*s) for s in SHAPES]
    report("vocabulary-parallel embedding", "torch (masked embedding)", rows, args.json)


if __name__ == "__main__":
    main()
