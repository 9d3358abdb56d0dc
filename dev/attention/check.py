"""Correctness and timing of the Hopper attention kernels outside the package, on one GPU:
the kernels are built alone into a small shared library (harness.cu, seconds to build) and
called through ctypes on torch tensors.

  nvcc -shared -Xcompiler -fPIC -gencode=arch=compute_90a,code=sm_90a -O3 -std=c++17 -Icsrc -cudart static \
       --expt-relaxed-constexpr -o dev/attention/libhopper.so dev/attention/harness.cu \
       csrc/ops/cuda/attention/{hopper_fwd,hopper_bwd,flash_bwd,flash_bwd_2d}.cu
  python3 dev/attention/check.py [--lib PATH] [--small] [--no-time]

Correctness: outputs poisoned with NaN before each call, compared with an fp32 reference
built from the same bf16 inputs (rel = |out - ref| / |ref|), lse against logsumexp.
Timing: CUDA events around back-to-back calls (median of 7 samples), against torch SDPA's
cuDNN and flash backends on the same inputs.
"""
from __future__ import annotations

import argparse
import ctypes
import math
import os

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def load(path):
    lib = ctypes.CDLL(path)
    lib.rl_hopper_fwd.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 6 + [ctypes.c_void_p]
    lib.rl_hopper_fwd.restype = ctypes.c_int
    lib.rl_hopper_bwd.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int] * 6 + [ctypes.c_void_p]
    lib.rl_hopper_bwd.restype = ctypes.c_int
    return lib


def ours_bwd(lib, dout, qkv, out, lse, Hq, Hkv, causal, dqkv=None, scratch=None):
    B, T, _, D = qkv.shape
    if dqkv is None:  # poisoned
        dqkv = torch.full_like(qkv, float("nan"))
        t_pad = (T + 63) // 64 * 64
        scratch = (torch.empty(2 * B * Hq * t_pad, device="cuda"), torch.empty(B * T * Hq * D, device="cuda"))
    rc = lib.rl_hopper_bwd(dout.data_ptr(), qkv.data_ptr(), out.data_ptr(), lse.data_ptr(), dqkv.data_ptr(),
                           scratch[0].data_ptr(), scratch[1].data_ptr(), B, T, Hq, Hkv, D, int(causal),
                           torch.cuda.current_stream().cuda_stream)
    assert rc == 0
    return dqkv, scratch


def ours_fwd(lib, qkv, Hq, Hkv, causal, out=None, lse=None):
    B, T, _, D = qkv.shape
    if out is None:  # poisoned: every element must be written
        out = torch.full((B, T, Hq, D), float("nan"), device="cuda", dtype=torch.bfloat16)
        lse = torch.full((B, Hq, T), float("nan"), device="cuda", dtype=torch.float32)
    rc = lib.rl_hopper_fwd(qkv.data_ptr(), out.data_ptr(), lse.data_ptr(), B, T, Hq, Hkv, D, int(causal),
                           torch.cuda.current_stream().cuda_stream)
    assert rc == 0
    return out, lse


def split(qkv, Hq, Hkv):
    q = qkv[:, :, :Hq].transpose(1, 2)
    k = qkv[:, :, Hq:Hq + Hkv].transpose(1, 2)
    v = qkv[:, :, Hq + Hkv:].transpose(1, 2)
    return q, k, v


