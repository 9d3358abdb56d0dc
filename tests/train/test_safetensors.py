import json
import os
import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _write_raw(path: str, header: object, data: bytes) -> None:
    blob = json.dumps(header).encode() if not isinstance(header, bytes) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + data)


@pytest.mark.parametrize("header,data,message", [
    ({"w": {"dtype": "F32", "shape": [2**64, 0], "data_offsets": [0, 0]}}, b"", "invalid shape"),
    ({"w": {"dtype": "F32", "shape": [2**63 - 1, 0], "data_offsets": [0, 0]}}, b"", "too large"),
    ({"w": {"dtype": "F32", "shape": [2**40, 0], "data_offsets": [0, 0]}}, b"", None),
    ({"w": {"dtype": "F32", "shape": [2**64, 1], "data_offsets": [0, 4]}}, b"\0" * 4, "invalid shape"),
    ({"w": {"dtype": "F32", "shape": [2**62 + 1, 4], "data_offsets": [0, 16]}}, b"\0" * 16, "too large"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}}, b"\0" * 4, "invalid data_offsets"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}}, b"\0" * 4, "invalid data_offsets"),
    ({"w": {"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]}}, b"\0" * 4, "invalid shape"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "invalid shape"),
    ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4, "invalid shape"),
    ({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "unsupported dtype"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}, b"\0" * 4, "is not {dtype"),
    ({"w": [1, 2, 3]}, b"", "is not {dtype"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "overlaps"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "leaves a gap"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "4 bytes after the last tensor"),
    ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
    ({"__metadata__": []}, b"", "__metadata__"),
    ([1, 2], b"", "not a JSON object"),
    (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4, "duplicate key"),
])
def test_forged_headers_are_refused(tmp_path, header, data, message):
    path = str(tmp_path / "f.safetensors")
    _write_raw(path, header, data)
    if message is None:   # a valid, if odd, file: an empty tensor with a huge dimension
        out, _ = load_safetensors(path)
        assert out["w"].size == 0
        return
    with pytest.raises(ValueError, match=f"f.safetensors: corrupted safetensors header.*{message}"):
        load_safetensors(path)


def test_huge_shape_with_int64_wraparound_is_refused(tmp_path):
    # 2**62 * 4 float32 elements: an int64 count times 4 bytes wraps to 0.
    path = str(tmp_path / "f.safetensors")
    _write_raw(path, {"w": {"dtype": "F32", "shape": [2**62, 4], "data_offsets": [0, 0]}}, b"")
    with pytest.raises(ValueError, match="too large"):
        load_safetensors(path)


@pytest.mark.timeout(30)
def test_devices_and_links_are_not_read(tmp_path):
    os.symlink("/dev/zero", tmp_path / "zero.safetensors")
    with pytest.raises(ValueError, match="symbolic link"):
        load_safetensors(str(tmp_path / "zero.safetensors"))
    with pytest.raises(ValueError, match="not a regular file"):
        load_safetensors("/dev/zero")


_dims = st.one_of(st.integers(0, 6), st.integers(-3, 2**66), st.text(max_size=2), st.floats(), st.booleans())
_entry = st.one_of(
    st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "BF16", "I64", "U8", "F8", "", "f32"]),
                           "shape": st.lists(_dims, max_size=4),
                           "data_offsets": st.lists(st.one_of(st.integers(-4, 200), st.text(max_size=2),
                                                              st.floats()), min_size=0, max_size=3)}),
    st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=3))


@settings(max_examples=300, deadline=None)
@given(header=st.dictionaries(st.text(max_size=6), _entry, max_size=4), data_len=st.integers(0, 160))
def test_random_headers_load_or_fail_cleanly(tmp_path_factory, header, data_len):
    """Any header either loads tensors that match it exactly, or is refused with a
    ValueError naming the file; nothing else escapes and nothing reads past the file."""
    path = str(tmp_path_factory.mktemp("h") / "r.safetensors")
    _write_raw(path, header, bytes(range(256))[:data_len] if data_len <= 256 else b"")
    try:
        out, _ = load_safetensors(path)
    except ValueError as e:
        assert "r.safetensors" in str(e)
        return
    for name, arr in out.items():
        assert list(arr.shape) == header[name]["shape"]
        begin, end = header[name]["data_offsets"]
        assert arr.nbytes == end - begin


@settings(max_examples=100, deadline=None)
@given(shapes=st.dictionaries(st.text(min_size=1, max_size=5).filter(lambda s: s != "__metadata__"),
                              st.lists(st.integers(0, 4), max_size=3), max_size=4))
def test_random_valid_files_round_trip(tmp_path_factory, shapes):
    path = str(tmp_path_factory.mktemp("v") / "v.safetensors")
    tensors = {k: np.arange(int(np.prod(s)), dtype=np.float32).reshape(s) for k, s in shapes.items()}
    save_safetensors(path, tensors)
    out, _ = load_safetensors(path)
    assert set(out) == set(tensors)
    for k in tensors:
        np.testing.assert_array_equal(out[k], tensors[k])
