"""Checkpoints written on a background thread while training goes on.

A save has two halves. The snapshot copies everything a checkpoint holds to host memory
(the weights, the optimizer state, the trainer state; device tensors into reused pinned
buffers, ``staging``); it runs on the training thread,
because the state changes with the next step, and under ZeRO it is a collective. The write
(safetensors files, checksums, manifest, ``latest``) only reads that snapshot, so it runs
on a thread of its own: the same files in the same order as a blocking save
(checkpoint/manager.py), so a crash during a background write leaves the directory without
its manifest and the previous checkpoint the newest complete one.

At most one save is in flight: a new one first waits for the previous write. An error in
the writer is raised on the training thread at the next :meth:`AsyncCheckpointWriter.check`
(the trainer calls it every step), at the next save, and at :meth:`close`.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

from ..tensor import HostStaging
from .manager import CheckpointError, rank_file


class AsyncCheckpointWriter:
    def __init__(self) -> None:
        # Pinned host buffers the snapshots of device tensors go through (tensor.HostStaging);
        # a snapshot's arrays view them, which is safe because the next snapshot starts only
        # after this writer finished with the previous one.
        self.staging = HostStaging()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._what = ""

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def check(self) -> None:
        """Raise the error of a finished background write, if any (does not wait)."""
        if self._thread is not None and not self._thread.is_alive():
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"background checkpoint write of {self._what} failed: {err}") from err

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the write in flight (if any), then raise its error (if any)."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise CheckpointError(f"background checkpoint write of {self._what} still running after "
                                      f"{timeout:.0f} s")
            self._thread = None
        self.check()

    def submit(self, what: str, write: Callable[[], None]) -> None:
        """Run ``write`` (which must only read data nobody changes any more) on the writer
        thread, after the previous write finished."""
        self.wait()
        self._what = what

        def run() -> None:
            try:
                write()
            except BaseException as e:   # kept for the training thread: a thread cannot raise there
                self._error = e

        # Not a daemon: an interpreter that exits normally finishes the write first.
        self._thread = threading.Thread(target=run, name="ringloom-checkpoint-writer")
        self._thread.start()

    def close(self) -> None:
        self.wait()


def wait_for_rank_files(ckpt_dir: str, world_size: int, timeout: float = 600.0, poll: float = 0.05) -> None:
    """Rank 0's writer, before it finalizes: every rank's state file (each rank writes it
    last) is in ``ckpt_dir``. The ranks coordinate through the file system, not through a
    collective, so the training thread's collectives are never interleaved with the writer's."""
    want = [rank_file("state", r, "json") for r in range(world_size)]
    deadline = time.monotonic() + timeout
    while True:
        missing = [n for n in want if not os.path.exists(os.path.join(ckpt_dir, n))]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise CheckpointError(f"{ckpt_dir}: after {timeout:.0f} s still no {', '.join(missing)}; "
                                  "not marking the checkpoint complete")
        time.sleep(poll)
