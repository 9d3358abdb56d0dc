"""Tokenizers: text <-> token ids.

Two kinds, both behind the same small interface (``vocab_size``, ``spec``, ``eos_id``,
``encode(text) -> int32 array``, ``decode(ids, strict=False) -> str``):

- ``ByteTokenizer``: the UTF-8 bytes of the text are the tokens (vocab 256). Needs nothing,
  never meets an unknown character, and makes "nats per byte" the natural loss unit.
- ``BPETokenizer``: byte-level BPE through the ``tokenizers`` package (an optional
  dependency: ``pip install ringloom[bpe]``). Trained on the corpus files or loaded from a
  ``tokenizer.json``.

A tokenizer is named by a *spec* string, which is what configs, checkpoints and the CLI store:
``"byte"`` or ``"bpe:PATH/tokenizer.json"``. ``"bpe-train:VOCAB"`` (CLI only) asks for a BPE
tokenizer trained on the data; ``build_tokenizer`` turns it into a ``"bpe:..."`` tokenizer.

Decoding: token sequences cut at arbitrary places need not be valid UTF-8 (a multi-byte
character split across the end of a sample). By default such bytes decode to U+FFFD;
``strict=True`` instead raises ValueError naming the token position where decoding failed.
Ids outside ``[0, vocab_size)`` always raise ValueError.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence, Union

import numpy as np

IdsLike = Union[Sequence[int], np.ndarray]

BPE_EOS = "<|endoftext|>"


def _as_ids(ids: IdsLike, vocab_size: int, who: str) -> np.ndarray:
    """Ids as a 1-D int64 array, every one checked to lie in [0, vocab_size)."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{who}.decode: expected a 1-D sequence of token ids, got shape "
                         f"{arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{who}.decode: token ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= vocab_size))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{who}.decode: token id {int(arr[i])} at position {i} is outside the vocabulary "
            f"[0, {vocab_size})")
    return arr


def _decode_utf8(data: bytes, token_of_byte: np.ndarray | None, strict: bool, who: str) -> str:
    """UTF-8 decode; in strict mode a failure names the token (and byte) where it happened."""
    if not strict:
        return data.decode("utf-8", errors="replace")
    try:
        return data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        tok = int(token_of_byte[e.start]) if token_of_byte is not None else e.start
        raise ValueError(
            f"{who}.decode: token ids do not form valid UTF-8: {e.reason} at token position "
            f"{tok} (byte {e.start}: {data[e.start:e.end]!r})") from None


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocab_size 256, no special tokens."""

    vocab_size = 256
    spec = "byte"
    eos_id: int | None = None

    def encode(self, text: str) -> np.ndarray:
        """text -> int32 array of byte values, shape [len(text.encode('utf-8'))]."""
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode: expected str, got {type(text).__name__}")
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: IdsLike, strict: bool = False) -> str:
        arr = _as_ids(ids, self.vocab_size, "ByteTokenizer")
        data = arr.astype(np.uint8).tobytes()
        # One token is one byte, so the failing byte offset is the token position.
        return _decode_utf8(data, None, strict, "ByteTokenizer")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def _byte_to_char() -> dict[int, str]:
    """The byte-level BPE alphabet: each of the 256 bytes as one printable character.

    Byte-level BPE (GPT-2, Radford et al. 2019) works on bytes but its vocabulary is stored as
    strings, so each byte is given a visible stand-in: printable Latin-1 bytes stand for
    themselves, the others (controls, space, ...) are shifted to code points 256, 257, ...
    in byte order. We need the inverse to recover exact bytes for strict decoding.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + \
        list(range(0xAE, 0xFF + 1))
    kept = set(keep)
    table: dict[int, str] = {b: chr(b) for b in keep}
    shift = 0
    for b in range(256):
        if b not in kept:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def _import_tokenizers():
    try:
        import tokenizers  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "BPE tokenization needs the 'tokenizers' package: pip install 'ringloom[bpe]' "
            "(or pip install tokenizers), or use the built-in byte tokenizer (--tokenizer byte)"
        ) from e
    return tokenizers


