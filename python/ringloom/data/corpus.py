"""Finding text, and turning it into train/val token shards.

The built-in corpus is the Python standard library's own ``.py`` sources, found through
``sysconfig`` — every machine that runs ringloom has it, so the main job needs no download.
Tests, site-packages and the generated codec tables in ``encodings/`` are left out; files are
taken in sorted path order up to a byte cap, so the corpus is the same on every run of the
same Python.

``prepare_dataset`` tokenizes documents (one file = one document), splits them into train and
val *by document* (a document is wholly in one split, so val measures text the model never
saw) and writes ``train.bin`` / ``val.bin`` (see ``shards``) plus ``meta.json``. The result is
cached under a hash of everything that determines it, so a rerun is instant.
"""
from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..checkpoint.safe_files import member_path
from .shards import read_header, write_shard
from .tokenizer import BPETokenizer, Tokenizer, build_tokenizer

DEFAULT_MAX_BYTES = 8_000_000
META_NAME = "meta.json"
PREPARE_VERSION = 1  # bump when the split or layout changes, to invalidate caches

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
              "encodings"}


def stdlib_dir() -> str:
    path = sysconfig.get_paths().get("stdlib")
    if not path or not os.path.isdir(path):
        raise FileNotFoundError(
            f"the Python standard library directory was not found (sysconfig says {path!r}); "
            f"pass text files with --data instead")
    return path


def stdlib_files(max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """The built-in corpus: stdlib .py files (no tests, no site-packages), sorted by path,
    taken while their total size stays within ``max_bytes``."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    root = stdlib_dir()
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.endswith(".py") and not name.startswith("test_"):
                full = os.path.join(dirpath, name)
                found.append((os.path.relpath(full, root), full))
    found.sort()
    files, total = [], 0
    for _, full in found:
        size = os.path.getsize(full)
        if total + size > max_bytes:
            break
        files.append(full)
        total += size
    if not files:
        raise ValueError(f"no stdlib .py files found under {root} within {max_bytes} bytes")
    return files


def _is_binary(path: str) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def find_text_files(paths: Iterable[str]) -> list[str]:
    """Expand files and directories (recursively; hidden entries and binary files inside
    directories are skipped) into a sorted, de-duplicated list of files.

    A path that does not exist raises FileNotFoundError naming it; finding nothing raises
    ValueError.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no data paths given")
    out: list[str] = []
    for p in paths:
        if os.path.isfile(p):
            out.append(os.path.abspath(p))
        elif os.path.isdir(p):
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    full = os.path.join(dirpath, name)
                    if not name.startswith(".") and os.path.isfile(full) and not _is_binary(full):
                        found.append(os.path.abspath(full))
            if not found:
                raise ValueError(f"data directory {p} contains no text files")
            out.extend(found)
        else:
            raise FileNotFoundError(f"data path not found: {p}")
    return sorted(set(out))


def read_documents(files: Sequence[str]) -> list[str]:
    """Each file's text (UTF-8; undecodable bytes become U+FFFD)."""
    docs = []
    for f in files:
        try:
            with open(f, "rb") as fh:
                docs.append(fh.read().decode("utf-8", errors="replace"))
        except FileNotFoundError:
            raise FileNotFoundError(f"data file not found: {f}") from None
    return docs


@dataclass
class PreparedData:
    """Where the shards are, and what is in them (the contents of meta.json)."""
    dir: str
    meta: dict

    @property
    def train_path(self) -> str:
        return self._shard("train")

    @property
    def val_path(self) -> str:
        return self._shard("val")

    def _shard(self, split: str) -> str:
        # The name comes from meta.json: it must be a file of this directory.
        return member_path(self.dir, self.meta[split]["file"], os.path.join(self.dir, META_NAME), flat=True)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def tokenizer_spec(self) -> str:
        return self.meta["tokenizer"]


def default_cache_dir() -> str:
    """$RINGLOOM_CACHE, else $XDG_CACHE_HOME/ringloom, else ~/.cache/ringloom."""
    if os.environ.get("RINGLOOM_CACHE"):
        return os.environ["RINGLOOM_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ringloom")


def _tokenizer_identity(tokenizer: Tokenizer) -> str:
    # A BPE tokenizer is identified by its content, not its path (a retrained file at the same
    # path must invalidate the cache).
    if isinstance(tokenizer, BPETokenizer):
        return "bpe:" + hashlib.sha256(tokenizer._tok.to_str().encode()).hexdigest()
    return tokenizer.spec


def _dataset_key(files: Sequence[str], docs: Sequence[str], tokenizer: Tokenizer,
                 val_fraction: float) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": PREPARE_VERSION, "tokenizer": _tokenizer_identity(tokenizer),
                         "val_fraction": val_fraction}).encode())
    for f, d in zip(files, docs):
        h.update(os.path.basename(f).encode() + b"\0")
        h.update(hashlib.sha256(d.encode("utf-8", errors="surrogatepass")).digest())
    return h.hexdigest()


