import json
import os
import struct

import ml_dtypes
import numpy as np
import pytest

from ringloom.checkpoint import atomic_write_bytes, load_safetensors, save_safetensors


def test_round_trip_all_dtypes(tmp_path, rng):
    tensors = {
        "a.weight": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.standard_normal(7).astype(ml_dtypes.bfloat16),
        "ids": rng.integers(-5, 5, size=(2, 3)).astype(np.int64),
        "i32": rng.integers(0, 9, size=4).astype(np.int32),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.asarray(3.5, np.float32),
    }
    path = str(tmp_path / "m.safetensors")
    save_safetensors(path, tensors, metadata={"step": 12})
    out, meta = load_safetensors(path)
    assert meta == {"step": "12"}
    assert set(out) == set(tensors)
    for k, v in tensors.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        np.testing.assert_array_equal(out[k], v)


def test_layout_is_standard_safetensors(tmp_path):
    """Another reader only needs the documented layout: u64 header size, JSON, data."""
    path = str(tmp_path / "x.safetensors")
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_safetensors(path, {"w": w})
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    np.testing.assert_array_equal(np.frombuffer(raw[8 + n:8 + n + 24], np.float32).reshape(2, 3), w)


@pytest.mark.parametrize("damage", ["truncate_data", "truncate_header", "garbage_header", "huge_header", "tiny"])
def test_damaged_files_are_refused(tmp_path, damage):
    path = str(tmp_path / "d.safetensors")
    save_safetensors(path, {"w": np.ones((64, 64), np.float32)})
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    if damage == "truncate_data":
        raw = raw[:-100]
    elif damage == "truncate_header":
        raw = raw[: 8 + n // 2]
    elif damage == "garbage_header":
        raw = raw[:8] + b"{" * n + raw[8 + n:]
    elif damage == "huge_header":
        raw = struct.pack("<Q", 1 << 60) + raw[8:]
    else:
        raw = raw[:5]
    open(path, "wb").write(raw)
    with pytest.raises(ValueError, match="d.safetensors"):
        load_safetensors(path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = str(tmp_path / "f.bin")
    atomic_write_bytes(path, b"old")

    class Boom(Exception):
        pass

    from ringloom.checkpoint.atomic import atomic_write

    def write(f):
        f.write(b"partial")
        raise Boom()

    with pytest.raises(Boom):
        atomic_write(path, write)
    assert open(path, "rb").read() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"], "temporary file left behind"
