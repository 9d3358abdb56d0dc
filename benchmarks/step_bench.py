"""One training step timed the same way for ringloom and for a PyTorch peer model, plus where
the step's GPU time goes (bench_gpt2_step.py, bench_llama_step.py).

Each side: fp32 master weights, bf16 compute, fused AdamW (lr 6e-4, weight decay 0.1),
global-norm clipping at 1.0, one loss read back to the host per step, after the update is
queued; median step time
after a warm-up, peak allocated memory over the run.

Where the time goes: one more step under torch.profiler. CUPTI records every kernel the
process launches, ringloom's own stream included, so both sides are split the same way:
kernel times summed into categories by kernel name (CATEGORIES, first match wins). The
categories are approximate where a compiler fuses across them (torch.compile's Triton
kernels are named after the ops they fuse, e.g. a residual add folded into an RMSNorm counts
as norm). "idle" is the median step time minus the profiled step's kernel time: launch gaps
and host work, and also any slowdown of the timed steps' kernels against the profiled one
(the GPU's clock under sustained load), so the idle gaps between the profiled step's
kernels are printed beside it, longest first, each with its neighbouring kernels.
"""
from __future__ import annotations

import json
import math
import re
import time

import numpy as np

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}

CATEGORIES = [  # (name, regex on the kernel name), first match wins
    ("optimizer", r"adam|multi_tensor|foreach|grad_norm|lpnorm|clip"),
    ("attention", r"attn|attention|flash|fmha|sdpa"),
    ("cross-entropy", r"cross_entropy|log_softmax|nll_loss|softmax"),
    ("norm", r"norm|rsqrt"),
    ("gemm", r"gemm|nvjet|xmma|cutlass|cublas|matmul|splitk"),
    ("embedding", r"embedding|index_select|indexing|scatter|gather"),
    ("rope", r"rope|rotary"),
    ("mlp activation", r"gelu|swiglu|silu|tanh|sigmoid"),
]


def model_flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """6N (forward 2N, backward 4N) plus the causal attention scores: half of 12*L*C*T."""
    return 6.0 * n_params + 6.0 * n_layer * n_embd * seq_len


def classify(name: str) -> str:
    low = name.lower()
    for cat, pattern in CATEGORIES:
        if re.search(pattern, low):
            return cat
    return "rest"