def reference(qkv, Hq, Hkv, causal, dout=None):
    """out [B, T, Hq, D] and lse in fp32; with dout also dqkv (fp32, autograd)."""
    qkv = qkv.float().requires_grad_(dout is not None)
    q, k, v = split(qkv, Hq, Hkv)
    g = Hq // Hkv
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    T, D = q.shape[2], q.shape[3]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    if causal:
        s = s.masked_fill(torch.ones(T, T, device="cuda", dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(s, -1)
    o = (torch.softmax(s, -1) @ v).transpose(1, 2)
    if dout is None:
        return o, lse
    (g,) = torch.autograd.grad(o, qkv, dout.float())
    return o.detach(), lse.detach(), g


def bench_inputs(B, T, H, D):
    """Random packed qkv and dout, and torch's q, k, v (leaves) and dO for SDPA ([B, H, T, D])."""
    qkv = torch.randn(B, T, 3 * H, D, device="cuda", dtype=torch.bfloat16)
    dout = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    q, k, v = (x.contiguous().requires_grad_() for x in split(qkv, H, H))
    return qkv, dout, (q, k, v), dout.transpose(1, 2).contiguous()


def rel(a, b):
    a, b = a.float(), b.float()
    if not torch.isfinite(a).all():
        return float("nan")
    return float((a - b).norm() / b.norm())


def time_ms(fn, calls=20, samples=7):
    """Median over samples of (event time of `calls` back-to-back calls) / calls: the launches
    queue ahead of the GPU, so host overhead per call stays out of the number."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(samples):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(calls):
            fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / calls)
    ts.sort()
    return ts[len(ts) // 2]


CHECKS = [  # B, T, Hq, Hkv, D, causal
    (2, 256, 4, 4, 64, True), (2, 256, 4, 4, 128, False), (1, 1000, 6, 2, 64, True),
    (1, 777, 8, 2, 128, True), (2, 333, 4, 1, 128, False), (1, 65, 2, 2, 64, False),
    (1, 130, 2, 1, 128, True), (8, 1024, 12, 12, 64, True), (2, 2048, 16, 4, 128, True),
]
BENCH = [(8, 1024, 12, 64, True), (4, 2048, 16, 128, True), (2, 4096, 32, 128, True), (2, 4096, 32, 128, False)]


def case_inputs(case):
    """Seeded random qkv and dout of a CHECKS case, and the fp32 reference (o, lse, dqkv)."""
    B, T, Hq, Hkv, D, causal = case
    torch.manual_seed(B * T + D)
    qkv = torch.randn(B, T, Hq + 2 * Hkv, D, device="cuda", dtype=torch.bfloat16)
    dout = torch.randn(B, T, Hq, D, device="cuda", dtype=torch.bfloat16)
    return qkv, dout, reference(qkv, Hq, Hkv, causal, dout)


def check_case(lib, qkv, dout, ref, Hq, Hkv, causal):
    """The library's forward and backward against the reference: (within tolerance, relative
    errors [out, lse, dq, dk, dv])."""
    o, lse = ours_fwd(lib, qkv, Hq, Hkv, causal)
    dqkv, _ = ours_bwd(lib, dout, qkv, o, lse, Hq, Hkv, causal)
    torch.cuda.synchronize()
    ro, rl, rg = ref
    errs = [rel(o, ro), rel(lse, rl)] + [rel(a, b) for a, b in zip(split(dqkv, Hq, Hkv), split(rg, Hq, Hkv))]
    return errs[0] < 1e-2 and errs[1] < 1e-3 and all(e < 2e-2 for e in errs[2:]), errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(os.path.dirname(__file__), "libhopper.so"))
    ap.add_argument("--small", action="store_true", help="two small checks (for compute-sanitizer)")
    ap.add_argument("--no-time", action="store_true")
    args = ap.parse_args()
    lib = load(args.lib)
    print(torch.cuda.get_device_name(), torch.__version__)
    checks = CHECKS[:2] if args.small else CHECKS
    ok = True
    for case in checks:
        B, T, Hq, Hkv, D, causal = case
        good, (eo, el, *eg) = check_case(lib, *case_inputs(case), Hq, Hkv, causal)
        ok &= good
        print(f"check B{B} T{T} Hq{Hq} Hkv{Hkv} D{D} {'causal' if causal else 'full'}: out {eo:.2e} lse {el:.2e} "
              f"dq {eg[0]:.2e} dk {eg[1]:.2e} dv {eg[2]:.2e} {'ok' if good else 'FAIL'}")
    print("ALL OK" if ok else "SOME FAILED")
    if args.no_time or args.small:
        return
    print(f"{'shape':38s} {'ours':>8s} {'cudnn':>8s} {'flash':>8s}  TFLOP/s ours/cudnn/flash")
    for B, T, H, D, causal in BENCH:
        qkv, dout, (q, k, v), do_t = bench_inputs(B, T, H, D)
        o, lse = ours_fwd(lib, qkv, H, H, causal)
        dqkv, scratch = ours_bwd(lib, dout, qkv, o, lse, H, H, causal)
        fns = {"fwd": {"ours": lambda: ours_fwd(lib, qkv, H, H, causal, o, lse)},
               "fwd+bwd": {"ours": lambda: (ours_fwd(lib, qkv, H, H, causal, o, lse),
                                            ours_bwd(lib, dout, qkv, o, lse, H, H, causal, dqkv, scratch))}}
        for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            def f(be=be):
                with sdpa_kernel(be), torch.no_grad():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

            def fb(be=be):
                with sdpa_kernel(be):
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    return torch.autograd.grad(out, (q, k, v), do_t)
            fns["fwd"][name], fns["fwd+bwd"][name] = f, fb
        for mode, fn in fns.items():
            fl = 4.0 * B * H * T * T * D * (0.5 if causal else 1.0) * (3.5 if mode == "fwd+bwd" else 1.0)
            t = {k: time_ms(v) for k, v in fn.items()}
            name = f"{mode} B{B} H{H} S{T} D{D} {'causal' if causal else 'full'}"
            print(f"{name:38s} {t['ours']:8.3f} {t['cudnn']:8.3f} {t['flash']:8.3f}  "
                  f"{fl / t['ours'] / 1e9:.0f}/{fl / t['cudnn'] / 1e9:.0f}/{fl / t['flash'] / 1e9:.0f}"
                  f"  ours/cudnn speed {t['cudnn'] / t['ours']:.2f}x")


if __name__ == "__main__":
    main()
