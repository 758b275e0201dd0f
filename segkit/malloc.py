"""Keep glibc from holding on to freed memory in long, large-array work (segkit-predict on slides).

glibc serves a large allocation with its own ``mmap`` and returns it on free, but after each such
free it raises its threshold for doing so (up to 32 MiB), so later blocks of band-sized arrays
come from the heap, which fragments and rarely shrinks. Fixing the threshold
(``M_MMAP_THRESHOLD``, as the ``MALLOC_MMAP_THRESHOLD_`` environment variable does) at 16 MiB
keeps the bands' arrays out of the heap while the net's smaller activations are still reused
from it. Predicting 16,384 x 4,096 px in-process (2026-12-05): peak 1180 MiB with glibc's dynamic
threshold, 1150 MiB fixed at 16 MiB (4,096 x 4,096: 1098 MiB), in the same time (49 s / 50 s); a
128 KiB threshold saved more (1064 MiB) but took 27 % longer, every activation being mapped anew.
A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD_BYTES = 16 * 2**20


def fix_mmap_threshold(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; whether it could be set.

    Example:
        >>> fix_mmap_threshold() in (True, False)
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
