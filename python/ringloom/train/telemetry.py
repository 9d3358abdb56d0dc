"""What a training run reports besides the loss: memory, MFU, and where records go
(metrics.jsonl and TensorBoard event files under --out/tb).

Memory. On the CPU: the process's resident set now (/proc/self/statm) and its peak
(getrusage ru_maxrss). On a GPU: ringloom's caching allocator (ringloom._C.cuda_memory_stats):
bytes allocated, reserved from the driver, and the peak allocated.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, PaLM appendix B): the FLOP/s the
model's arithmetic needs at the measured throughput, over the hardware's peak:
    MFU = 6 * N * tokens_per_s / peak_flops
with N the parameter count (2N FLOPs per token forward, 4N backward). The attention scores'
own FLOPs (12 * n_layer * n_embd * T per token) are left out, as in the 6N convention, so
MFU is slightly understated at long sequence lengths. peak_flops comes from --peak-tflops;
on a GPU it defaults to 989 TFLOP/s, the H100 SXM's dense BF16 peak (set it for other GPUs:
H200 is also 989, A100 312). MFU is not reported on the CPU.
"""
from __future__ import annotations

import os
import resource
from typing import Any

DEFAULT_GPU_PEAK_TFLOPS = 989.0
_MiB = float(1 << 20)
_TB_TAGS = {"val_loss": "val/loss"}  # everything else is train/<key>


def memory_stats(device: str) -> dict[str, float]:
    """{name: MiB} for the progress bar and the metrics (see the module docstring)."""
    if device.startswith("cuda"):
        from .. import _C

        index = int(device.split(":")[1]) if ":" in device else 0
        s = _C.cuda_memory_stats(index)
        return {"mem_allocated_mib": s["allocated_bytes"] / _MiB, "mem_reserved_mib": s["reserved_bytes"] / _MiB,
                "mem_peak_mib": s["peak_allocated_bytes"] / _MiB}
    out = {"mem_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}  # KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        out["mem_rss_mib"] = resident_pages * os.sysconf("SC_PAGE_SIZE") / _MiB
    except (OSError, ValueError, IndexError):
        pass  # not Linux: the peak alone
    return out


def model_flops_per_token(n_params: int) -> float:
    return 6.0 * n_params


def mfu(n_params: int, tokens_per_s: float, peak_tflops: float) -> float:
    return model_flops_per_token(n_params) * tokens_per_s / (peak_tflops * 1e12)


def peak_tflops_for(device: str, setting: float | None) -> float | None:
    if setting is not None:
        return setting
    return DEFAULT_GPU_PEAK_TFLOPS if device.startswith("cuda") else None


class Telemetry:
    """One sink for step records: metrics.jsonl (always, when there is an --out) and
    TensorBoard scalars (when ``tensorboard``). ``resume_step``: continue the files of an
    interrupted run after that step (later lines are dropped / purged)."""

    def __init__(self, out: str | None, device: str, n_params: int, peak_tflops: float | None = None,
                 tensorboard: bool = True, resume_step: int | None = None):
        from .metrics import MetricsLogger

        self.device = device
        self.n_params = n_params
        self.peak_tflops = peak_tflops_for(device, peak_tflops)
        self.metrics = MetricsLogger(out, resume_step=resume_step) if out else None
        self.events = None
        if out and tensorboard:
            from .tensorboard import EventWriter

            self.events = EventWriter(os.path.join(out, "tb"), resume_step=resume_step)

    def enrich(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add memory and (on a GPU) MFU to a record that has tokens_per_s."""
        record.update(memory_stats(self.device))
        tps = record.get("tokens_per_s")
        if self.peak_tflops and tps is not None:
            record["mfu"] = mfu(self.n_params, tps, self.peak_tflops)
        return record

    @staticmethod
    def postfix(record: dict[str, Any]) -> dict[str, str]:
        """Short progress-bar fields."""
        out = {"loss": f"{record['loss']:.3f}"}
        if record.get("tokens_per_s") is not None:
            out["tok/s"] = f"{record['tokens_per_s']:,.0f}"
        if record.get("grad_norm") is not None:
            out["gnorm"] = f"{record['grad_norm']:.2f}"
        if record.get("lr") is not None:
            out["lr"] = f"{record['lr']:.2e}"
        if "mfu" in record:
            out["mfu"] = f"{100 * record['mfu']:.1f}%"
        mem = record.get("mem_allocated_mib", record.get("mem_rss_mib"))
        if mem is not None:
            out["mem"] = f"{mem:,.0f}MiB"
        return out

    def log(self, record: dict[str, Any]) -> None:
        if self.metrics:
            self.metrics.log(**record)
        if self.events:
            step = record["step"]
            self.events.scalars(step, {_TB_TAGS.get(k, f"train/{k}"): v for k, v in record.items() if k != "step"})

    def close(self) -> None:
        if self.metrics:
            self.metrics.close()
        if self.events:
            self.events.close()
