"""Memory on one GPU: activation recomputation, the ZeRO stages, asynchronous checkpoints.

  bench_memory.py recompute   llama-1b, B16 T2048, bf16: peak memory and tokens/s for
                              recompute none | selective | full, beside PyTorch eager without and
                              with torch.utils.checkpoint per block (the same run)
  bench_memory.py zero        bytes of parameters, gradients and optimizer state per rank of
                              llama-1b at 1, 2 and 4 ranks for --zero 1, 2, 3, read from the
                              engine's live buffers after a step; the ranks share the GPU (MPS
                              when nvidia-cuda-mps-control exists) and talk over the TCP ring
  bench_memory.py save        gpt2-124m, B16 T1024: step time of the steps around a checkpoint,
                              blocking vs --async-save
  bench_memory.py all         the three in turn

Each part checks itself (finite losses; the recompute modes give the same loss and gradient
norm on a fixed batch; ZeRO's per-rank bytes shrink with the stage; the async checkpoint
verifies) and prints a table; --json writes the rows. Each part takes under 3 minutes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

GiB = 2.0**30


# ---------------------------------------------------------------------------------- recompute
def _ours_recompute(cfg, B: int, T: int, steps: int, device: str) -> list[dict]:
    import ringloom as rl
    from ringloom.models import build_model
    from ringloom.optim import AdamW

    gpu = device != "cpu"
    model = build_model(cfg, device=device, dtype="bfloat16" if gpu else "float32", seed=0)
    sync = (lambda: rl._C.cuda_synchronize(0)) if gpu else (lambda: None)
    opt = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, max_grad_norm=1.0)
    rng = np.random.default_rng(0)
    data = rng.integers(0, cfg.vocab_size, size=(steps + 2, B, T + 1)).astype(np.int32)
    probe = data[0]
    rows, checks = [], {}
    # Same weights, same batch: loss, gradient norm and the activations a slot keeps, per mode.
    for mode in ("none", "selective", "full"):
        model.recompute = mode
        model.zero_grad()
        loss = model.forward_backward(probe[:, :-1], probe[:, 1:])
        norm = float(np.asarray(rl._C.ops.grad_norm([p.grad for _, p in model.parameters()]).to("cpu").numpy())[0])
        model.stage_forward(0, probe[:, :-1], targets=probe[:, 1:])
        saved = sum(b.saved_bytes(0) for b in model.blocks)
        model.release(0)
        checks[mode] = (loss, norm, saved)
    for mode in ("none", "selective", "full"):
        model.recompute = mode
        sync()
        if gpu:
            rl._C.cuda_reset_peak_memory(0)
        times = []
        for i in range(steps + 1):   # the first step warms up
            t0 = time.perf_counter()
            model.zero_grad()
            loss = model.forward_backward(data[i + 1, :, :-1], data[i + 1, :, 1:])
            opt.step()
            sync()
            if i:
                times.append(time.perf_counter() - t0)
            assert math.isfinite(loss), f"recompute {mode}: loss {loss}"
        peak = rl._C.cuda_memory_stats(0)["peak_allocated_bytes"] if gpu else 0
        rows.append({"impl": f"ringloom recompute={mode}", "peak_gib": peak / GiB,
                     "tokens_per_s": B * T / float(np.median(times)), "step_ms": 1e3 * float(np.median(times)),
                     "probe_loss": checks[mode][0], "probe_grad_norm": checks[mode][1],
                     "activations_gib": checks[mode][2] / GiB})
    ref = checks["none"]
    for mode in ("selective", "full"):
        loss, norm, saved = checks[mode]
        # The same kernels on the same inputs: equal up to the GPU kernels' own run-to-run determinism.
        assert abs(loss - ref[0]) <= 1e-3 * abs(ref[0]) and abs(norm - ref[1]) <= 1e-2 * ref[1], (mode, checks)
        assert saved < ref[2], f"recompute {mode} keeps {saved} bytes, none keeps {ref[2]}"
    assert checks["full"][2] < checks["selective"][2]
    del model, opt
    if gpu:
        rl._C.cuda_empty_cache()
    return rows


def torch_llama(cfg, checkpoint: bool):
    """A minimal PyTorch LLaMA of ringloom's llama shape (RMSNorm, SwiGLU, RoPE, GQA, tied
    embeddings), bf16 autocast, optionally torch.utils.checkpoint around every block."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint as ckpt

    C, H, Hkv, Fh = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.ffn_hidden
    D = C // H

    def rope(x, cos, sin):   # x [B, h, T, D], rotating pairs (2i, 2i+1)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.RMSNorm(C, eps=cfg.norm_eps), nn.RMSNorm(C, eps=cfg.norm_eps)
            self.qkv = nn.Linear(C, (H + 2 * Hkv) * D, bias=False)
            self.proj = nn.Linear(C, C, bias=False)
            self.fc = nn.Linear(C, 2 * Fh, bias=False)
            self.down = nn.Linear(Fh, C, bias=False)

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.n1(x)).view(B, T, H + 2 * Hkv, D).transpose(1, 2).split([H, Hkv, Hkv], dim=1)
            a = F.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v, is_causal=True,
                                               enable_gqa=True)
            x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
            gate, up = self.fc(self.n2(x)).chunk(2, dim=-1)
            return x + self.down(F.silu(gate) * up)

    class LLaMA(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg.vocab_size, C)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.norm = nn.RMSNorm(C, eps=cfg.norm_eps)
            for p in self.parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, 0.0, 0.02)

        def forward(self, idx, targets):
            T = idx.shape[1]
            inv = 1.0 / (cfg.rope_base ** (torch.arange(0, D, 2, device=idx.device, dtype=torch.float32) / D))
            ang = torch.outer(torch.arange(T, device=idx.device, dtype=torch.float32), inv)
            cos, sin = ang.cos(), ang.sin()
            x = self.wte(idx)
            for b in self.blocks:
                x = ckpt(b, x, cos, sin, use_reentrant=False) if checkpoint else b(x, cos, sin)
            logits = self.norm(x) @ self.wte.weight.T
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    return LLaMA().cuda()


