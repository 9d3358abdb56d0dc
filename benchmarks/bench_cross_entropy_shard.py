"""Vocabulary-parallel cross-entropy on one rank's slice (bf16 logits [N, V/R]): ringloom's
shard ops (slice statistics, the combine of R ranks' statistics, the backward written over
the logits) vs PyTorch's F.cross_entropy + autograd.grad on a slice of the same size (the
work one rank of an unsharded-per-rank peer would do). The R ranks' statistics are
simulated by R copies of this slice's.

Bytes counted (the floor): read the logits twice (statistics, backward) and write the
gradient once, 6 bytes per bf16 logit. Checked first against torch on the full row.
"""
from __future__ import annotations

import torch

import ringloom as rl
from common import Row, parse_args, report, rl_view, time_ms

SHAPES = [(16384, 128256, 4), (16384, 50304, 2)]   # llama-1b's vocabulary at tp 4, GPT-2's at tp 2


def bench_shape(N: int, V: int, R: int) -> Row:
    g = torch.Generator(device="cuda").manual_seed(0)
    Vr = V // R
    full = (3 * torch.randn(N, V, device="cuda", generator=g)).bfloat16()
    targets = torch.randint(0, V, (N,), device="cuda", generator=g)
    t32 = targets.int()
    rt = rl_view(t32)

    # Check: every slice's statistics combined give torch's loss; slice 0's gradient is
    # the first V/R columns of torch's.
    slices = [full[:, r * Vr:(r + 1) * Vr].contiguous() for r in range(R)]
    stats = torch.stack([torch.from_dlpack(rl.ops.cross_entropy_shard_stats(rl_view(s), rt, r * Vr))
                         for r, s in enumerate(slices)])
    loss, lse = rl.ops.cross_entropy_shard_combine(rl_view(stats.contiguous()), rt, -100)
    rl.ops.cross_entropy_shard_backward(rl_view(slices[0]), rt, lse, 0, -100, 1.0 / N)
    lt = full[:, :R * Vr].float().requires_grad_()
    ref = torch.nn.functional.cross_entropy(lt, targets.clamp(max=R * Vr - 1))
    (gref,) = torch.autograd.grad(ref, lt)
    torch.cuda.synchronize()
    mine = torch.from_dlpack(loss).mean().item()
    assert abs(mine - ref.item()) < 1e-3 * abs(ref.item()) or (targets >= R * Vr).any(), (mine, ref.item())
    gerr = (slices[0].float() - gref[:, :Vr]).norm() / gref[:, :Vr].norm()
    assert gerr < 2e-2, f"gradient mismatch {gerr}"
    del lt, gref

    work = full[:, :Vr].contiguous()
    rw = rl_view(work)
    every = rl_view(stats.contiguous())

    def ours(i):
        rl.ops.cross_entropy_shard_stats(rw, rt, 0)
        _, lse_ = rl.ops.cross_entropy_shard_combine(every, rt, -100)
        rl.ops.cross_entropy_shard_backward(rw, rt, lse_, 0, -100, 1.0 / N)

    tl = full[:, :Vr].clone().requires_grad_()
    tt = targets.clamp(max=Vr - 1)

    def peer(i):
        loss_ = torch.nn.functional.cross_entropy(tl, tt)
        torch.autograd.grad(loss_, tl)

    t_ours, t_peer = time_ms(ours, reps=5), time_ms(peer, reps=5)
    return Row(f"{N}x{V}/{R} bf16 stats+combine+bwd", t_ours, t_peer, work=6.0 * N * Vr, unit="GB/s")


def main() -> None:
    args = parse_args(__doc__)
    rows = [bench_shape(N, V, R) for N, V, R in SHAPES]
    report("vocabulary-parallel cross-entropy", "torch (same slice)", rows, args.json)


if __name__ == "__main__":
    main()