def kernel_breakdown(step, sync, step_ms: float) -> dict:
    """{category: ms} of the GPU kernels of one call of step() (after one unprofiled call),
    with "idle" = step_ms minus the kernels' total."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    step()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    out: dict[str, float] = {}
    rest: dict[str, float] = {}
    spans = []
    for e in prof.events():
        if not str(getattr(e, "device_type", "")).endswith("CUDA"):
            continue
        ms = (e.time_range.end - e.time_range.start) / 1e3
        cat = classify(e.name)
        out[cat] = out.get(cat, 0.0) + ms
        if cat == "rest":
            rest[e.name] = rest.get(e.name, 0.0) + ms
        spans.append((e.time_range.start, e.time_range.end, e.name))
    total = sum(out.values())
    out["idle"] = max(0.0, step_ms - total)
    torch.cuda.synchronize()
    print("    largest kernels in 'rest' (ms): " + "; ".join(
        f"{n[:50]} {ms:.2f}" for n, ms in sorted(rest.items(), key=lambda kv: -kv[1])[:6]), flush=True)
    print_largest_gaps(spans)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def print_largest_gaps(spans: list, n: int = 8) -> None:
    """The n longest stretches inside the step with no kernel running (us), each with the
    kernels on either side: where the idle time of the breakdown sits."""
    spans = sorted(spans)
    gaps = []
    reach, last = None, ""
    for start, end, name in spans:
        if reach is not None and start > reach:
            gaps.append((start - reach, last, name))
        if reach is None or end > reach:
            reach, last = end, name
    gaps.sort(reverse=True)
    total = sum(g for g, _, _ in gaps)
    print(f"    idle between kernels {total / 1e3:.2f} ms in {len(gaps)} gaps; longest:", flush=True)
    for us, before, after in gaps[:n]:
        print(f"      {us / 1e3:7.3f} ms after {before[:60]} | before {after[:60]}", flush=True)


def bench_ringloom(cfg, B, T, steps, warmup, graph: bool = False, breakdown: bool = False, attention: str = "auto",
                   recompute: str = "none"):
    """(seconds per step, peak bytes, parameter count, breakdown or None); the model's
    memory goes back to the device afterwards, for the peer runs. attention: the model's
    attention backend (Model.attention; "auto", as `ringloom train` defaults to);
    recompute: Model.recompute (none | selective | full)."""
    import ringloom as rl

    res = _run_ringloom(cfg, B, T, steps, warmup, graph, breakdown, attention, recompute)
    rl._C.cuda_empty_cache(0)
    return res


def _run_ringloom(cfg, B, T, steps, warmup, graph, breakdown, attention, recompute):
    import ringloom as rl
    from ringloom.models import build_model
    from ringloom.optim import AdamW
    from ringloom.train.graph import CapturedStep

    model = build_model(cfg, device="cuda:0", dtype="bfloat16", seed=0, attention=attention)
    model.recompute = recompute
    opt = AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, max_grad_norm=1.0)
    captured = CapturedStep(model, opt, (B, T)) if graph else None
    if captured is None:
        model.release_grads()  # as torch's grads start as None: the first backward allocates them
    rng = np.random.default_rng(0)
    data = rng.integers(0, cfg.vocab_size, size=(steps + warmup + 2, B, T + 1)).astype(np.int32)
    rl._C.cuda_reset_peak_memory(0)

    def step(i):
        if captured is not None:
            loss = captured.step(data[i, :, :-1], data[i, :, 1:])  # reads the loss: syncs
        else:
            # As the trainer's engine: the step's gradients replace the last ones (no zeroing pass)
            # and are released after the update.
            loss = model.forward_backward(data[i, :, :-1], data[i, :, 1:], accumulate=False, read_loss=False)
            opt.step()
            model.release_grads()  # their bytes serve the next forward (torch: zero_grad(set_to_none=True))
            loss = float(loss)  # read after the update is queued, as torch's loss.item()
        return loss

    times = []
    mallocs = 0
    for i in range(steps + warmup):
        before = rl._C.cuda_memory_stats(0)["num_cuda_mallocs"]
        t0 = time.perf_counter()
        loss = step(i)
        rl._C.cuda_synchronize(0)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            mallocs += rl._C.cuda_memory_stats(0)["num_cuda_mallocs"] - before
        assert math.isfinite(loss), loss
    stats = rl._C.cuda_memory_stats(0)
    peak = stats["peak_allocated_bytes"]
    # cudaMalloc inside a timed step means the cache had not settled (slow, synchronising).
    print(f"    ringloom recompute={recompute}: {mallocs} cudaMalloc calls in the {steps} timed steps, "
          f"{stats['reserved_bytes'] / 2**30:.2f} GiB reserved", flush=True)
    n_params = sum(int(np.prod(p.value.shape)) for _, p in model.parameters())
    med = float(np.median(times))
    parts = None
    if breakdown:
        k = steps + warmup
        parts = kernel_breakdown(lambda: step(k), lambda: rl._C.cuda_synchronize(0), med * 1e3)
    return med, peak, n_params, parts


def bench_torch(build, cfg, B, T, steps, warmup, compile_: bool, mode: str | None = None, breakdown: bool = False):
    """(seconds per step, peak bytes, breakdown or None) of the model build(cfg)."""
    import torch

    torch.cuda.empty_cache()  # the previous run's blocks
    torch.manual_seed(0)
    model = build(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=True)
    fwd = torch.compile(model, mode=mode) if compile_ else model
    data = torch.randint(0, cfg.vocab_size, (steps + warmup + 2, B, T + 1), device="cuda")
    torch.cuda.reset_peak_memory_stats()

    def step(i):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(data[i, :, :-1], data[i, :, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    times = []
    for i in range(steps + warmup):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(i)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated()
    med = float(np.median(times))
    parts = None
    if breakdown:
        k = steps + warmup
        parts = kernel_breakdown(lambda: step(k), torch.cuda.synchronize, med * 1e3)
    return med, peak, parts


def ringloom_rows(cfg, B, T, steps, warmup, breakdown, attention, recompute_modes: str) -> tuple[list, int]:
    """One ringloom row per recompute mode of the comma-separated list (the first is the row
    the speedups are relative to), each printed as it is measured; (rows, parameter count)."""
    rows, n_params = [], 0
    for i, mode in enumerate(m.strip() for m in recompute_modes.split(",")):
        s, mem, n_params, parts = bench_ringloom(cfg, B, T, steps, warmup, breakdown=breakdown, attention=attention,
                                                 recompute=mode)
        rows.append(("ringloom" if i == 0 else f"ringloom {mode}", s, mem, parts))
        progress(*rows[-1])
    return rows, n_params


def progress(impl: str, seconds: float, peak: int, parts: dict | None = None) -> None:
    """One line per side as soon as it is measured (a run cut short still tells something)."""
    split = ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) if parts else ""
    print(f"  {impl}: {seconds * 1e3:.1f} ms/step, peak {peak / 2**30:.2f} GiB" + (f" ({split} ms)" if split else ""),
          flush=True)


def report(title: str, rows: list, B: int, T: int, flops_per_step: float, json_path: str | None) -> None:
    """rows: (impl, seconds, peak bytes, breakdown or None); the first row is ringloom."""
    import torch

    name = torch.cuda.get_device_name()
    peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), 989.0)
    ours_s = rows[0][1]
    print(f"{title}, B{B} T{T} bf16 on {name}, torch {torch.__version__}")
    print(f"{'impl':16s} {'ms/step':>9s} {'tokens/s':>11s} {'MFU':>6s} {'peak GiB':>9s} {'ours speedup':>13s}")
    out = []
    for impl, s, mem, parts in rows:
        tps = B * T / s
        mfu = flops_per_step / s / (peak_tflops * 1e12)
        print(f"{impl:16s} {s*1e3:9.1f} {tps:11,.0f} {mfu:6.1%} {mem/2**30:9.2f} {s/ours_s:12.2f}x")
        out.append(dict(impl=impl, ms_per_step=s * 1e3, tokens_per_s=tps, mfu=mfu, peak_bytes=mem,
                        ours_speedup=s / ours_s, breakdown_ms=parts))
    with_parts = [r for r in out if r["breakdown_ms"]]
    if with_parts:
        cats = list(dict.fromkeys(c for r in with_parts for c in r["breakdown_ms"]))
        print("\nwhere the time goes (ms per step, GPU kernels by name; idle = step minus kernels)")
        print(f"{'category':16s}" + "".join(f" {r['impl']:>16s}" for r in with_parts))
        for c in cats:
            print(f"{c:16s}" + "".join(f" {r['breakdown_ms'].get(c, 0.0):16.2f}" for r in with_parts))
    if json_path:
        from common import device_info

        with open(json_path, "w") as f:
            json.dump({**device_info(), "title": title, "batch": B, "seq": T, "rows": out}, f, indent=2)
