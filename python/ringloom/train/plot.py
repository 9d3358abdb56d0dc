"""`ringloom plot RUN_DIR`: loss.png and throughput.png from a run's metrics.jsonl.

loss.png: training loss per logged step (and val loss where evaluated), log-scaled y when the
loss spans more than a factor of 10. throughput.png: tokens/s per logged step, with MFU on a
second axis when the run recorded it (GPU). Needs matplotlib (pip install 'ringloom[plot]').
"""
from __future__ import annotations

import os
from typing import Any

from .metrics import FILE_NAME, read_metrics


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records
           if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def plot_run(run_dir: str, out_dir: str | None = None) -> list[str]:
    """Write the plots of ``run_dir`` into ``out_dir`` (default: run_dir); returns their paths."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("ringloom plot needs matplotlib: pip install 'ringloom[plot]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    path = os.path.join(run_dir, FILE_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {run_dir!r} the --out directory of `ringloom train`?")
    records = read_metrics(path)
    if not records:
        raise ValueError(f"{path} holds no records yet")
    out_dir = out_dir or run_dir
    os.makedirs(out_dir, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps, loss = _series(records, "loss")
    ax.plot(steps, loss, label="train", lw=1.2)
    vsteps, vloss = _series(records, "val_loss")
    if vsteps:
        ax.plot(vsteps, vloss, "o-", label="val", ms=3)
    both = loss + vloss
    if both and min(both) > 0 and max(both) / min(both) > 10:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss", title=f"loss: {os.path.basename(os.path.abspath(run_dir))}")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, os.path.join(out_dir, "loss.png")))

    fig, ax = plt.subplots(figsize=(7, 4.2))
    tsteps, tps = _series(records, "tokens_per_s")
    ax.plot(tsteps, tps, color="tab:green", lw=1.2)
    ax.set(xlabel="step", ylabel="tokens / s", title="throughput")
    ax.grid(alpha=0.3)
    msteps, mfu = _series(records, "mfu")
    if msteps:
        ax2: Any = ax.twinx()
        ax2.plot(msteps, [100 * m for m in mfu], color="tab:purple", lw=1, alpha=0.7)
        ax2.set_ylabel("MFU %")
    written.append(_save(fig, os.path.join(out_dir, "throughput.png")))
    return written


def _save(fig: Any, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
