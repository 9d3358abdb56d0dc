"""Token shards: round trips at both widths and odd sizes; corrupt files refused with the
file name and what is wrong."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from ringloom.data.shards import HEADER_SIZE, MAGIC, read_header, read_shard, write_shard


@pytest.mark.parametrize("vocab,width", [(256, 2), (50257, 2), (65536, 2), (65537, 4),
                                          (128256, 4)])
@pytest.mark.parametrize("n", [0, 1, 17, 1001])
def test_round_trip(tmp_path, rng, vocab, width, n):
    tokens = rng.integers(0, vocab, size=n)
    if n:
        tokens[-1] = vocab - 1  # the largest id must survive the narrowing
    path = tmp_path / "s.bin"
    write_shard(path, tokens, vocab)
    assert os.path.getsize(path) == HEADER_SIZE + n * width
    h = read_header(path)
    assert (h.num_tokens, h.vocab_size, h.dtype.itemsize) == (n, vocab, width)
    got = read_shard(path)
    assert got.dtype.itemsize == width and got.shape == (n,)
    np.testing.assert_array_equal(got.astype(np.int64), tokens)
    assert not got.flags.writeable


def test_memmap_is_lazy_view(tmp_path, rng):
    tokens = rng.integers(0, 256, size=333)
    write_shard(tmp_path / "s.bin", tokens, 256)
    got = read_shard(tmp_path / "s.bin")
    assert isinstance(got, np.memmap)
    with pytest.raises(ValueError):
        got[0] = 1


def test_little_endian_layout(tmp_path):
    write_shard(tmp_path / "s.bin", [1, 258], 300)
    raw = (tmp_path / "s.bin").read_bytes()
    assert raw[:8] == MAGIC
    assert raw[HEADER_SIZE:] == bytes([1, 0, 2, 1])


def test_write_rejects_out_of_vocab(tmp_path):
    with pytest.raises(ValueError, match="token 256 at index 2 is outside"):
        write_shard(tmp_path / "s.bin", [0, 5, 256], 256)
    with pytest.raises(ValueError, match="token -1 at index 0"):
        write_shard(tmp_path / "s.bin", [-1], 256)
    with pytest.raises(ValueError, match="1-D"):
        write_shard(tmp_path / "s.bin", np.zeros((2, 2), dtype=np.int32), 256)
    assert not (tmp_path / "s.bin").exists()


@pytest.fixture
def shard(tmp_path, rng):
    path = tmp_path / "good.bin"
    write_shard(path, rng.integers(0, 1000, size=97), 1000)
    return path


def _patch(path, offset, data: bytes):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_bad_magic(shard):
    _patch(shard, 0, b"GARBAGE!")
    with pytest.raises(ValueError, match=r"good\.bin.*bad magic"):
        read_shard(shard)


def test_wrong_version(shard):
    _patch(shard, 8, struct.pack("<I", 7))
    with pytest.raises(ValueError, match=r"good\.bin.*version 7"):
        read_shard(shard)


def test_unknown_dtype(shard):
    _patch(shard, 16, struct.pack("<I", 3))
    with pytest.raises(ValueError, match=r"good\.bin.*dtype code 3"):
        read_shard(shard)


@pytest.mark.parametrize("cut", [1, 2, 61])
def test_truncated(shard, cut):
    raw = shard.read_bytes()
    shard.write_bytes(raw[:-cut])
    with pytest.raises(ValueError, match=r"good\.bin.*truncated.*97 tokens"):
        read_shard(shard)


def test_trailing_bytes(shard):
    with open(shard, "ab") as f:
        f.write(b"\0\0\0")
    with pytest.raises(ValueError, match=r"good\.bin.*3 bytes after"):
        read_shard(shard)


def test_shorter_than_header(tmp_path):
    p = tmp_path / "tiny.bin"
    p.write_bytes(b"RLTOK")
    with pytest.raises(ValueError, match=r"tiny\.bin.*shorter than the"):
        read_shard(p)


def test_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.bin"):
        read_shard(tmp_path / "absent.bin")
