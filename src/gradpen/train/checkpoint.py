"""Checkpoints that survive a crash and load safely.

Every file a run depends on (``last.pt``, ``config.toml``, the rewritten ``metrics.jsonl``,
``summary.json``) is written to a temporary file in the same folder, flushed to disk, then moved
over its name with ``os.replace`` (atomic on POSIX): a kill at any moment leaves either the old or
the new file, never a torn one. A kill inside a write leaves a stray temporary file, which the next
run removes. A checkpoint holds tensors, numbers, strings and containers only, so
``torch.load(weights_only=True)`` reads it and a crafted pickle cannot run code.

Crash testing: with the environment variable ``GRADPEN_CHECKPOINT_PAUSE=SECONDS`` a checkpoint
write sleeps between writing its temporary file and the replace, so that a test can kill the
process exactly inside a write (``benchmarks/kill_resume.py``).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from gradpen.errors import UserError

CHECKPOINT_NAME = "last.pt"
PAUSE_VARIABLE = "GRADPEN_CHECKPOINT_PAUSE"
WEIGHTS_ONLY_REFUSAL = "Weights only load failed"  # how torch words a refused object


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def replace_atomically(path: Path, write: Callable[[IO[bytes]], None], pause: float = 0) -> None:
    """Write ``path`` through ``write`` into a temp file, fsync it, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if pause > 0:
            time.sleep(pause)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    pause = float(os.environ.get(PAUSE_VARIABLE, "0") or 0)
    replace_atomically(path, lambda handle: torch.save(state, handle), pause)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a reader sees the old or the new text, never half."""
    replace_atomically(path, lambda handle: handle.write(text.encode()))


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporary files a killed write of ``path`` left behind; returns them."""
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f"{_temporary_prefix(path)}*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; anything else is refused with a UserError.

    Whatever the file's bytes (truncated, overwritten, another format, a pickle that would run
    code), the result is a checkpoint dict or a UserError naming the path and what to do.
    """
    if not path.is_file():
        raise UserError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if WEIGHTS_ONLY_REFUSAL not in str(error):
            raise UserError(_unreadable(path, error)) from None
        raise UserError(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain data, "
            "which a safe (weights_only) load does not run. gradpen never writes such files; do "
            f"not load it unless you made it yourself. Details: {error}"
        ) from None
    except Exception as error:  # any bytes at all may sit in the file
        raise UserError(_unreadable(path, error)) from None
    if not isinstance(state, dict) or "step" not in state:
        raise UserError(_unreadable(path, f"it holds a {type(state).__name__}, not a checkpoint"))
    return state


def _unreadable(path: Path, error: BaseException | str) -> str:
    """The message for a checkpoint file that cannot be read, with what to do about it."""
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"checkpoint {str(path)!r} is unreadable (not a gradpen checkpoint, or damaged: {detail}). "
        "gradpen replaces checkpoints atomically, so something else changed this file: put back "
        "a copy of it, or delete it to retrain this run from step 0 with --resume (its "
        "config.toml is kept), or start a new run with another --out"
    )


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
