"""Tokenizers: round trips, strict decoding, ids outside the vocabulary, specs."""
from __future__ import annotations

import numpy as np
import pytest

from ringloom.data.tokenizer import ByteTokenizer, build_tokenizer, load_tokenizer

TEXTS = ["", "a", "hello, world\n", "naïve café — ✓ 日本語 🐍", "\0\x01\x7f tabs\tand\r\n"]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert ids.tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.decode(ids.tolist(), strict=True) == text


def test_byte_round_trip_random(rng, random_text):
    tok = ByteTokenizer()
    for n in (1, 7, 333):
        text = random_text(rng, n)
        assert tok.decode(tok.encode(text), strict=True) == text


def test_byte_decode_invalid_utf8():
    tok = ByteTokenizer()
    ids = tok.encode("ab✓cd")  # ✓ is 3 bytes at positions 2..4
    cut = np.concatenate([ids[:3], ids[5:]])  # keep only the first byte of ✓
    assert tok.decode(cut) == "ab\ufffdcd"
    with pytest.raises(ValueError, match="position 2"):
        tok.decode(cut, strict=True)


@pytest.mark.parametrize("bad", [[65, 256], [-1], [300, 1]])
def test_byte_decode_out_of_vocab(bad):
    with pytest.raises(ValueError, match=f"token id {[b for b in bad if not 0 <= b < 256][0]}"):
        ByteTokenizer().decode(bad)


def test_byte_decode_rejects_2d_and_floats():
    with pytest.raises(ValueError, match="1-D"):
        ByteTokenizer().decode(np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="integers"):
        ByteTokenizer().decode(np.array([65.0, 66.0]))


def test_encode_rejects_bytes():
    with pytest.raises(TypeError, match="expected str"):
        ByteTokenizer().encode(b"abc")


def test_specs():
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    assert load_tokenizer("byte").spec == "byte"
    with pytest.raises(ValueError, match="unknown tokenizer spec 'wordpiece'"):
        load_tokenizer("wordpiece")
    with pytest.raises(ValueError, match="needs a path"):
        load_tokenizer("bpe:")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer("bpe:/nonexistent/nope.json")
    with pytest.raises(ValueError, match="at least 257"):
        build_tokenizer("bpe-train:100", ["x"], "/tmp")
    with pytest.raises(ValueError, match="must be an integer"):
        build_tokenizer("bpe-train:big", ["x"], "/tmp")
