"""Golden runs: a short deterministic training run compared with a recorded one.

    golden_run(config, steps=20, seed=0, golden="tests/golden/my_model.json")

trains `config` from seed `seed` on a fixed stream of batches and compares, step by step,
the loss and the gradient norm (before clipping), then the final weights, with the JSON
file at `golden`. `update=True` (or `pytest --ringloom-update-golden`) writes the file
instead. A mismatch raises AssertionError naming the first diverging step and by how much
it diverged, so a change that moves the model fails a test with a message that says where.

What is recorded, human-readable:
  losses, grad_norms   per step, as exact decimal floats;
  weights              SHA-256 of the final float32 weights (name order) and, per tensor,
                       its L2 norm and its dot product with a fixed random probe: when the
                       hash differs (another CPU, another GPU, bf16), the tensors are
                       compared through these two numbers within the tolerance;
  speed                tokens/s per device name, a warning only when a run is much slower
                       (timings are noisy: never a failure).
Tolerances depend on where the run computes (TOLERANCES below): float32 on the CPU is
tight (a run is bit-stable from one run to the next on one machine; another CPU's BLAS
rounds differently), bf16 on a GPU is loose.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import time
import warnings
from typing import Any, Callable

import numpy as np

FORMAT = 1


@dataclasses.dataclass(frozen=True)
class GoldenTolerance:
    loss: float       # relative, per step
    grad_norm: float  # relative, per step
    weights: float    # relative, on each tensor's norm and probe (probe relative to the norm)


TOLERANCES: dict[str, GoldenTolerance] = {
    "cpu/float32": GoldenTolerance(loss=2e-5, grad_norm=2e-4, weights=2e-5),
    "cuda/float32": GoldenTolerance(loss=2e-3, grad_norm=1e-2, weights=2e-3),
    "cuda/bfloat16": GoldenTolerance(loss=3e-2, grad_norm=1e-1, weights=3e-2),
}

# A run slower than this fraction of the golden file's tokens/s on the same device warns.
SLOW_FRACTION = 0.7

# Set by the pytest plugin's --ringloom-update-golden: every golden_run writes its file.
UPDATE_ALL = False


class SpeedWarning(UserWarning):
    """A golden run ran much slower than the speed its golden file recorded."""


@dataclasses.dataclass
class GoldenResult:
    losses: list[float]
    grad_norms: list[float]
    weights: dict[str, Any]
    tokens_per_s: float
    device_name: str
    tolerance: GoldenTolerance
    updated: bool = False


def synthetic_batches(vocab_size: int, batch_size: int, seq_len: int, seed: int, data: np.ndarray | None = None):
    """The batch stream of a golden run: (ids, targets) int32 [B, T] for step k, a pure
    function of (seed, k). With `data` (a 1-D token array), windows of it at positions drawn
    from the seed; without, a learnable synthetic stream: each row follows
    x[t+1] = (a x[t] + c) mod V from a random start, one token in eight replaced by noise,
    so the loss falls but cannot reach zero."""
    def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
        g = np.random.default_rng([seed, step, 0x601D])
        if data is not None:
            starts = g.integers(0, len(data) - seq_len - 1, size=batch_size)
            rows = np.stack([data[s:s + seq_len + 1] for s in starts]).astype(np.int64)
        else:
            rows = learnable_rows(g, batch_size, seq_len + 1, vocab_size)
        rows = rows.astype(np.int32)
        return rows[:, :-1].copy(), rows[:, 1:].copy()
    return batch


def learnable_rows(g: np.random.Generator, rows: int, length: int, vocab_size: int) -> np.ndarray:
    """int64 [rows, length] following x[t+1] = (5 x[t] + 3) mod V from random starts, one
    token in eight replaced by noise: a tiny model learns it in a few dozen steps, and the
    noise keeps the loss off zero."""
    out = np.empty((rows, length), np.int64)
    out[:, 0] = g.integers(0, vocab_size, rows)
    for t in range(length - 1):
        out[:, t + 1] = (5 * out[:, t] + 3) % vocab_size
    noise = g.random(out.shape) < 0.125
    out[noise] = g.integers(0, vocab_size, int(noise.sum()))
    return out


def weights_fingerprint(state: dict[str, np.ndarray]) -> dict[str, Any]:
    """SHA-256 of the float32 weights in name order, and [L2 norm, probe] per tensor, the
    probe being the dot product with a unit-variance random vector seeded by the name."""
    h = hashlib.sha256()
    tensors = {}
    for name in sorted(state):
        w = np.ascontiguousarray(state[name], dtype=np.float32)
        h.update(name.encode())
        h.update(w.tobytes())
        probe = np.random.default_rng(list(name.encode())).standard_normal(w.size)
        w64 = w.astype(np.float64).reshape(-1)
        tensors[name] = [float(np.linalg.norm(w64)), float(w64 @ probe)]
    return {"sha256": h.hexdigest(), "tensors": tensors}


def device_name(device: str) -> str:
    """What the speed figure is keyed by: the GPU's name, or the CPU model and thread count."""
    from .. import _C

    if device.startswith("cuda"):
        try:
            import torch  # only for the name; ringloom does not expose it

            return torch.cuda.get_device_name(int(device.split(":")[1]) if ":" in device else 0)
        except Exception:
            return "cuda"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} x{_C.get_num_threads()}"