def _torch_recompute(cfg, B: int, T: int, steps: int) -> list[dict]:
    import torch

    rows = []
    for checkpoint in (False, True):
        label = "torch eager + checkpoint per block" if checkpoint else "torch eager"
        try:
            torch.manual_seed(0)
            model = torch_llama(cfg, checkpoint)
            opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
            data = torch.randint(0, cfg.vocab_size, (steps + 1, B, T + 1), device="cuda")
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for i in range(steps + 1):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(data[i, :, :-1], data[i, :, 1:])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                assert math.isfinite(loss.item())
                torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - t0)
            rows.append({"impl": label, "peak_gib": torch.cuda.max_memory_allocated() / GiB,
                         "tokens_per_s": B * T / float(np.median(times)), "step_ms": 1e3 * float(np.median(times))})
        except torch.OutOfMemoryError as e:   # reported, not hidden
            rows.append({"impl": label, "error": f"out of memory: {str(e).splitlines()[0]}"})
        except Exception as e:   # the peer failing must not lose our rows
            rows.append({"impl": label, "error": f"{type(e).__name__}: {e}"})
        finally:
            model = opt = None
            torch.cuda.empty_cache()
    return rows


def part_recompute(args) -> list[dict]:
    from ringloom.models import get_preset

    cfg = get_preset(args.preset)
    rows = _ours_recompute(cfg, args.batch, args.seq, args.steps, args.device)
    if args.device != "cpu":
        try:
            rows += _torch_recompute(cfg, args.batch, args.seq, args.steps)
        except ImportError as e:
            rows.append({"impl": "torch", "error": f"not installed: {e}"})
    print(f"\n{args.preset} B{args.batch} T{args.seq} on {args.device}: activation recomputation")
    print(f"{'impl':<38} | {'peak GiB':>8} | {'tokens/s':>9} | {'step ms':>8} | {'acts GiB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['impl']:<38} | {r['error']}")
            continue
        acts = f"{r['activations_gib']:8.2f}" if "activations_gib" in r else f"{'-':>8}"
        print(f"{r['impl']:<38} | {r['peak_gib']:8.2f} | {r['tokens_per_s']:9.0f} | {r['step_ms']:8.1f} | {acts}")
    return rows


