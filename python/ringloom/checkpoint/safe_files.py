"""Opening files whose names were read from other files (a checkpoint manifest, a sharded
weights index, a dataset's meta.json, a saved model's model.json).

Such a name is data, and data may be hostile or damaged: ``../../etc/hostname``, an absolute
path, a symbolic link to somewhere else, or a name that opens ``/dev/zero`` or a FIFO (a
read that never ends, an open that never returns). :func:`member_path` accepts only a
relative name that stays inside its directory, also after resolving symbolic links on the
way; :func:`open_regular` opens without following a final symbolic link and without
blocking on a FIFO, and refuses anything but a regular file. Reads of such files are bounded
by the size their index declares (:func:`read_bounded`).
"""
from __future__ import annotations

import os
import stat
from typing import BinaryIO


def member_path(directory: str, name: object, what: str, error: type[Exception] = ValueError,
                flat: bool = False) -> str:
    """``directory``/``name``, after checking that ``name`` is a relative path that stays
    inside ``directory`` (``flat``: a bare file name, no subdirectory). ``what`` says where
    the name came from, for the message; ``error`` is the exception class raised."""
    if not isinstance(name, str) or not name:
        raise error(f"{what}: file name {name!r} is not a non-empty string")
    if "\0" in name or os.path.isabs(name) or (os.altsep and name.startswith(os.altsep)):
        raise error(f"{what}: file name {name!r} is not a relative path inside {directory}")
    parts = name.replace(os.altsep or os.sep, os.sep).split(os.sep)
    if any(p in ("", ".", "..") for p in parts) or (flat and len(parts) > 1):
        raise error(f"{what}: file name {name!r} leaves its directory {directory}" if ".." in parts else
                    f"{what}: file name {name!r} is not a plain file name inside {directory}")
    path = os.path.join(directory, name)
    # A symbolic link among the directories on the way could still lead out.
    root = os.path.realpath(directory)
    parent = os.path.realpath(os.path.dirname(path))
    if os.path.commonpath([root, parent]) != root:
        raise error(f"{what}: file name {name!r} leads out of {directory} through a symbolic link")
    return path


def open_regular(path: str, what: str = "", error: type[Exception] = ValueError) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file that is not a symbolic link.
    Opened with O_NOFOLLOW and O_NONBLOCK (a FIFO's open would otherwise wait for a writer);
    the type is checked on the open descriptor, so a file swapped after a check cannot slip
    through. FileNotFoundError when it does not exist; ``error`` for anything else."""
    label = f"{what}: " if what else ""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{label}{path}: no such file") from None
    except OSError as e:
        kind = "a symbolic link" if os.path.islink(path) else e.strerror
        raise error(f"{label}{path}: cannot open ({kind}; expected a regular file)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{label}{path}: not a regular file (expected a regular file)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_size(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size


def read_bounded(path: str, limit: int, what: str = "", error: type[Exception] = ValueError) -> bytes:
    """The whole content of the regular file ``path``, refused when it is larger than
    ``limit`` bytes (so a damaged index cannot make a read unbounded)."""
    with open_regular(path, what, error) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        label = f"{what}: " if what else ""
        raise error(f"{label}{path}: larger than the {limit} bytes expected")
    return data
