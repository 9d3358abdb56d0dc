"""The output directories of ``ringloom train`` and ``ringloom prepare``: never overwritten
by accident.

A run directory (``train --out``) that already holds a run (any of RUN_ENTRIES) is used
only when the command says what to do with it:

- ``--resume``: continue it (from its newest complete checkpoint; the metrics are cut back
  to that step, so they never mix two runs).
- ``--overwrite``: start a new run there. The old run's entries (RUN_ENTRIES: metrics,
  model, checkpoints, event files, plots, summary) are deleted first, so nothing of it can
  be resumed or mixed in later; other files in the directory are left alone.
- neither: refused with one line, before anything is read or written.

``--resume CKPT`` naming a checkpoint outside ``--out`` into a directory that holds another
run also needs ``--overwrite`` (the other run's metrics would be mixed with the resumed
one's); ``--overwrite`` with a checkpoint inside ``--out`` is refused (it would delete the
checkpoint to resume from).

A dataset directory (``prepare --out``) is written when it is new, empty of the files
prepare writes, or holds a prepared dataset (whose files prepare reuses or refreshes, as
for its cache); files of those names from something else need ``--overwrite``.
"""
from __future__ import annotations

import os
import shutil

# What `ringloom train --out` writes (trainer.py, model_io.py, metrics.py, telemetry.py,
# checkpointing.py, plot.py).
RUN_ENTRIES = ("metrics.jsonl", "model.safetensors", "model.json", "tokenizer.json", "summary.json",
               "checkpoints", "tb", "loss.png", "throughput.png")
# What `ringloom prepare --out` writes (data/corpus.py).
DATASET_ENTRIES = ("meta.json", "train.bin", "val.bin", "tokenizer.json", "tokenizer.key")


def check_creatable(out: str, option: str) -> None:
    """``out`` is a directory, or can be made one (one line naming the option otherwise)."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"{option} {out}: exists and is not a directory")
    if not os.path.isdir(out):
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{option} {out}: cannot create the directory ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {out}: the directory is not writable")


def check_output_file(path: str, option: str) -> None:
    """An output file written at the end of a run (--trace): its directory must exist or be
    creatable and writable now, so the run does not fail after training."""
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a directory, expected a file name")
    check_creatable(os.path.dirname(os.path.abspath(path)), option)


def existing_run(out: str) -> list[str]:
    """The entries of a previous run present in ``out`` (empty when it holds none)."""
    return [n for n in RUN_ENTRIES if os.path.lexists(os.path.join(out, n))]


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def check_run_dir(out: str, resume: str | None, overwrite: bool) -> list[str]:
    """Checks only (every rank may call it): raises ValueError when ``train --out`` would
    overwrite or mix runs. Returns the entries ``--overwrite`` is to delete."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: exists and is not a directory")
    found = existing_run(out) if os.path.isdir(out) else []
    if overwrite and resume:
        if resume == "latest" or _inside(resume, out):
            raise ValueError(f"--overwrite would delete the run in {out} that --resume {resume} continues; "
                             "pass one of them")
        return found
    if not found or overwrite:
        return found
    if resume and (resume == "latest" or _inside(resume, out)):
        return []
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    if resume:
        raise ValueError(f"--out {out} holds another run ({shown}) than the checkpoint --resume {resume}; "
                         "pass --overwrite to replace it, or another --out")
    raise ValueError(f"--out {out} already holds a run ({shown}); pass --resume to continue it, --overwrite "
                     "to replace it, or another --out")


def prepare_run_dir(out: str, resume: str | None, overwrite: bool) -> None:
    """The main rank's part: check, delete the old run's entries under --overwrite, make
    the directory."""
    doomed = check_run_dir(out, resume, overwrite)
    for name in doomed:
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    check_creatable(out, "--out")


def _is_dataset(out: str) -> bool:
    import json

    try:
        with open(os.path.join(out, "meta.json"), "rb") as f:
            meta = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "key" in meta and "format" in meta


def check_dataset_dir(out: str, overwrite: bool) -> None:
    """``prepare --out``: refuse a directory whose files of prepare's names are not a
    prepared dataset (unless ``overwrite``), make it otherwise."""
    if os.path.isdir(out) and not overwrite and not _is_dataset(out):
        found = [n for n in DATASET_ENTRIES if os.path.lexists(os.path.join(out, n))]
        if found:
            raise ValueError(f"--out {out} holds {', '.join(found)} but no dataset prepared by ringloom; "
                             "pass --overwrite to replace them, or another --out")
    check_creatable(out, "--out")
