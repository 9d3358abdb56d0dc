"""Checkpoint manifests are data: a name in one must be a regular file inside the checkpoint
directory, and every entry must have the fields the reader relies on. Forged manifests
(true sizes and hashes of files elsewhere, devices, FIFOs, links) are refused with a
CheckpointError naming the manifest, never read, hashed or waited on."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringloom.checkpoint.manager import MANIFEST, CheckpointError, open_checkpoint, resolve_resume, save_checkpoint
from ringloom.checkpoint.safe_files import member_path, open_regular


@pytest.fixture
def ckpt(tmp_path):
    """A small valid checkpoint: (its directory, a file outside it)."""
    root = tmp_path / "run" / "checkpoints"
    path = save_checkpoint(str(root), 3, {"w": np.arange(6, dtype=np.float32)},
                           {"m.w": np.zeros(6, np.float32), "step": 3}, {"step": 3}, {"model": {}})
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside the checkpoint\n")
    return path, str(secret)


def _entry(path: str) -> dict:
    data = open(path, "rb").read()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _edit_manifest(ckpt_dir: str, edit) -> None:
    mpath = os.path.join(ckpt_dir, MANIFEST)
    manifest = json.load(open(mpath))
    edit(manifest["files"])
    with open(mpath, "w") as f:
        json.dump(manifest, f)


def test_valid_checkpoint_opens(ckpt):
    path, _ = ckpt
    ck = open_checkpoint(path)
    assert np.array_equal(ck.model_state()["w"], np.arange(6, dtype=np.float32))


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_entry_outside_the_directory_is_refused_unread(ckpt, how, monkeypatch):
    path, secret = ckpt
    rel = os.path.relpath(secret, path) if how == "relative" else secret
    _edit_manifest(path, lambda files: files.__setitem__(rel, _entry(secret)))  # true size and hash
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (opened.append(os.fspath(p)), real_open(p, *a, **k))[1])
    with pytest.raises(CheckpointError, match="manifest.json: file name .* (leaves its directory|not a relative)"):
        open_checkpoint(path)
    assert secret not in opened and not any(p.endswith("secret.txt") for p in opened)


@pytest.mark.timeout(30)
def test_entry_naming_dev_zero_is_refused_not_read_forever(ckpt):
    path, _ = ckpt
    # /dev/zero's size is 0: the size check passes, and hashing it would never end.
    _edit_manifest(path, lambda files: files.__setitem__("/dev/zero", {"bytes": 0, "sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="/dev/zero"):
        open_checkpoint(path)


@pytest.mark.timeout(30)
def test_link_to_dev_zero_inside_the_directory_is_refused(ckpt):
    path, _ = ckpt
    os.symlink("/dev/zero", os.path.join(path, "zeros.bin"))
    _edit_manifest(path, lambda files: files.__setitem__("zeros.bin", {"bytes": 1 << 40, "sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="zeros.bin: cannot open \\(a symbolic link"):
        open_checkpoint(path)


def test_link_to_a_file_outside_is_refused(ckpt):
    path, secret = ckpt
    os.symlink(secret, os.path.join(path, "linked.txt"))
    _edit_manifest(path, lambda files: files.__setitem__("linked.txt", _entry(secret)))
    with pytest.raises(CheckpointError, match="linked.txt: cannot open \\(a symbolic link"):
        open_checkpoint(path)


def test_weights_replaced_by_a_link_are_refused(ckpt):
    # Same size and hash, but the file itself became a link: refused on the open descriptor.
    path, _ = ckpt
    name = "model.rank00000.safetensors"
    target = os.path.join(os.path.dirname(path), "elsewhere.safetensors")
    os.replace(os.path.join(path, name), target)
    os.symlink(target, os.path.join(path, name))
    with pytest.raises(CheckpointError, match="symbolic link"):
        open_checkpoint(path)


@pytest.mark.timeout(30)
def test_fifo_is_refused_without_blocking(ckpt):
    path, _ = ckpt
    os.mkfifo(os.path.join(path, "pipe"))
    _edit_manifest(path, lambda files: files.__setitem__("pipe", {"bytes": 0, "sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="pipe: not a regular file"):
        open_checkpoint(path)


@pytest.mark.parametrize("entry,message", [
    ({"sha256": "0" * 64}, "has no valid 'bytes' \\(got None\\)"),
    ({"bytes": "12", "sha256": "0" * 64}, "has no valid 'bytes'"),
    ({"bytes": -1, "sha256": "0" * 64}, "has no valid 'bytes'"),
    ({"bytes": True, "sha256": "0" * 64}, "has no valid 'bytes'"),
    ({"bytes": 3}, "has no valid 'sha256'"),
    ([1, 2], "is not an object"),
])
def test_malformed_entries_are_refused(ckpt, entry, message):
    path, _ = ckpt
    _edit_manifest(path, lambda files: files.__setitem__("state.rank00000.json", entry))
    with pytest.raises(CheckpointError, match=f"manifest.json: entry 'state.rank00000.json' {message}"):
        open_checkpoint(path)


def test_symlinked_step_directory_is_not_resumed(ckpt, tmp_path):
    path, _ = ckpt
    root = os.path.dirname(path)
    elsewhere = tmp_path / "other" / "step_00000099"
    os.makedirs(elsewhere.parent)
    os.rename(path, elsewhere)
    os.symlink(elsewhere, os.path.join(root, "step_00000099"))
    assert resolve_resume("latest", root) is None


def test_member_path_rules(tmp_path):
    d = str(tmp_path)
    assert member_path(d, "a.bin", "m") == os.path.join(d, "a.bin")
    assert member_path(d, "sub/a.bin", "m") == os.path.join(d, "sub", "a.bin")
    for bad in ("", "..", "../a", "a/../../b", "/etc/passwd", "a\0b", "./a", "a//b", 7, None):
        with pytest.raises(ValueError):
            member_path(d, bad, "m")
    with pytest.raises(ValueError, match="plain file name"):
        member_path(d, "sub/a.bin", "m", flat=True)
    os.symlink("/", tmp_path / "up")
    with pytest.raises(ValueError, match="symbolic link"):
        member_path(d, "up/etc/passwd", "m")


def test_open_regular_refuses_devices_and_directories(tmp_path):
    for p in ("/dev/null", str(tmp_path)):
        with pytest.raises(ValueError):
            open_regular(p)
    with pytest.raises(FileNotFoundError):
        open_regular(str(tmp_path / "missing"))


_names = st.one_of(st.text(min_size=0, max_size=12),
                   st.sampled_from(["..", "../x", "/dev/zero", "/etc/hostname", "a/b", "manifest.json",
                                    "model.rank00000.safetensors", "state.rank00000.json", ".", "x/../../y"]))
_infos = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
                   st.fixed_dictionaries({}, optional={"bytes": st.one_of(st.integers(-5, 1 << 70), st.text(max_size=3),
                                                                          st.none(), st.booleans()),
                                                       "sha256": st.one_of(st.text(max_size=64),
                                                                           st.just("0" * 64))}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(_names, _infos, max_size=4))
@pytest.mark.timeout(120)
def test_random_manifests_fail_cleanly(ckpt, files):
    """Whatever a manifest lists, opening it either succeeds or raises CheckpointError, and
    no file outside the checkpoint directory is opened."""
    path, _ = ckpt
    mpath = os.path.join(path, MANIFEST)
    good = json.load(open(mpath))
    try:
        with open(mpath, "w") as f:
            json.dump({**good, "files": files}, f)
        try:
            ck = open_checkpoint(path)
        except CheckpointError:
            return
        for name in ck.manifest["files"]:
            real = os.path.realpath(os.path.join(path, name))
            assert os.path.dirname(real) == os.path.realpath(path), name
    finally:
        with open(mpath, "w") as f:
            json.dump(good, f)
