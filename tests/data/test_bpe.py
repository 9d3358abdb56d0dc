"""BPE tokenizer (through the optional `tokenizers` package): train, save, load, decode errors."""
from __future__ import annotations

import numpy as np
import pytest

from ringloom.data.tokenizer import build_tokenizer, load_tokenizer

tokenizers = pytest.importorskip("tokenizers", reason="BPE needs the optional 'tokenizers' package")


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    rng = np.random.default_rng(5)
    words = ["def", "return", "self", "import", "class", "lambda", "print", "value", "for"]
    lines = [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) for _ in range(400)]
    (d / "a.txt").write_text("\n".join(lines[:200]) + "\nnaïve ✓ 日本\n")
    (d / "b.py").write_text("\n".join(lines[200:]))
    return build_tokenizer("bpe-train:300", [str(d / "a.txt"), str(d / "b.py")], str(d))


def test_bpe_train_save_load_round_trip(bpe, rng, random_text):
    assert bpe.vocab_size == 300
    assert bpe.spec.startswith("bpe:") and bpe.spec.endswith("tokenizer.json")
    text = "def value(self):\n    return self.value  # naïve ✓ 🐍\n"
    ids = bpe.encode(text)
    assert ids.dtype == np.int32
    assert len(ids) < len(text.encode())  # merges were learned
    assert bpe.decode(ids, strict=True) == text
    again = load_tokenizer(bpe.spec)
    assert again.encode(text).tolist() == ids.tolist()
    for n in (1, 50, 301):
        t = random_text(rng, n)
        assert again.decode(again.encode(t), strict=True) == t


def test_bpe_eos_token(bpe):
    assert bpe.eos_id is not None and 0 <= bpe.eos_id < bpe.vocab_size
    assert bpe.decode([bpe.eos_id]) == "<|endoftext|>"


def test_bpe_decode_out_of_vocab(bpe):
    ids = bpe.encode("def x").tolist()
    with pytest.raises(ValueError, match=f"token id {bpe.vocab_size} at position {len(ids)}"):
        bpe.decode(ids + [bpe.vocab_size])
    with pytest.raises(ValueError, match="token id -3"):
        bpe.decode([-3])


def test_bpe_decode_undecodable(bpe):
    # A sequence that starts inside a multi-byte character is not valid UTF-8.
    ids = bpe.encode("✓")
    lone = [i for i in range(bpe.vocab_size) if bpe._bytes_of_id[i] == "✓".encode()[1:2]]
    assert lone, "every single byte is in a byte-level BPE vocabulary"
    bad = [bpe.encode("a")[0], lone[0]] + ids.tolist()
    assert "\ufffd" in bpe.decode(bad)
    with pytest.raises(ValueError, match="not form valid UTF-8.*token position 1"):
        bpe.decode(bad, strict=True)


def test_bpe_bad_files(tmp_path):
    from ringloom.data.tokenizer import BPETokenizer
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        BPETokenizer.train([str(tmp_path / "missing.txt")], 300)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        load_tokenizer(f"bpe:{bad}")


def test_bpe_trains_on_invalid_utf8(tmp_path):
    from ringloom.data.tokenizer import BPETokenizer
    p = tmp_path / "latin1.txt"
    p.write_bytes("café déjà vu\n".encode("latin-1") * 20 + b"plain ascii text\n" * 20)
    tok = BPETokenizer.train([str(p)], 270)
    text = "caf\ufffd d\ufffdj\ufffd vu\n"  # what the file reads as
    assert tok.decode(tok.encode(text), strict=True) == text
