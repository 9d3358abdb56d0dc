"""Token shards: a flat array of token ids on disk behind a small fixed header.

Format (version 1; all integers little-endian)::

    offset  size  field
    0       8     magic        b"RLTOKENS"
    8       4     version      uint32, 1
    12      4     header_size  uint32, bytes before the first token (64 in version 1)
    16      4     dtype_code   uint32: 2 = uint16 tokens, 4 = uint32 tokens (= bytes per token)
    20      4     vocab_size   uint32, every token is < vocab_size
    24      8     num_tokens   uint64
    32      32    reserved     zero
    64      ...   tokens       num_tokens * dtype_code bytes, little-endian, nothing after

The token width follows the vocabulary: uint16 when vocab_size <= 65536 (byte and GPT-2-sized
vocabularies), uint32 beyond. The file is exactly ``header_size + num_tokens * dtype_code``
bytes, so a truncated copy is detected. Readers memory-map the tokens read-only: opening an
8 GB shard costs nothing and pages are read on demand.

The same text is in docs/data-format.md.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"RLTOKENS"
VERSION = 1
HEADER_SIZE = 64
_HEADER = struct.Struct("<8sIIIIQ")  # magic, version, header_size, dtype_code, vocab, tokens
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


@dataclass(frozen=True)
class ShardHeader:
    version: int
    header_size: int
    dtype: np.dtype
    vocab_size: int
    num_tokens: int


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32 (both little-endian)."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= 1 << 16:
        return _DTYPES[2]
    if vocab_size < 1 << 32:  # the header stores vocab_size as uint32
        return _DTYPES[4]
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 tokens")


def write_shard(path: str, tokens, vocab_size: int) -> ShardHeader:
    """Write ``tokens`` (1-D integers, each in [0, vocab_size)) as a shard at ``path``.

    Written to a temporary file and renamed, so a reader never sees half a shard.
    """
    path = os.fspath(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"write_shard {path}: tokens must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"write_shard {path}: tokens must be integers, got dtype {arr.dtype}")
    dtype = dtype_for_vocab(vocab_size)
    if arr.size:
        bad = np.flatnonzero((arr < 0) | (arr >= vocab_size))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"write_shard {path}: token {int(arr[i])} at index {i} is outside "
                             f"the vocabulary [0, {vocab_size})")
    header = _HEADER.pack(MAGIC, VERSION, HEADER_SIZE, dtype.itemsize, vocab_size, arr.size)
    header += b"\0" * (HEADER_SIZE - len(header))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(arr.astype(dtype, copy=False).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return ShardHeader(VERSION, HEADER_SIZE, dtype, vocab_size, int(arr.size))


def read_header(path: str) -> ShardHeader:
    """Parse and validate a shard's header against the file's size (ValueError if bad)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"token shard not found: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(_HEADER.size)
    if len(raw) < _HEADER.size:
        raise ValueError(f"{path}: not a token shard: file is {size} bytes, shorter than the "
                         f"{_HEADER.size}-byte header")
    magic, version, header_size, code, vocab, count = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise ValueError(f"{path}: not a token shard: bad magic {magic!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"{path}: unsupported token shard version {version} (this ringloom "
                         f"reads version {VERSION})")
    if header_size < _HEADER.size:
        raise ValueError(f"{path}: corrupt token shard: header_size {header_size} < "
                         f"{_HEADER.size}")
    if code not in _DTYPES:
        raise ValueError(f"{path}: corrupt token shard: unknown dtype code {code} "
                         f"(expected 2 = uint16 or 4 = uint32)")
    expected = header_size + count * code
    if size < expected:
        raise ValueError(f"{path}: truncated token shard: header says {count} tokens "
                         f"({expected} bytes) but the file has {size} bytes")
    if size > expected:
        raise ValueError(f"{path}: corrupt token shard: {size - expected} bytes after the "
                         f"{count} tokens the header announces")
    return ShardHeader(version, header_size, _DTYPES[code], vocab, count)


def read_shard(path: str) -> np.ndarray:
    """The shard's tokens as a read-only memory map (uint16 or uint32), shape [num_tokens]."""
    h = read_header(path)
    if h.num_tokens == 0:  # mmap cannot map zero bytes
        empty = np.zeros(0, dtype=h.dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(os.fspath(path), dtype=h.dtype, mode="r", offset=h.header_size,
                     shape=(h.num_tokens,))
