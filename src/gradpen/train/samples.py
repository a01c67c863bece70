"""``gradpen sample``: generator samples into an .npz file, checked for size and written atomically.

Before drawing anything the request is sized (``n`` times one sample, float32, plus int64 labels
for a conditional run) and refused with a UserError when the file would not fit in the free space
of the target disk, or the samples in the free memory (they are drawn in memory, then written).
The file is written to a temporary name beside ``out`` and renamed over it, so a failure or a
kill leaves the old file (or none), never a half-written one.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch

from gradpen.errors import UserError
from gradpen.train.checkpoint import replace_atomically
from gradpen.train.loop import Trainer
from gradpen.train.memory import available_bytes

HEADROOM = 2**26  # bytes left free on the disk and in memory beyond the request (64 MiB)
DRAW_COPIES = 2  # the samples are drawn in chunks and concatenated: two copies at the peak


def human_size(n: float) -> str:
    """``n`` bytes in a readable unit (``1.2 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _free_disk(path: Path) -> int:
    """Free bytes on the file system that will hold ``path`` (its nearest existing folder)."""
    folder = path.parent.resolve()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_sample_request(n: int, sample_shape: tuple[int, ...], labels: bool, out: Path) -> int:
    """The bytes of ``n`` samples of ``sample_shape``; a UserError if they do not fit."""
    per_sample = 4 * math.prod(sample_shape) + (8 if labels else 0)
    needed = n * per_sample
    shape = f"{n} samples of shape {tuple(sample_shape)}"
    disk = _free_disk(out)
    if needed + HEADROOM > disk:
        fit = max(0, (disk - HEADROOM) // per_sample)
        raise UserError(
            f"-n {n} does not fit: {shape} make a {human_size(needed)} file and the disk of "
            f"{str(out)!r} has {human_size(disk)} free. Lower -n (at most about {fit} fit) or "
            "write --out to a disk with more room; nothing was written"
        )
    memory = available_bytes(torch.device("cpu"))
    if DRAW_COPIES * needed + HEADROOM > memory:
        fit = max(0, (memory - HEADROOM) // (DRAW_COPIES * per_sample))
        raise UserError(
            f"-n {n} does not fit in memory: {shape} take {human_size(needed)}, drawn in memory "
            f"(about {human_size(DRAW_COPIES * needed)} at the peak) with {human_size(memory)} "
            f"available. Lower -n (at most about {fit} fit); nothing was written"
        )
    return needed


def write_samples(trainer: Trainer, n: int, out: Path) -> tuple[Path, tuple[int, ...], int]:
    """Draw ``n`` samples of ``trainer``'s run into ``out`` (``x``, and ``y`` when conditional).

    Returns the path, the shape of ``x`` and the file's size in bytes.
    """
    one, labels = trainer.samples01(1)
    check_sample_request(n, tuple(one.shape[1:]), labels is not None, out)
    x, y = trainer.samples01(n)
    arrays = {"x": x.numpy().astype(np.float32, copy=False)}
    if y is not None:
        arrays["y"] = y.numpy().astype(np.int64, copy=False)
    try:
        replace_atomically(out, lambda handle: np.savez(handle, **arrays))
    except OSError as error:
        raise UserError(f"cannot write {str(out)!r}: {error}; nothing was written") from None
    return out, tuple(x.shape), out.stat().st_size