def golden_run(config, *, steps: int, seed: int, golden: str | os.PathLike, update: bool = False,
               device: str = "cpu", dtype: str | None = None, batch_size: int = 4, seq_len: int | None = None,
               lr: float = 3e-3, weight_decay: float = 0.1, max_grad_norm: float = 1.0,
               data: np.ndarray | None = None, model_fn: Callable[..., Any] | None = None,
               tolerance: GoldenTolerance | None = None) -> GoldenResult:
    """Train `config` for `steps` steps and compare with (or, with update, write) the golden
    file at `golden`. Returns what the run recorded.

    model_fn(config, device=..., dtype=..., seed=...) builds the model instead of
    ringloom.models.build_model (to check a custom model). `data`: a 1-D token array to
    draw windows from instead of the synthetic stream. `tolerance` overrides the table's
    entry for the device and dtype. Raises AssertionError on a mismatch (or when the file
    is missing and update is False), ValueError on bad arguments.
    """
    from ..models import build_model
    from ..optim import AdamW

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"golden_run: steps must be a positive integer, got {steps!r}")
    path = os.fspath(golden)
    seq_len = min(32, config.max_seq_len) if seq_len is None else int(seq_len)
    if not 1 <= seq_len <= config.max_seq_len:
        raise ValueError(f"golden_run: seq_len {seq_len} outside [1, max_seq_len={config.max_seq_len}]")
    if data is not None:
        data = np.asarray(data)
        if data.ndim != 1 or len(data) < seq_len + 2:
            raise ValueError(f"golden_run: data must be a 1-D token array longer than seq_len + 1 ({seq_len + 1})")
    build = model_fn or build_model
    model = build(config, device=device, dtype=dtype, seed=seed)
    dtype_name = getattr(model.dtype, "name", str(model.dtype))
    kind = "cuda" if model.device.startswith("cuda") else "cpu"
    tol = tolerance or TOLERANCES.get(f"{kind}/{dtype_name}")
    if tol is None:
        raise ValueError(f"golden_run: no tolerance for {kind}/{dtype_name}; pass tolerance=GoldenTolerance(...)")
    opt = AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
    batches = synthetic_batches(config.vocab_size, batch_size, seq_len, seed, data)

    losses, norms = [], []
    t_start = None
    for k in range(steps):
        if k == 1:
            t_start = time.perf_counter()  # step 0 pays for warm-up (allocations, first launches)
        ids, targets = batches(k)
        model.zero_grad()
        losses.append(float(model.forward_backward(ids, targets)))
        opt.step()
        norms.append(opt.grad_norm())
    elapsed = time.perf_counter() - t_start if t_start is not None else float("nan")
    tokens_per_s = (steps - 1) * batch_size * seq_len / elapsed if steps > 1 and elapsed > 0 else float("nan")
    result = GoldenResult(losses, norms, weights_fingerprint(model.state_dict()), tokens_per_s,
                          device_name(model.device), tol)

    run = {"steps": steps, "seed": seed, "batch_size": batch_size, "seq_len": seq_len, "lr": lr,
           "weight_decay": weight_decay, "max_grad_norm": max_grad_norm,
           "data": None if data is None else hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()}
    record = {"format": FORMAT, "config": _config_dict(config), "run": run, "device": f"{kind}/{dtype_name}",
              "losses": losses, "grad_norms": norms, "weights": result.weights}
    record = json.loads(json.dumps(record))  # as it reads back from the file (tuples become lists)
    if update or UPDATE_ALL:
        speed = {}
        if os.path.exists(path):
            try:
                speed = dict(_load(path).get("speed", {}))
            except AssertionError:
                speed = {}
        if math.isfinite(tokens_per_s):
            speed[result.device_name] = round(tokens_per_s, 1)
        record["speed"] = speed
        _write(path, record)
        result.updated = True
        return result

    if not os.path.exists(path):
        raise AssertionError(f"golden file {path} does not exist: run once with update=True "
                             f"(or pytest --ringloom-update-golden) to record it")
    gold = _load(path)
    _compare(path, gold, record, tol)
    expected_speed = gold.get("speed", {}).get(result.device_name)
    if expected_speed and math.isfinite(tokens_per_s) and tokens_per_s < SLOW_FRACTION * float(expected_speed):
        warnings.warn(f"golden run {path}: {tokens_per_s:,.0f} tokens/s on {result.device_name}, "
                      f"{tokens_per_s / float(expected_speed):.2f}x the recorded {float(expected_speed):,.0f}",
                      SpeedWarning, stacklevel=2)
    return result