# ---------------------------------------------------------------------------------- ZeRO
def zero_worker(out_path: str, T: int, preset: str, device: str) -> None:
    """One rank: for each ZeRO stage, an engine over all ranks, one step, the live bytes."""
    import ringloom as rl
    import ringloom.distributed as dist
    import ringloom.models.model as model_mod
    from ringloom.models import get_preset
    from ringloom.parallel import DeviceMesh, ParallelEngine

    # The byte counts do not depend on the values: skip drawing 1.24 B initial weights on
    # the host in every rank (the weights stay as the layers made them, zero matrices and
    # unit norm gains; the loss is then log V, finite).
    model_mod.Model._initialize = lambda model, seed: None
    pg = dist.init(backend="ring", timeout=600)
    n = pg.size
    cfg = get_preset(preset)
    dtype = "float32" if device == "cpu" else "bfloat16"
    sync = (lambda: None) if device == "cpu" else (lambda: rl._C.cuda_synchronize(0))
    rows = []
    # Plain data parallel beside the stages, except at 4 ranks, whose 4 full replicas of
    # llama-1b's weights, gradients and AdamW state would not fit one GPU together.
    for zero in (0,) if n == 1 else (0, 1, 2, 3) if n == 2 else (1, 2, 3):
        mesh = DeviceMesh(n, 1, pg)
        engine = ParallelEngine(cfg, mesh, device=device, dtype=dtype, zero=zero, micro_batches=1,
                                lr=1e-4, max_grad_norm=1.0)
        g = np.random.default_rng(pg.rank)
        ids = g.integers(0, cfg.vocab_size, size=(1, T + 1)).astype(np.int32)
        sync()
        loss = engine.train_step(ids[:, :-1], ids[:, 1:])
        assert math.isfinite(loss), loss
        sync()
        b = engine.memory_bytes()
        n_params = sum(int(np.prod(p.value.shape)) for _, p in engine.named)
        rows.append({"ranks": n, "zero": zero, "rank": pg.rank, "n_params": n_params, **b,
                     "bytes_per_param": b["total"] / n_params})
        del engine, mesh
        if device != "cpu":
            rl._C.cuda_empty_cache()
        pg.barrier()
    with open(out_path.replace("RANK", str(pg.rank)), "w") as f:
        json.dump(rows, f)
    pg.barrier()


