"""Attention forward and forward+backward: ringloom's flash kernels vs torch SDPA with the
flash backend and with the cuDNN backend, same run, same inputs (bf16).

  python benchmarks/bench_attention.py [--json out.json] [--deterministic]

FLOPs follow flash-attention's convention: forward 4*B*H*S^2*D (halved when causal),
forward+backward 3.5x that (backward is five S x S x D products to the forward's two).
torch gets q, k, v as separate contiguous [B, H, S, D] leaves and torch.autograd.grad, its
fastest path; ours reads the packed qkv[B, S, 3H, D] as the model produces it.
--deterministic also times our deterministic backward (attention_backward(..., deterministic=True)).
On a compute capability 9.0 GPU "ours" is the Hopper kernels (csrc/ops/cuda/attention/hopper_*.cu),
elsewhere the flash kernels.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

import ringloom as rl  # noqa: E402
rl_ops = rl._C.ops  # noqa: E402
from common import print_table, time_ms, write_json  # noqa: E402

SHAPES = [  # B, H, S, D, causal
    (8, 12, 1024, 64, True),
    (4, 16, 2048, 128, True),
    (2, 32, 4096, 128, True),
    (2, 32, 4096, 128, False),
]
PEERS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def flops(B, H, S, D, causal, bwd):
    f = 4.0 * B * H * S * S * D * (0.5 if causal else 1.0)
    return f * (3.5 if bwd else 1.0)


def rl_sync():
    rl._C.cuda_synchronize(0)


def ours_fns(qkv, dout, H, causal, deterministic=False):
    x, go = rl.from_dlpack(qkv), rl.from_dlpack(dout)

    def fwd():
        return rl.ops.attention_forward(x, H, H, causal)

    def fwd_bwd():
        o, lse = rl.ops.attention_forward(x, H, H, causal)
        return rl.ops.attention_backward(go, x, o, lse, H, H, causal, deterministic=deterministic)

    return fwd, fwd_bwd


def torch_fns(qkv, dout, H, causal, backend):
    q, k, v = (qkv[:, :, i * H:(i + 1) * H].transpose(1, 2).contiguous().requires_grad_() for i in range(3))
    do = dout.transpose(1, 2).contiguous()

    def fwd():
        with sdpa_kernel(backend), torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def fwd_bwd():
        with sdpa_kernel(backend):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return torch.autograd.grad(o, (q, k, v), do)

    return fwd, fwd_bwd


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--once", type=int, default=None,
                    help="run fwd+bwd of SHAPES[i] a few times and exit (for ncu)")
    args = ap.parse_args()
    if args.once is not None:
        B, H, S, D, causal = SHAPES[args.once]
        qkv = torch.randn(B, S, 3 * H, D, device="cuda", dtype=torch.bfloat16)
        dout = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        _, fb = ours_fns(qkv, dout, H, causal)
        for _ in range(3):
            fb()
        rl_sync()
        return
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}, torch {torch.__version__}")
    torch.manual_seed(0)
    rows = []
    for B, H, S, D, causal in SHAPES:
        qkv = torch.randn(B, S, 3 * H, D, device="cuda", dtype=torch.bfloat16)
        dout = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        name = f"B{B} H{H} S{S} D{D} {'causal' if causal else 'full'}"
        ofwd, ofb = ours_fns(qkv, dout, H, causal)
        # Same-run correctness: our out and dqkv against torch's flash backend.
        o_ours = torch.from_dlpack(ofwd()[0])
        dqkv_ours = torch.from_dlpack(ofb())
        tf, tfb = torch_fns(qkv, dout, H, causal, PEERS["flash"])
        o_t = tf().transpose(1, 2)
        dq, dk, dv = tfb()
        dqkv_t = torch.cat([g.transpose(1, 2) for g in (dq, dk, dv)], dim=2)
        errs = (rel(o_ours, o_t), rel(dqkv_ours, dqkv_t))
        for mode, bwd in (("fwd", False), ("fwd+bwd", True)):
            fl = flops(B, H, S, D, causal, bwd)
            row = {"shape": name, "mode": mode, "rel_err_vs_flash": errs[1] if bwd else errs[0]}
            variants = {"ours": (ofwd, ofb)}
            if args.deterministic and bwd:
                variants["ours_determ"] = ours_fns(qkv, dout, H, causal, deterministic=True)
            for label, (vf, vfb) in variants.items():
                row[f"{label}_ms"] = time_ms(lambda i, f=(vfb if bwd else vf): f())
            # Our cuDNN backend (ops.set_attention_backend("cudnn"): csrc/ops/cuda/attention/cudnn.cu),
            # through the same entry points as ours; torch's cudnn column is the peer it should match.
            row["rl_cudnn_ms"] = None
            if rl_ops.cudnn_attention_built():
                before = rl_ops.get_attention_backend()
                rl_ops.set_attention_backend("cudnn")
                try:
                    row["rl_cudnn_ms"] = time_ms(lambda i, f=(ofb if bwd else ofwd): f())
                finally:
                    rl_ops.set_attention_backend(before)
            for peer, backend in PEERS.items():
                try:
                    pf, pfb = torch_fns(qkv, dout, H, causal, backend)
                    row[f"{peer}_ms"] = time_ms(lambda i, f=(pfb if bwd else pf): f())
                except RuntimeError as e:  # backend not available for this shape/build
                    print(f"  {peer} unavailable for {name}: {str(e).splitlines()[0][:120]}")
                    row[f"{peer}_ms"] = None
            for k in list(row):
                if k.endswith("_ms") and row[k] is not None:
                    row[k[:-3] + "_tflops"] = fl / row[k] / 1e9
            row["rl_cudnn/ours"] = row["rl_cudnn_ms"] / row["ours_ms"] if row["rl_cudnn_ms"] else None
            for peer in PEERS:
                row[f"{peer}/ours"] = row[f"{peer}_ms"] / row["ours_ms"] if row[f"{peer}_ms"] else None
            rows.append(row)
            torch.cuda.empty_cache()
    cols = [("shape", ""), ("mode", ""), ("ours_ms", ".3f"), ("flash_ms", ".3f"), ("cudnn_ms", ".3f"),
            ("ours_tflops", ".0f"), ("flash_tflops", ".0f"), ("cudnn_tflops", ".0f"), ("flash/ours", ".2f"),
            ("cudnn/ours", ".2f"), ("rl_cudnn_ms", ".3f"), ("rl_cudnn/ours", ".2f"), ("rel_err_vs_flash", ".1e")]
    if args.deterministic:
        cols += [("ours_determ_ms", ".3f"), ("ours_determ_tflops", ".0f")]
    print_table(rows, cols)
    write_json(args.json, {"device": dev, "torch": torch.__version__, "rows": rows})


if __name__ == "__main__":
    main()