class BPETokenizer:
    """Byte-level BPE via the HuggingFace ``tokenizers`` package.

    Build with ``BPETokenizer.train(files, vocab_size)`` or ``BPETokenizer.load(path)``.
    ``path`` is remembered so that ``spec`` ("bpe:PATH") can reload the same tokenizer.
    """

    def __init__(self, tok, path: str | None = None):
        self._tok = tok
        self.path = os.path.abspath(path) if path else None
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
        self.eos_id = tok.token_to_id(BPE_EOS)
        self._bytes_of_id = self._byte_table()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def train(cls, files: Iterable[str], vocab_size: int) -> "BPETokenizer":
        """Train byte-level BPE on text files; the vocab holds the 256 bytes, the merges and
        one end-of-text token (appended after each document when building shards)."""
        tk = _import_tokenizers()
        files = [os.fspath(f) for f in files]
        if not files:
            raise ValueError("BPETokenizer.train: no training files given")
        if vocab_size < 257:
            raise ValueError(
                f"BPETokenizer.train: vocab_size {vocab_size} is too small: byte-level BPE needs "
                f"at least 256 byte tokens + 1 end-of-text token")
        for f in files:
            if not os.path.isfile(f):
                raise FileNotFoundError(f"BPETokenizer.train: training file not found: {f}")
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[BPE_EOS],
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        # Read the files ourselves (as prepare_dataset does: invalid UTF-8 becomes U+FFFD);
        # the library's own reader rejects a file with one bad byte.
        def texts():
            for f in files:
                with open(f, "rb") as fh:
                    yield fh.read().decode("utf-8", errors="replace")
        tok.train_from_iterator(texts(), trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str) -> "BPETokenizer":
        tk = _import_tokenizers()
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"BPE tokenizer file not found: {path}")
        try:
            tok = tk.Tokenizer.from_file(path)
        except Exception as e:  # tokenizers raises its own Exception type for bad JSON
            raise ValueError(f"{path}: not a valid tokenizer.json: {e}") from None
        return cls(tok, path)

    def save(self, path: str) -> None:
        """Write tokenizer.json to ``path``; ``spec`` then refers to that file."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        self._tok.save(tmp)
        os.replace(tmp, path)
        self.path = os.path.abspath(path)

    @property
    def spec(self) -> str:
        if self.path is None:
            raise ValueError("BPETokenizer.spec: this tokenizer was never saved; call save(path)")
        return f"bpe:{self.path}"

    # ---- encode / decode ----------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode: expected str, got {type(text).__name__}")
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def decode(self, ids: IdsLike, strict: bool = False) -> str:
        arr = _as_ids(ids, self.vocab_size, "BPETokenizer")
        if self._bytes_of_id is None:
            # Not a byte-level tokenizer: trust the library's decoder; strict mode can only
            # see the replacement characters it produced.
            text = self._tok.decode(arr.tolist(), skip_special_tokens=False)
            if strict and "\ufffd" in text:
                raise ValueError("BPETokenizer.decode: token ids do not decode to valid text "
                                 f"(replacement character at offset {text.index(chr(0xFFFD))})")
            return text
        # Byte-level: rebuild the exact bytes, so invalid UTF-8 is detected precisely.
        pieces = [self._bytes_of_id[i] for i in arr.tolist()]
        data = b"".join(pieces)
        token_of_byte = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])
        return _decode_utf8(data, token_of_byte, strict, "BPETokenizer")

    def _byte_table(self) -> list[bytes] | None:
        """id -> the bytes it stands for, when the tokenizer is byte-level BPE; else None."""
        cfg = json.loads(self._tok.to_str())
        decoder = cfg.get("decoder") or {}
        if decoder.get("type") != "ByteLevel":
            return None
        char_to_byte = {c: b for b, c in _byte_to_char().items()}
        special = {t["id"] for t in cfg.get("added_tokens", []) if t.get("special")}
        table: list[bytes] = [b""] * self.vocab_size
        for token, i in self._tok.get_vocab(with_added_tokens=True).items():
            if i in special or any(c not in char_to_byte for c in token):
                table[i] = token.encode("utf-8")  # special/added tokens are literal text
            else:
                table[i] = bytes(char_to_byte[c] for c in token)
        return table

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, path={self.path!r})"


Tokenizer = Union[ByteTokenizer, BPETokenizer]


def load_tokenizer(spec: str) -> Tokenizer:
    """A tokenizer from its spec: "byte" or "bpe:PATH" (a tokenizer.json)."""
    if spec == "byte":
        return ByteTokenizer()
    if spec.startswith("bpe:"):
        path = spec[len("bpe:"):]
        if not path:
            raise ValueError("tokenizer spec 'bpe:' needs a path: bpe:PATH/tokenizer.json")
        return BPETokenizer.load(path)
    if spec.startswith("bpe-train:"):
        raise ValueError(f"tokenizer spec {spec!r} needs training data: use build_tokenizer()")
    raise ValueError(f"unknown tokenizer spec {spec!r}: expected 'byte', 'bpe:PATH' or "
                     f"'bpe-train:VOCAB'")


def parse_bpe_train_spec(spec: str) -> int:
    """The vocab size in "bpe-train:VOCAB" (ValueError when it is not a positive integer)."""
    value = spec[len("bpe-train:"):]
    try:
        vocab = int(value)
    except ValueError:
        raise ValueError(f"tokenizer spec {spec!r}: VOCAB must be an integer, "
                         f"got {value!r}") from None
    if vocab < 257:
        raise ValueError(f"tokenizer spec {spec!r}: VOCAB must be at least 257 (256 bytes + "
                         f"end-of-text), got {vocab}")
    return vocab


def build_tokenizer(spec: str, files: Sequence[str] = (), save_dir: str | None = None) -> Tokenizer:
    """Like load_tokenizer, and also "bpe-train:VOCAB": train on ``files`` and save the result
    as ``save_dir/tokenizer.json`` (so its spec can be stored and reloaded)."""
    if not spec.startswith("bpe-train:"):
        return load_tokenizer(spec)
    vocab = parse_bpe_train_spec(spec)
    if save_dir is None:
        raise ValueError(f"tokenizer spec {spec!r}: a directory to save the trained tokenizer in "
                         f"is needed")
    tok = BPETokenizer.train(files, vocab)
    tok.save(os.path.join(save_dir, "tokenizer.json"))
    return tok