def _mps_start() -> bool:
    """Start the MPS control daemon when it exists and is not running; True if started here."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        return False
    probe = subprocess.run(["nvidia-cuda-mps-control"], input="get_server_list\n", capture_output=True, text=True,
                           timeout=10)
    if probe.returncode == 0:
        return False
    return subprocess.run(["nvidia-cuda-mps-control", "-d"], timeout=30).returncode == 0


def part_zero(args) -> list[dict]:
    tmp = tempfile.mkdtemp(prefix="rl-zero-")
    started = _mps_start() if args.device != "cpu" else False
    rows: list[dict] = []
    try:
        for n in (1, 2, 4):
            path = os.path.join(tmp, f"n{n}.rankRANK.json")
            cmd = [sys.executable, "-m", "ringloom.launch", "-n", str(n), os.path.abspath(__file__), "zero-worker",
                   "--worker-out", path, "--preset", args.preset, "--device", args.device]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
            if res.returncode != 0:
                rows.append({"ranks": n, "error": (res.stdout + res.stderr)[-1500:]})
                continue
            for r in range(n):
                with open(path.replace("RANK", str(r))) as f:
                    rows += json.load(f)
    finally:
        if started:
            subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.preset}, bytes per rank after a step (largest rank), ranks sharing one GPU; plain data parallel "
          "in mixed precision: 16 bytes/param (ZeRO paper), ours 18 (bf16 weights, fp32 gradients)")
    print(f"{'ranks':>5} | {'zero':>4} | {'params GiB':>10} | {'grads GiB':>9} | {'optim GiB':>9} | {'B/param':>7}")
    ok = [r for r in rows if "error" not in r]
    for n in (1, 2, 4):
        for z in (0, 1, 2, 3):
            sel = [r for r in ok if r["ranks"] == n and r["zero"] == z]
            if sel:
                r = max(sel, key=lambda x: x["total"])
                print(f"{n:5d} | {z:4d} | {r['params'] / GiB:10.2f} | {r['grads'] / GiB:9.2f} | "
                      f"{r['optimizer'] / GiB:9.2f} | {r['bytes_per_param']:7.2f}")
    for r in rows:
        if "error" in r:
            print(f"{r['ranks']} ranks failed:\n{r['error']}")
    # Self-check: at 4 ranks each stage holds less than the one before.
    per = {z: max(r["total"] for r in ok if r["ranks"] == 4 and r["zero"] == z) for z in (1, 2, 3)
           if any(r["ranks"] == 4 and r["zero"] == z for r in ok)}
    if len(per) == 3:
        assert per[1] > per[2] > per[3], per
    return rows


# ---------------------------------------------------------------------------------- save
def part_save(args) -> list[dict]:
    from ringloom.train.config import TrainConfig
    from ringloom.train.trainer import Trainer
    from ringloom.train.checkpointing import finish_async_save, save_trainer
    from ringloom.checkpoint.manager import latest_complete, open_checkpoint

    rows = []
    for async_save in (False, True):
        out = tempfile.mkdtemp(prefix="rl-save-")
        try:
            cfg = TrainConfig(preset=args.save_preset, device=args.device, batch_size=args.save_batch,
                              seq_len=args.save_seq, steps=100,
                              out=out, save_every=1000, async_save=async_save, progress=False, tensorboard=False,
                              corpus_bytes=4_000_000, tokenizer="byte", eval_every=0, sample_len=0)
            tr = Trainer(cfg)
            n_params = sum(int(np.prod(p.value.shape)) for _, p in tr.engine.model.parameters())
            # Saves after steps 4 (the first: async allocates its pinned buffers) and 10
            # (measured); the median step comes from steps 1-3 and 6-8.
            times = []
            for i in range(14):
                t0 = time.perf_counter()
                loss = tr.train_step()
                if i in (4, 10):
                    save_trainer(tr)
                times.append(time.perf_counter() - t0)
                assert math.isfinite(loss)
                if i == 4 and async_save:
                    # The measured save must not queue behind the first one's write: with
                    # --save-every larger than a write takes, as in training, none does.
                    tr.checkpoint_writer.wait()
            finish_async_save(tr)
            base = float(np.median(times[1:4] + times[6:9]))
            ck = open_checkpoint(latest_complete(os.path.join(out, "checkpoints")))   # verifies the checksums
            assert ck.step == 11, ck.step
            rows.append({"mode": "async" if async_save else "blocking", "step_ms": 1e3 * base,
                         "first_save_step_ms": 1e3 * times[4], "save_step_ms": 1e3 * times[10],
                         "next_steps_ms": [1e3 * t for t in times[11:14]],
                         "save_cost_ms": 1e3 * (sum(times[10:14]) - 4 * base),
                         "checkpoint_mb": sum(v["bytes"] for v in ck.manifest["files"].values()) / 2**20})
        finally:
            shutil.rmtree(out, ignore_errors=True)
    print(f"\n{args.save_preset} (byte vocabulary: {n_params / 1e6:.0f} M parameters) B{args.save_batch} "
          f"T{args.save_seq} on {args.device}: a checkpoint save inside training")
    print(f"{'mode':<9} | {'step ms':>8} | {'1st save step':>13} | {'save step ms':>12} | {'next 3 steps ms':>22} | "
          f"{'cost ms':>8} | {'MB':>6}")
    for r in rows:
        nxt = ", ".join(f"{t:.0f}" for t in r["next_steps_ms"])
        print(f"{r['mode']:<9} | {r['step_ms']:8.1f} | {r['first_save_step_ms']:13.1f} | {r['save_step_ms']:12.1f} | "
              f"{nxt:>22} | {r['save_cost_ms']:8.1f} | {r['checkpoint_mb']:6.0f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["recompute", "zero", "save", "all", "zero-worker"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="llama-1b", help="recompute, zero: the model (default: %(default)s)")
    ap.add_argument("--device", default="cuda:0", help="zero, save: cuda:0, or cpu for a dry run of the logic")
    ap.add_argument("--save-preset", default="gpt2-124m")
    ap.add_argument("--save-batch", type=int, default=16)
    ap.add_argument("--save-seq", type=int, default=1024)
    args = ap.parse_args()
    if args.part == "zero-worker":
        zero_worker(args.worker_out, T=64, preset=args.preset, device=args.device)
        return
    parts = {"recompute": part_recompute, "zero": part_zero, "save": part_save}
    todo = list(parts) if args.part == "all" else [args.part]
    result = {}
    for name in todo:
        t0 = time.perf_counter()
        result[name] = parts[name](args)
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]")
    try:
        import torch

        result["device"] = torch.cuda.get_device_name()
        result["torch"] = torch.__version__
    except ImportError:
        pass
    result["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
