"""Keep freed CPU memory in the process, so that a penalized step does not fault its pages in again.

A gradient penalty's step holds more tensors at its peak than a plain step: the penalty's own
forward, the input gradient's graph and the double backward's buffers. With glibc's default
settings a freed block of that size goes back to the operating system (an ``munmap``, or a trim
of the heap), and the next step's allocation of it faults every page in again, zero-filled by
the kernel. On the DCGAN critics that was thousands of page faults per WGAN-GP step and none per
plain step, and it made the WGAN-GP step 1.90-1.95x a plain step instead of 1.71-1.78x
(``benchmarks/penalty_overhead.py --allocator``).

:func:`keep_freed_memory` raises glibc's mmap threshold to its ceiling (32 MiB on 64-bit) and
its trim threshold to 1 GiB, the same as starting Python with
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824``: freed blocks below the
ceiling stay in the heap for the next step. The price is that the process keeps its peak CPU
memory instead of handing it back between steps. ``gradpen train`` (every run of the training
engine) calls it; in your own loop, call it once before training. It changes how memory is
allocated, never a value.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for the mmap threshold on 64-bit systems
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks up to 32 MiB in the process instead of returning them.

    Process-wide and lasting (glibc has no way back to its adaptive defaults); call it once, before
    training. Elsewhere than on Linux with glibc it does nothing.

    Returns:
        True if glibc accepted both settings; False where there is no glibc ``mallopt`` (macOS,
        Windows, musl) or it refused them.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl: its mallopt accepts and ignores all
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
