"""Backward variants of the Hopper attention kernels on one GPU (driven by variants.sh, which
builds one check.py-style library per variant; the first is the shipped kernel).
  check: check.py's correctness cases against an fp32 torch reference (outputs NaN-poisoned);
         exit status 1 if any library fails. variants.sh runs one process per library, under
         a timeout, so a variant that faults or hangs cannot take the others with it.
  time:  at the benchmark shapes (three D128, one D64) ours fwd+bwd and bwd alone against
         torch SDPA's cuDNN backend (fwd+bwd). Libraries are timed in two rounds, the second
         in reverse order, so a drift of the GPU's clock does not favour one of them.

  python3 dev/attention/variants.py {check|time} LIB [LIB ...]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check import BENCH, CHECKS, bench_inputs, case_inputs, check_case, load, ours_bwd, ours_fwd, time_ms  # noqa: E402


def name_of(path):
    return os.path.basename(path)[3:-3]  # libNAME.so


def correctness(libs):
    ok = {name_of(p): True for p in libs}
    for case in CHECKS:
        B, T, Hq, Hkv, D, causal = case
        inputs = case_inputs(case)
        for path, lib in libs.items():
            good, errs = check_case(lib, *inputs, Hq, Hkv, causal)
            ok[name_of(path)] &= good
            if not good:
                print(f"FAIL {name_of(path)}: B{B} T{T} Hq{Hq} Hkv{Hkv} D{D} causal={causal} out/lse/dq/dk/dv {errs}")
    return ok


def timing(libs):
    print(f"{'shape':34s} {'variant':12s} {'fwd+bwd':>8s} {'bwd':>8s} {'cuDNN f+b':>9s}  speed vs cuDNN (f+b)")
    for B, T, H, D, causal in BENCH:
        qkv, dout, (q, k, v), do_t = bench_inputs(B, T, H, D)

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                return torch.autograd.grad(out, (q, k, v), do_t)

        fns = {}
        for path, lib in libs.items():
            o, lse = ours_fwd(lib, qkv, H, H, causal)
            dqkv, scratch = ours_bwd(lib, dout, qkv, o, lse, H, H, causal)
            fns[name_of(path)] = (
                lambda lib=lib, o=o, lse=lse, dqkv=dqkv, scratch=scratch: (
                    ours_fwd(lib, qkv, H, H, causal, o, lse),
                    ours_bwd(lib, dout, qkv, o, lse, H, H, causal, dqkv, scratch)),
                lambda lib=lib, o=o, lse=lse, dqkv=dqkv, scratch=scratch:
                    ours_bwd(lib, dout, qkv, o, lse, H, H, causal, dqkv, scratch))
        t = {n: [[], []] for n in fns}
        ref = [time_ms(cudnn)]
        for order in (list(fns), list(reversed(fns))):
            for n in order:
                t[n][0].append(time_ms(fns[n][0]))
                t[n][1].append(time_ms(fns[n][1]))
        ref.append(time_ms(cudnn))
        c = sum(ref) / 2
        shape = f"B{B} H{H} S{T} D{D} {'causal' if causal else 'full'}"
        for n, (fb, bw) in t.items():
            m = sum(fb) / 2
            print(f"{shape:34s} {n:12s} {m:8.3f} {sum(bw) / 2:8.3f} {c:9.3f}  {c / m:.3f}x"
                  f"  (rounds f+b {fb[0]:.3f}/{fb[1]:.3f}, cuDNN {ref[0]:.3f}/{ref[1]:.3f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "time"])
    ap.add_argument("libs", nargs="+")
    args = ap.parse_args()
    libs = {p: load(p) for p in args.libs}
    print(torch.cuda.get_device_name(), torch.__version__, "cuDNN", torch.backends.cudnn.version(), flush=True)
    if args.mode == "time":
        timing(libs)
        return
    ok = correctness(libs)
    print("correctness:", ", ".join(f"{n} {'ok' if g else 'FAIL'}" for n, g in ok.items()))
    sys.exit(0 if all(ok.values()) else 1)


if __name__ == "__main__":
    main()
