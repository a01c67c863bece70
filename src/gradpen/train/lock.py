"""One writer per run directory: an OS lock held for the life of ``gradpen train``.

``gradpen train --out DIR`` and ``gradpen train --resume DIR`` take an exclusive ``flock`` on
``DIR/.gradpen.lock`` before they read or write anything else in DIR, and hold it until they
return. A second writer finds the lock taken and stops with a :class:`~gradpen.errors.UserError`
naming the holder (its pid, host and start time, which the holder writes into the lock file).
The operating system releases the lock when the holder's process ends in any way, SIGKILL
included, so a stale lock never blocks a resume. The lock file itself stays (removing it would
let a third process lock a fresh file while a second still holds the old one).

Readers (``sample``, ``eval``, ``export``) take no lock: every file they read is replaced
atomically (see :mod:`gradpen.train.checkpoint`), so they see an old or a new file, never half
of one. ``flock`` locks are not reliable on some network file systems (old NFS); a run directory
there gets no protection beyond what the file system gives.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from gradpen.errors import UserError

LOCK_NAME = ".gradpen.lock"


class RunLock:
    """The exclusive writer lock of ``run_dir`` (a context manager; released on exit)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (creating ``run_dir``), or raise a UserError naming the holder."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(
                f"cannot write to the run directory {str(self.run_dir)!r}: {error}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(
                f"the run directory {str(self.run_dir)!r} is being written by another gradpen "
                f"process ({holder}); one run directory has one writer at a time. Wait for it "
                "to finish (or stop it with Ctrl-C, which saves a checkpoint), then resume with "
                f"--resume {self.run_dir}; or train into another --out directory"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing its file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """``pid P on host H, started T`` from the lock file; the holder may still be writing it."""
    for _ in range(20):
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode())
            return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.01)
    return "holder unknown"
