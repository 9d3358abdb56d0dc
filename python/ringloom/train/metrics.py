"""metrics.jsonl: one JSON object per logged step, for scripts and plots.

Each line has at least ``step``, ``loss`` and ``tokens_per_s``; ``val_loss`` where it was
evaluated; plus whatever extras the caller passes (lr, grad_norm, ...). Lines are flushed as
they are written, so a crashed or running job's file is readable.

On resume, ``MetricsLogger(path, resume_step=k)`` keeps the lines with step <= k (those the
checkpoint covers) and drops later ones and a torn last line, then appends: the file never
holds a step twice. Non-finite floats (a diverged loss) are written as null, keeping every
line valid JSON.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

FILE_NAME = "metrics.jsonl"


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_metrics(path: str) -> list[dict]:
    """All complete records of a metrics.jsonl (a torn last line is skipped). A line that is
    not a JSON object with an integer ``step``, or a file that is not UTF-8, is a ValueError
    naming the file and line."""
    if os.path.isdir(path):
        path = os.path.join(path, FILE_NAME)
    records = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break  # torn last line: the writer died mid-write
            try:
                line = raw.decode("utf-8").strip()
                record = json.loads(line) if line else None
            except ValueError as e:   # JSONDecodeError and UnicodeDecodeError
                raise ValueError(f"{path}, line {lineno}: not a JSON line ({e})") from None
            if record is None:
                continue
            step = record.get("step") if isinstance(record, dict) else None
            if not isinstance(step, int) or isinstance(step, bool):
                raise ValueError(f"{path}, line {lineno}: not a metrics record (a JSON object with an "
                                 f"integer 'step')")
            records.append(record)
    return records


class MetricsLogger:
    """Append records to ``path`` (a file, or a directory that gets metrics.jsonl)."""

    def __init__(self, path: str, resume_step: int | None = None):
        path = os.fspath(path)
        if os.path.isdir(path) or path.endswith(os.sep):
            path = os.path.join(path, FILE_NAME)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        if resume_step is None:
            self._file = open(path, "w")
        else:
            self._truncate_after(resume_step)
            self._file = open(path, "a")

    def _truncate_after(self, step: int) -> None:
        if not os.path.exists(self.path):
            return
        try:
            kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        except ValueError as e:
            raise ValueError(f"cannot resume the metrics.jsonl, the file is not JSON lines: {e}") from None
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)

    def log(self, step: int, loss: float | None = None, tokens_per_s: float | None = None,
            val_loss: float | None = None, **extras: Any) -> dict:
        """Write one line; ``val_loss`` only when given. Returns the record written."""
        record: dict[str, Any] = {"step": int(step), "loss": loss, "tokens_per_s": tokens_per_s}
        if val_loss is not None:
            record["val_loss"] = val_loss
        record.update(extras)
        record = _plain(record)
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
