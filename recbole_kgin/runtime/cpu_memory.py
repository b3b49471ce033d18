"""glibc malloc settings for training on CPU.

Each KGIN step allocates and frees many 8-17 MB tensors. With glibc's defaults
such blocks are mmap'd and unmapped again (or trimmed off the heap), so every step
pays page faults and the kernel's zeroing of fresh pages: a quarter of a step on
ml-1m. Keeping blocks up to 32 MB on the heap and not trimming it makes freed
memory reusable. The setting is process-wide and only changes when memory goes
back to the OS, not results. (PyTorch's CPU tuning guide recommends jemalloc or
tcmalloc for the same reason; this needs no preload.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's maximum on 64-bit systems
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


def keep_freed_memory_for_reuse() -> bool:
    """Apply the settings above; True where they took (Linux with glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