def _split_documents(names: Sequence[str], lengths: Sequence[int], val_fraction: float
                     ) -> np.ndarray:
    """Boolean mask of the documents that go to val.

    Documents are visited in the order of a hash of their name (stable when other documents
    are added or removed; no RNG involved) and moved to val until val holds val_fraction of
    the tokens. At least one document always stays in train.
    """
    total = sum(lengths)
    target = val_fraction * total
    order = sorted(range(len(names)),
                   key=lambda i: (hashlib.sha256(names[i].encode()).digest(), i))
    is_val = np.zeros(len(names), dtype=bool)
    val_tokens = 0
    for i in order:
        if val_tokens >= target or is_val.sum() == len(names) - 1:
            break
        is_val[i] = True
        val_tokens += lengths[i]
    return is_val


def prepare_dataset(files: Sequence[str], tokenizer: Tokenizer, out_dir: str | None = None,
                    val_fraction: float = 0.1) -> PreparedData:
    """Tokenize ``files`` into ``out_dir/{train,val}.bin`` + ``meta.json``; reuse them if
    ``meta.json`` already records the same inputs.

    ``out_dir`` defaults to ``default_cache_dir()/datasets/<key>``. The split is by document;
    with a single document (one --data file) the split falls back to its last val_fraction
    of tokens. An end-of-text token, when the tokenizer has one, follows every document.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    spec = tokenizer.spec  # fails early for a BPE tokenizer that was never saved
    files = [os.fspath(f) for f in files]
    if not files:
        raise ValueError("prepare_dataset: no data files given")
    docs = read_documents(files)
    empty = [f for f, d in zip(files, docs) if not d]
    if len(empty) == len(files):
        raise ValueError(f"data is empty: {', '.join(files[:5])}{' ...' if len(files) > 5 else ''}"
                         f" contain no text")
    keep = [i for i, d in enumerate(docs) if d]
    files = [files[i] for i in keep]
    docs = [docs[i] for i in keep]

    key = _dataset_key(files, docs, tokenizer, val_fraction)
    if out_dir is None:
        out_dir = os.path.join(default_cache_dir(), "datasets", key[:16])
    meta_path = os.path.join(out_dir, META_NAME)
    cached = _load_cached(out_dir, meta_path, key)
    if cached is not None:
        return cached

    if isinstance(tokenizer, BPETokenizer):
        encoded = tokenizer.encode_batch(docs)
    else:
        encoded = [tokenizer.encode(d) for d in docs]
    if tokenizer.eos_id is not None:
        eos = np.array([tokenizer.eos_id], dtype=np.int32)
        encoded = [np.concatenate([e, eos]) for e in encoded]

    lengths = [len(e) for e in encoded]
    if len(encoded) == 1:
        (only,) = encoded
        cut = len(only) - max(1, int(round(val_fraction * len(only))))
        train, val = only[:cut], only[cut:]
        n_train_docs = n_val_docs = 1
    else:
        # Names relative to the files' common folder: the same split on every machine.
        common = os.path.commonpath([os.path.abspath(f) for f in files])
        names = [os.path.relpath(os.path.abspath(f), common) for f in files]
        is_val = _split_documents(names, lengths, val_fraction)
        train = np.concatenate([e for e, v in zip(encoded, is_val) if not v])
        val = np.concatenate([e for e, v in zip(encoded, is_val) if v])
        n_val_docs = int(is_val.sum())
        n_train_docs = len(encoded) - n_val_docs

    os.makedirs(out_dir, exist_ok=True)
    write_shard(os.path.join(out_dir, "train.bin"), train, tokenizer.vocab_size)
    write_shard(os.path.join(out_dir, "val.bin"), val, tokenizer.vocab_size)
    meta = {
        "format": PREPARE_VERSION,
        "key": key,
        "tokenizer": spec,
        "vocab_size": tokenizer.vocab_size,
        "val_fraction": val_fraction,
        "files": len(files),
        "bytes": int(sum(len(d.encode("utf-8", errors="surrogatepass")) for d in docs)),
        "train": {"file": "train.bin", "tokens": int(len(train)), "documents": n_train_docs},
        "val": {"file": "val.bin", "tokens": int(len(val)), "documents": n_val_docs},
    }
    tmp = f"{meta_path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, meta_path)  # written last: its presence means the shards are complete
    return PreparedData(out_dir, meta)


def _load_cached(out_dir: str, meta_path: str, key: str) -> PreparedData | None:
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if meta.get("key") != key:
        return None
    data = PreparedData(out_dir, meta)
    try:  # the shards must still be there and intact
        for split, path in (("train", data.train_path), ("val", data.val_path)):
            if read_header(path).num_tokens != meta[split]["tokens"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data


def prepare_data(data: Sequence[str] | None, tokenizer: str = "byte", out_dir: str | None = None,
                 val_fraction: float = 0.1, corpus_bytes: int = DEFAULT_MAX_BYTES
                 ) -> tuple[Tokenizer, PreparedData]:
    """Everything between the command line and the loader, in one call.

    data: files/directories (None or empty = the built-in stdlib corpus, ``corpus_bytes``
    at most); tokenizer: a spec, "byte" | "bpe:PATH" | "bpe-train:VOCAB". A BPE tokenizer
    trained here is saved as ``<dir>/tokenizer.json`` (dir = out_dir, or a cache folder keyed
    by the data and the vocab size) and reused by later calls with the same inputs.
    Returns the tokenizer and the prepared shards (see ``prepare_dataset``).
    """
    files = find_text_files(data) if data else stdlib_files(corpus_bytes)
    if tokenizer.startswith("bpe-train:"):
        h = hashlib.sha256(tokenizer.encode())
        for doc in read_documents(files):
            h.update(hashlib.sha256(doc.encode("utf-8", errors="surrogatepass")).digest())
        key = h.hexdigest()
        save_dir = out_dir or os.path.join(default_cache_dir(), "tokenizers", key[:16])
        tok = _cached_bpe(save_dir, key)
        if tok is None:
            tok = build_tokenizer(tokenizer, files, save_dir)
            with open(os.path.join(save_dir, "tokenizer.key"), "w") as f:
                f.write(key)
    else:
        tok = build_tokenizer(tokenizer)
    return tok, prepare_dataset(files, tok, out_dir, val_fraction)


def _cached_bpe(save_dir: str, key: str) -> BPETokenizer | None:
    try:
        with open(os.path.join(save_dir, "tokenizer.key")) as f:
            if f.read().strip() != key:
                return None
        return BPETokenizer.load(os.path.join(save_dir, "tokenizer.json"))
    except (OSError, ValueError):
        return None
