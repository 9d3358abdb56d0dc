"""Training checkpoints: a directory per step, complete only once its manifest exists.

Layout under ``ROOT`` (the trainer uses ``--out/checkpoints``)::

    ROOT/step_00000100/
        model.rank00000.safetensors   the parameters this rank holds, fp32, by global name
        optim.rank00000.safetensors   AdamW moments m.<name>, v.<name> (+ master.<name> for bf16)
        state.rank00000.json          step, optimizer step count, data position, RNG states, ...
        config.json                   TrainConfig + ModelConfig + layout (written by rank 0)
        manifest.json                 written LAST: every file's size and SHA-256
    ROOT/latest                       text: the name of the newest complete directory

Why this order. Every file is written atomically (temporary file, fsync, rename:
checkpoint/atomic.py), then rank 0 hashes them all and writes manifest.json atomically,
then replaces ``latest`` atomically, then deletes the oldest complete directories beyond
``keep``. A crash at any point leaves the previous checkpoint intact and the new directory
either complete (manifest present and consistent) or ignored (no manifest).

Multi-process. Each rank writes its own ``*.rankNNNNN.*`` files (:func:`write_rank_files`);
after a barrier rank 0 calls :func:`finalize`. On load the model and optimizer files of all
ranks are merged by global parameter name (:meth:`Checkpoint.model_state`), so a run can
resume with another pipeline split; names make the shards layout-independent.

Nothing is loaded silently: a missing manifest, a missing or resized file, a checksum
mismatch, another model configuration, or missing/mis-shaped tensors raise
:class:`CheckpointError` saying which file and what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .atomic import atomic_write_text
from .safe_files import file_size, member_path, open_regular, read_bounded
from .safetensors import load_safetensors, save_safetensors

FORMAT = "ringloom-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_JSON = 64 << 20   # manifest, config and state files are far smaller


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (incomplete, corrupted or mismatched)."""


def step_dir_name(step: int) -> str:
    return f"step_{int(step):08d}"


def rank_file(kind: str, rank: int, ext: str) -> str:
    """``model``/``optim``/``state`` file name of ``rank``: e.g. model.rank00003.safetensors."""
    return f"{kind}.rank{int(rank):05d}.{ext}"


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def _verify_file(path: str, expected_bytes: int, expected_sha: str | None) -> None:
    """``path`` must be a regular file (no link, device or FIFO) of ``expected_bytes``; with
    ``expected_sha`` its SHA-256 must match. Reads at most ``expected_bytes``."""
    with open_regular(path, error=CheckpointError) as f:
        size = file_size(f)
        if size != expected_bytes:
            raise CheckpointError(f"{path}: truncated or resized: {size} bytes, the manifest says {expected_bytes}")
        if expected_sha is None:
            return
        h, left = hashlib.sha256(), expected_bytes
        while left > 0:
            b = f.read(min(left, 1 << 20))
            if not b:
                break
            h.update(b)
            left -= len(b)
    if left or h.hexdigest() != expected_sha:
        raise CheckpointError(f"{path}: corrupted: SHA-256 checksum mismatch with the manifest")


# ---------------------------------------------------------------------------------- writing
def write_rank_files(ckpt_dir: str, rank: int, model_state: Mapping[str, np.ndarray] | None,
                     optim_state: Mapping[str, Any] | None, state: Mapping[str, Any]) -> list[str]:
    """Write one rank's files into ``ckpt_dir`` (created). ``optim_state`` is
    AdamW.state_dict() (arrays + "step"); ``state`` is JSON-able. A rank whose weights are
    replicas of another's (data parallel) may pass model_state/optim_state None.
    Returns the file names written."""
    os.makedirs(ckpt_dir, exist_ok=True)
    written = []
    if model_state is not None:
        name = rank_file("model", rank, "safetensors")
        save_safetensors(os.path.join(ckpt_dir, name), dict(model_state),
                         metadata={"format": FORMAT, "kind": "model", "rank": str(rank)})
        written.append(name)
    if optim_state is not None:
        arrays = {k: v for k, v in optim_state.items() if isinstance(v, np.ndarray)}
        scalars = {k: v for k, v in optim_state.items() if not isinstance(v, np.ndarray)}
        name = rank_file("optim", rank, "safetensors")
        save_safetensors(os.path.join(ckpt_dir, name), arrays,
                         metadata={"format": FORMAT, "kind": "optim", "rank": str(rank),
                                   "scalars": json.dumps(scalars)})
        written.append(name)
    name = rank_file("state", rank, "json")
    atomic_write_text(os.path.join(ckpt_dir, name), json.dumps(dict(state)))
    written.append(name)
    return written


