"""Checkpoints that survive a crash and load safely.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then moved over
``last.pt`` with ``os.replace`` (atomic on POSIX): a kill at any moment leaves either the old
or the new file, never a torn one. It holds tensors, numbers, strings and containers only, so
``torch.load(weights_only=True)`` reads it and a crafted pickle cannot run code.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from gradpen.errors import UserError

CHECKPOINT_NAME = "last.pt"


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; anything else is refused with a UserError."""
    if not path.is_file():
        raise UserError(f"no checkpoint at {str(path)!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain data, "
            "which a safe (weights_only) load does not run. gradpen never writes such files; do "
            f"not load it unless you made it yourself. Details: {error}"
        ) from None
    except (RuntimeError, EOFError) as error:
        raise UserError(f"checkpoint {str(path)!r} is unreadable: {error}") from None


def check_writable(run_dir: Path, needed_bytes: int) -> None:
    """Fail before training when ``run_dir`` cannot be written or the disk lacks room."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".probe-"):
            pass
    except OSError as error:
        raise UserError(f"cannot write to the run directory {str(run_dir)!r}: {error}") from None
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise UserError(
            f"not enough free disk space in {str(run_dir)!r}: {free / 2**20:.1f} MiB free, "
            f"about {needed_bytes / 2**20:.1f} MiB needed for checkpoints and outputs"
        )