def _config_dict(config) -> dict[str, Any]:
    if dataclasses.is_dataclass(config):
        return {k: v for k, v in dataclasses.asdict(config).items()}
    return dict(vars(config))


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            gold = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AssertionError(f"golden file {path} cannot be read: {e}") from None
    if not isinstance(gold, dict) or gold.get("format") != FORMAT:
        raise AssertionError(f"golden file {path} is not a ringloom golden file (format {FORMAT})")
    for key, kind in (("losses", list), ("grad_norms", list), ("weights", dict), ("config", dict), ("run", dict)):
        if not isinstance(gold.get(key), kind):
            raise AssertionError(f"golden file {path}: field {key!r} missing or not a {kind.__name__}")
    return gold


def _write(path: str, record: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(b), 1e-12)


def _compare(path: str, gold: dict[str, Any], rec: dict[str, Any], tol: GoldenTolerance) -> None:
    for key in ("config", "run"):
        if gold[key] != rec[key]:
            diff = sorted(k for k in set(gold[key]) | set(rec[key]) if gold[key].get(k) != rec[key].get(k))
            detail = ", ".join(f"{k}: golden {gold[key].get(k)!r}, this run {rec[key].get(k)!r}" for k in diff)
            raise AssertionError(f"golden file {path} was recorded for another {key} ({detail}); "
                                 f"update it (update=True / --ringloom-update-golden) if the change is intended")
    for k, (loss, g_loss, norm, g_norm) in enumerate(zip(rec["losses"], gold["losses"], rec["grad_norms"],
                                                         gold["grad_norms"])):
        for what, a, b, bound in (("loss", loss, g_loss, tol.loss), ("gradient norm", norm, g_norm, tol.grad_norm)):
            r = _rel(a, b)
            if r > bound:
                raise AssertionError(f"golden run {path} diverges at step {k}: {what} {a!r} vs golden {b!r} "
                                     f"(relative difference {r:.2e} > tolerance {bound:.0e}, {rec['device']})")
    if len(rec["losses"]) != len(gold["losses"]):
        raise AssertionError(f"golden run {path}: {len(rec['losses'])} steps vs golden {len(gold['losses'])}")
    if rec["weights"]["sha256"] == gold["weights"].get("sha256"):
        return
    ours, theirs = rec["weights"]["tensors"], gold["weights"].get("tensors", {})
    if sorted(ours) != sorted(theirs):
        missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
        raise AssertionError(f"golden run {path}: parameter names differ (missing {missing[:5]}, new {extra[:5]})")
    worst = None
    for name in sorted(ours):
        (n, p), (gn, gp) = ours[name], theirs[name]
        scale = max(abs(gn), 1e-12)
        r = max(abs(n - gn), abs(p - gp)) / scale
        if worst is None or r > worst[0]:
            worst = (r, name, n, gn, p, gp)
    if worst is not None and worst[0] > tol.weights:
        r, name, n, gn, p, gp = worst
        raise AssertionError(f"golden run {path}: final weights differ, most in {name}: norm {n:.8g} vs golden {gn:.8g}, "
                             f"probe {p:.8g} vs {gp:.8g} (relative {r:.2e} > tolerance {tol.weights:.0e}, "
                             f"{rec['device']}); losses and gradient norms matched every step")