def finalize(root: str, step: int, config: Mapping[str, Any], world_size: int = 1, keep: int = 3) -> str:
    """Rank 0, after every rank's write_rank_files returned: write config.json, the manifest
    (checksums of every file in the directory), the ``latest`` pointer, then prune to the
    newest ``keep`` complete checkpoints (keep <= 0: keep all). Returns the directory."""
    ckpt_dir = os.path.join(root, step_dir_name(step))
    atomic_write_text(os.path.join(ckpt_dir, CONFIG), json.dumps(dict(config), indent=1, sort_keys=True))
    names = sorted(n for n in os.listdir(ckpt_dir) if n != MANIFEST and not n.startswith("."))
    for r in range(world_size):
        if rank_file("state", r, "json") not in names:
            raise CheckpointError(f"{ckpt_dir}: rank {r} of {world_size} wrote no state file; "
                                  "not marking the checkpoint complete")
    files = {}
    for n in names:
        p = os.path.join(ckpt_dir, n)
        files[n] = {"bytes": os.path.getsize(p), "sha256": sha256_file(p)}
    manifest = {"format": FORMAT, "version": VERSION, "step": int(step), "world_size": int(world_size),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
    atomic_write_text(os.path.join(ckpt_dir, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))
    atomic_write_text(os.path.join(root, LATEST), step_dir_name(step) + "\n")
    if keep > 0:
        prune(root, keep)
    return ckpt_dir


def save_checkpoint(root: str, step: int, model_state, optim_state, state, config, keep: int = 3) -> str:
    """Single process: write_rank_files(rank 0) + finalize."""
    write_rank_files(os.path.join(root, step_dir_name(step)), 0, model_state, optim_state, state)
    return finalize(root, step, config, world_size=1, keep=keep)


def prune(root: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete checkpoints, and incomplete directories
    older than the newest complete one (left by a crash mid-save). Returns what was removed."""
    complete = [(s, d) for s, d in list_step_dirs(root) if os.path.exists(os.path.join(d, MANIFEST))]
    removed = []
    if not complete:
        return removed
    newest = complete[-1][0]
    doomed = [d for _, d in complete[:-keep]] if keep > 0 else []
    doomed += [d for s, d in list_step_dirs(root)
               if s < newest and not os.path.exists(os.path.join(d, MANIFEST))]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


# ---------------------------------------------------------------------------------- finding
def list_step_dirs(root: str) -> list[tuple[int, str]]:
    """[(step, path)] of every step_* directory under root, oldest first (complete or not)."""
    if not os.path.isdir(root):
        return []
    out = []
    for n in os.listdir(root):
        m = _STEP_DIR.match(n)
        p = os.path.join(root, n)
        if m and os.path.isdir(p) and not os.path.islink(p):   # a link could lead out of the run
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_complete(root: str) -> str | None:
    """The complete checkpoint (manifest present) with the highest step, or None. Directories
    without a manifest are skipped: a save was interrupted there. The ``latest`` pointer is
    for other tools; scanning also finds a checkpoint whose pointer update a crash cut off."""
    for _, d in reversed(list_step_dirs(root)):
        if os.path.exists(os.path.join(d, MANIFEST)):
            return d
    return None


# ---------------------------------------------------------------------------------- reading
@dataclass
class Checkpoint:
    """A verified checkpoint directory. Construct with :func:`open_checkpoint`."""

    path: str
    manifest: dict
    config: dict

    @property
    def step(self) -> int:
        return int(self.manifest["step"])

    @property
    def world_size(self) -> int:
        return int(self.manifest["world_size"])

    def _files(self, kind: str, ext: str) -> list[str]:
        pat = re.compile(rf"^{kind}\.rank(\d{{5}})\.{ext}$")
        return sorted(n for n in self.manifest["files"] if pat.match(n))

    def _merged(self, kind: str) -> tuple[dict[str, np.ndarray], list[dict]]:
        merged: dict[str, np.ndarray] = {}
        metas = []
        for n in self._files(kind, "safetensors"):
            arrays, meta = load_safetensors(os.path.join(self.path, n), error=CheckpointError)
            metas.append(meta)
            for k, v in arrays.items():
                # Data-parallel replicas may each have written the same tensor; they must agree.
                if k in merged and not np.array_equal(merged[k], v):
                    raise CheckpointError(f"{self.path}: tensor {k!r} differs between rank files")
                merged[k] = v
        return merged, metas

    def model_state(self) -> dict[str, np.ndarray]:
        """All ranks' parameters merged: {global name: fp32 array}."""
        state, _ = self._merged("model")
        if not state:
            raise CheckpointError(f"{self.path}: no model.rank*.safetensors file")
        return state

    def optim_state(self) -> dict[str, Any]:
        """All ranks' optimizer arrays merged, plus the scalars ("step") of rank files."""
        state, metas = self._merged("optim")
        if not metas:
            raise CheckpointError(f"{self.path}: no optim.rank*.safetensors file")
        scalars = [json.loads(m.get("scalars", "{}")) for m in metas]
        if any(s != scalars[0] for s in scalars):
            raise CheckpointError(f"{self.path}: optimizer scalars differ between ranks: {scalars}")
        state.update(scalars[0])
        return state

    def rank_state(self, rank: int = 0) -> dict:
        """state.rankNNNNN.json of ``rank`` (rank 0's if that rank did not exist then: the
        step, data position and RNG are the same on every rank)."""
        name = rank_file("state", rank, "json")
        if name not in self.manifest["files"]:
            name = rank_file("state", 0, "json")
        return _read_json(os.path.join(self.path, name), "trainer state")


def _read_json(path: str, what: str) -> dict:
    try:
        data = json.loads(read_bounded(path, _MAX_JSON, error=CheckpointError))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the {what} ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: the {what} is not a JSON object")
    return data


def _check_manifest(mpath: str, manifest: dict) -> None:
    """Every field open_checkpoint relies on, with its type: a forged or damaged manifest is
    refused before any of its names is opened."""
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{mpath}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{mpath}: checkpoint format version {manifest.get('version')}, this ringloom "
                              f"reads version {VERSION}")
    for key in ("step", "world_size"):
        v = manifest.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "step" else 1):
            raise CheckpointError(f"{mpath}: manifest field {key!r} is {v!r}, not a valid integer")
    for name, info in manifest["files"].items():
        member_path(os.path.dirname(mpath), name, mpath, CheckpointError, flat=True)
        if name == MANIFEST:
            raise CheckpointError(f"{mpath}: the manifest lists itself")
        if not isinstance(info, dict):
            raise CheckpointError(f"{mpath}: entry {name!r} is not an object")
        size, sha = info.get("bytes"), info.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CheckpointError(f"{mpath}: entry {name!r} has no valid 'bytes' (got {size!r})")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise CheckpointError(f"{mpath}: entry {name!r} has no valid 'sha256' (got {sha!r})")


