"""TensorBoard event files (our writer, read back by our reader and by TensorBoard's when it
is installed), crc32c, memory and MFU in the metrics."""
from __future__ import annotations

import glob
import os
import struct

import numpy as np
import pytest

from ringloom.train.metrics import read_metrics
from ringloom.train.telemetry import Telemetry, memory_stats, mfu
from ringloom.train.tensorboard import (EventWriter, crc32c, decode_event, encode_event, masked_crc32c,
                                        read_events, read_records)
from ringloom.train.trainer import run_training


def _crc32c_bitwise(data: bytes) -> int:
    """Castagnoli CRC one bit at a time, straight from the definition (reflected 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def test_crc32c(rng):
    # RFC 3720 (iSCSI) appendix B.4 check values.
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    for n in (0, 1, 7, 13, 100):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _crc32c_bitwise(data)
    c = crc32c(b"abc")
    assert masked_crc32c(b"abc") == (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_event_round_trip(rng):
    scalars = {f"tag/{i}": float(np.float32(v)) for i, v in enumerate(rng.standard_normal(5) * 1e3)}
    for step in (0, 1, 127, 128, 2**40 + 3, -5):
        ev = decode_event(encode_event(1234.5, step, scalars))
        assert ev["step"] == step and ev["wall_time"] == 1234.5 and ev["scalars"] == scalars
    ev = decode_event(encode_event(1.0, 9, file_version="brain.Event:2", session_start=True))
    assert ev["file_version"] == "brain.Event:2" and ev["session_start"] and ev["scalars"] == {}


def test_writer_file_and_corruption(tmp_path, rng):
    w = EventWriter(str(tmp_path), resume_step=4)
    values = rng.standard_normal(6)
    for step, v in enumerate(values, 5):
        w.scalars(step, {"loss": float(v), "skip_me": float("nan"), "none": None})
    w.close()
    events = read_events(w.path)
    assert events[0]["file_version"] == "brain.Event:2"
    assert events[1]["session_start"] and events[1]["step"] == 4
    assert [e["step"] for e in events[2:]] == list(range(5, 11))
    assert [e["scalars"] for e in events[2:]] == [{"loss": float(np.float32(v))} for v in values]
    # A flipped data byte fails the data CRC; a torn tail record is skipped.
    raw = bytearray(open(w.path, "rb").read())
    torn = tmp_path / "torn"
    torn.write_bytes(bytes(raw[:-3]))
    assert len(list(read_records(str(torn)))) == len(events) - 1
    (n,) = struct.unpack("<Q", raw[:8])
    raw[12 + n // 2] ^= 1
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="record data CRC mismatch"):
        list(read_records(str(bad)))


def test_tensorboard_reads_our_files(tmp_path, rng):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                 reason="the tensorboard package is not installed")
    w = EventWriter(str(tmp_path))
    values = rng.uniform(0, 5, 7)
    for step, v in enumerate(values, 1):
        w.scalars(step, {"train/loss": float(v)})
    w.close()
    ea = ea_mod.EventAccumulator(str(tmp_path))
    ea.Reload()
    got = [(e.step, e.value) for e in ea.Scalars("train/loss")]
    assert got == [(s, pytest.approx(float(np.float32(v)))) for s, v in enumerate(values, 1)]


def test_memory_and_mfu():
    m = memory_stats("cpu")
    assert m["mem_peak_mib"] > 1 and 1 < m["mem_rss_mib"] <= m["mem_peak_mib"] * 1.01 + 1
    # 6 N FLOPs per token: 1e9 params at 1e5 tok/s on a 1000 TFLOP/s device is 60%.
    assert mfu(10**9, 1e5, 1000.0) == pytest.approx(0.6)
    t = Telemetry(None, "cpu", 10**6)
    assert "mfu" not in t.enrich({"tokens_per_s": 5.0})  # no MFU on the CPU unless a peak is set
    t = Telemetry(None, "cpu", 10**6, peak_tflops=2.0)
    assert t.enrich({"tokens_per_s": 5e3})["mfu"] == pytest.approx(6e6 * 5e3 / 2e12)
    bar = Telemetry.postfix({"loss": 1.0, "tokens_per_s": 10.0, "grad_norm": 0.5, "lr": 1e-3, "mfu": 0.25,
                             "mem_rss_mib": 100.0})
    assert bar["mfu"] == "25.0%" and bar["mem"] == "100MiB" and bar["gnorm"] == "0.50"


def test_training_writes_metrics_and_events(train_config):
    cfg = train_config(steps=4, log_every=2, eval_every=4)
    run_training(cfg)
    records = read_metrics(cfg.out)
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        for key in ("loss", "tokens_per_s", "lr", "grad_norm", "mem_rss_mib", "mem_peak_mib", "skipped_steps"):
            assert isinstance(r[key], (int, float)) and np.isfinite(r[key]), key
        assert r["grad_norm"] > 0
    files = glob.glob(os.path.join(cfg.out, "tb", "events.out.tfevents.*"))
    assert len(files) == 1
    events = [e for e in read_events(files[0]) if e["scalars"]]
    assert [e["step"] for e in events] == [2, 4]
    assert events[1]["scalars"]["train/loss"] == pytest.approx(records[1]["loss"], rel=1e-6)
    assert events[1]["scalars"]["val/loss"] == pytest.approx(records[1]["val_loss"], rel=1e-6)
    assert events[0]["scalars"]["train/lr"] == pytest.approx(records[0]["lr"], rel=1e-6)
