"""Process memory policy for replicas that handle very large images."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 1 << 20


@functools.cache
def return_large_buffers_to_the_os() -> bool:
    """Serve every allocation of 1 MiB or more from its own mmap, freed back to the OS.

    glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, so a
    replica working through tiles of a few tens of MiB ends up carving them from the heap,
    where fragmentation keeps them resident: a 100 MP run's peak RSS then grows by up to 2×
    the tile budget. A fixed threshold stops that adjustment. A no-op off glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