def open_checkpoint(path: str, verify: bool = True) -> Checkpoint:
    """Open and (by default) verify a checkpoint directory: manifest present and of this
    format, every listed file present with its size and SHA-256. CheckpointError otherwise."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint directory")
    mpath = os.path.join(path, MANIFEST)
    if not os.path.exists(mpath):
        raise CheckpointError(f"{path}: incomplete checkpoint (no {MANIFEST}; the save was interrupted)")
    manifest = _read_json(mpath, "manifest")
    _check_manifest(mpath, manifest)
    for name, info in sorted(manifest["files"].items()):
        p = os.path.join(path, name)
        try:
            _verify_file(p, info["bytes"], info["sha256"] if verify else None)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: file {name} listed in the manifest is missing") from None
    config = _read_json(os.path.join(path, CONFIG), "config") if CONFIG in manifest["files"] else {}
    return Checkpoint(path=path, manifest=manifest, config=config)


def resolve_resume(resume: str | None, root: str) -> str | None:
    """--resume value -> checkpoint directory. None: no resume. "latest": the newest complete
    checkpoint under ``root`` (None when there is none yet: a fresh start, as a restarted
    job's first attempt needs). A path: that checkpoint directory, or a run's checkpoints
    root / --out directory, whose newest complete checkpoint is taken."""
    if not resume:
        return None
    if resume == "latest":
        return latest_complete(root)
    path = os.fspath(resume)
    if not os.path.isdir(path):
        raise CheckpointError(f"--resume {path}: no such directory")
    if os.path.exists(os.path.join(path, MANIFEST)) or _STEP_DIR.match(os.path.basename(os.path.normpath(path))):
        return path
    for candidate_root in (path, os.path.join(path, "checkpoints")):
        found = latest_complete(candidate_root)
        if found:
            return found
    raise CheckpointError(f"--resume {path}: no complete checkpoint there (expected a step_* directory "
                          f"with {MANIFEST}, or a directory holding them)")
