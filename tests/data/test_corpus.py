"""Corpus discovery and prepare_dataset: stdlib found, bad paths and empty data refused, the
split is by document and deterministic, and reruns hit the cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ringloom.data.corpus import (find_text_files, prepare_data, prepare_dataset, read_documents,
                                  stdlib_dir, stdlib_files)
from ringloom.data.shards import read_shard
from ringloom.data.tokenizer import ByteTokenizer


def test_stdlib_files_found_and_capped():
    root = stdlib_dir()
    files = stdlib_files(2_000_000)
    assert files == sorted(files, key=lambda f: os.path.relpath(f, root))
    assert files == stdlib_files(2_000_000)
    rel = [os.path.relpath(f, root) for f in files]
    assert "abc.py" in rel and "argparse.py" in rel
    assert all(f.endswith(".py") for f in files)
    for r in rel:
        parts = r.split(os.sep)
        assert not {"test", "tests", "site-packages"} & set(parts[:-1]), r
        assert not parts[-1].startswith("test_"), r
    total = sum(os.path.getsize(f) for f in files)
    assert 1_000_000 < total <= 2_000_000
    # A larger cap extends the same prefix.
    assert stdlib_files(3_000_000)[:len(files)] == files


def test_stdlib_cap_must_be_positive():
    with pytest.raises(ValueError, match="max_bytes"):
        stdlib_files(0)


def _tree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "deep").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a" / "one.txt").write_text("first document\n")
    (tmp_path / "a" / "deep" / "two.md").write_text("second ✓\n")
    (tmp_path / "a" / "blob.bin").write_bytes(b"\0\1\2binary")
    (tmp_path / ".hidden" / "x.txt").write_text("hidden")
    (tmp_path / "top.txt").write_text("top level\n")


def test_find_text_files(tmp_path):
    _tree(tmp_path)
    got = find_text_files([tmp_path / "a", tmp_path / "top.txt", tmp_path / "a" / "one.txt"])
    names = [os.path.relpath(f, tmp_path) for f in got]
    assert names == sorted(["a/one.txt", os.path.join("a", "deep", "two.md"), "top.txt"])


def test_find_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        find_text_files([tmp_path / "no_such_dir"])


def test_find_empty_dir_and_no_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no text files"):
        find_text_files([tmp_path / "empty"])
    with pytest.raises(ValueError, match="no data paths"):
        find_text_files([])


def _docs(tmp_path, rng, n):
    files = []
    for i in range(n):
        p = tmp_path / f"doc{i:02d}.txt"
        codes = rng.integers(32, 127, size=int(rng.integers(50, 400)))
        p.write_text("".join(chr(c) for c in codes))
        files.append(str(p))
    return files


def test_prepare_split_by_document(tmp_path, rng):
    files = _docs(tmp_path, rng, 13)
    data = prepare_dataset(files, ByteTokenizer(), tmp_path / "out", val_fraction=0.25)
    train = read_shard(data.train_path).astype(np.int64)
    val = read_shard(data.val_path).astype(np.int64)
    docs = [d.encode() for d in read_documents(files)]
    m = data.meta
    assert m["train"]["tokens"] == len(train) and m["val"]["tokens"] == len(val)
    assert m["train"]["documents"] + m["val"]["documents"] == 13
    assert m["vocab_size"] == 256 and m["tokenizer"] == "byte"
    assert len(train) + len(val) == sum(len(d) for d in docs)
    assert 0.25 * (len(train) + len(val)) <= len(val)
    # Each split is whole documents, in file order.
    in_val = []
    for d in docs:
        arr = np.frombuffer(d, dtype=np.uint8)
        in_val.append(any(np.array_equal(val[i:i + len(arr)], arr)
                          for i in range(len(val) - len(arr) + 1)))
    expect_val = np.concatenate([np.frombuffer(d, np.uint8) for d, v in zip(docs, in_val) if v])
    expect_train = np.concatenate([np.frombuffer(d, np.uint8) for d, v in zip(docs, in_val)
                                   if not v])
    np.testing.assert_array_equal(val, expect_val)
    np.testing.assert_array_equal(train, expect_train)
    assert sum(in_val) == m["val"]["documents"]


def test_prepare_deterministic_and_cached(tmp_path, rng):
    files = _docs(tmp_path, rng, 7)
    a = prepare_dataset(files, ByteTokenizer(), tmp_path / "a")
    b = prepare_dataset(files, ByteTokenizer(), tmp_path / "b")
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a.meta["key"] == b.meta["key"]
    stamp = os.stat(a.train_path).st_mtime_ns
    again = prepare_dataset(files, ByteTokenizer(), tmp_path / "a")
    assert os.stat(again.train_path).st_mtime_ns == stamp  # not rewritten
    # Changing a document's content invalidates the cache.
    with open(files[0], "a") as f:
        f.write("more text")
    changed = prepare_dataset(files, ByteTokenizer(), tmp_path / "a")
    assert changed.meta["key"] != a.meta["key"]
    assert changed.meta["train"]["tokens"] + changed.meta["val"]["tokens"] == \
        a.meta["train"]["tokens"] + a.meta["val"]["tokens"] + len("more text")
    # A damaged shard is rebuilt rather than trusted.
    with open(changed.train_path, "ab") as f:
        f.write(b"\0")
    rebuilt = prepare_dataset(files, ByteTokenizer(), tmp_path / "a")
    assert read_shard(rebuilt.train_path).shape == (rebuilt.meta["train"]["tokens"],)


def test_prepare_single_document(tmp_path, rng):
    (f,) = _docs(tmp_path, rng, 1)
    data = prepare_dataset([f], ByteTokenizer(), tmp_path / "out", val_fraction=0.2)
    text = open(f, "rb").read()
    train, val = read_shard(data.train_path), read_shard(data.val_path)
    assert bytes(np.concatenate([train, val]).astype(np.uint8)) == text
    assert len(val) == round(0.2 * len(text))


def test_prepare_empty_data(tmp_path):
    (tmp_path / "e1.txt").write_text("")
    (tmp_path / "e2.txt").write_text("")
    with pytest.raises(ValueError, match=r"data is empty.*e1\.txt"):
        prepare_dataset([str(tmp_path / "e1.txt"), str(tmp_path / "e2.txt")], ByteTokenizer(),
                        tmp_path / "out")
    with pytest.raises(ValueError, match="no data files"):
        prepare_dataset([], ByteTokenizer(), tmp_path / "out")


def test_prepare_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.txt"):
        prepare_dataset([str(tmp_path / "gone.txt")], ByteTokenizer(), tmp_path / "out")


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1])
def test_prepare_bad_val_fraction(tmp_path, frac):
    with pytest.raises(ValueError, match="val_fraction"):
        prepare_dataset(["x"], ByteTokenizer(), tmp_path, val_fraction=frac)


def test_prepare_bpe_appends_eos(tmp_path, rng):
    pytest.importorskip("tokenizers", reason="BPE needs the optional 'tokenizers' package")
    from ringloom.data.tokenizer import build_tokenizer
    files = _docs(tmp_path, rng, 5)
    tok = build_tokenizer("bpe-train:280", files, str(tmp_path / "tok"))
    data = prepare_dataset(files, tok, tmp_path / "out", val_fraction=0.3)
    train, val = read_shard(data.train_path), read_shard(data.val_path)
    assert int((train == tok.eos_id).sum()) == data.meta["train"]["documents"]
    assert int((val == tok.eos_id).sum()) == data.meta["val"]["documents"]
    assert json.load(open(tmp_path / "out" / "meta.json"))["tokenizer"] == tok.spec


def test_prepare_data_builtin_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("RINGLOOM_CACHE", str(tmp_path / "cache"))
    tok, data = prepare_data(None, "byte", corpus_bytes=300_000)
    assert tok.spec == "byte"
    assert data.dir.startswith(str(tmp_path / "cache"))
    m = data.meta
    assert m["bytes"] <= 300_000 and m["files"] == len([f for f in stdlib_files(300_000)
                                                         if os.path.getsize(f)])
    assert m["train"]["tokens"] + m["val"]["tokens"] == m["bytes"]  # bytes are the tokens


def test_prepare_data_trains_bpe_once(tmp_path, rng, monkeypatch):
    pytest.importorskip("tokenizers", reason="BPE needs the optional 'tokenizers' package")
    monkeypatch.setenv("RINGLOOM_CACHE", str(tmp_path / "cache"))
    files = _docs(tmp_path, rng, 4)
    tok, data = prepare_data([str(tmp_path)], "bpe-train:290", val_fraction=0.25)
    assert tok.vocab_size == 290 and data.meta["tokenizer"] == tok.spec
    stamp = os.stat(tok.path).st_mtime_ns
    tok2, data2 = prepare_data(files, "bpe-train:290", val_fraction=0.25)
    assert tok2.path == tok.path and os.stat(tok2.path).st_mtime_ns == stamp  # reused
    assert data2.meta["key"] == data.meta["key"]
    tok3, _ = prepare_data(files, "bpe-train:300", val_fraction=0.25)
    assert tok3.path != tok.path and tok3.vocab_size == 300
