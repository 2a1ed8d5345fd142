"""Process memory policy for replicas that handle very large images."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD = 1 << 20


@functools.cache
def return_large_buffers_to_the_os() -> bool:
    """Serve every allocation of 1 MiB or more from its own mmap, freed back to the OS.

    glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, so a
    replica working through tiles of a few tens of MiB ends up carving them from the heap,
    where fragmentation keeps them resident: a 100 MP run's peak RSS then grows by up to 2×
    the tile budget. A fixed threshold stops that adjustment. A no-op off glibc."""
    return _mallopt((_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


@functools.cache
def reuse_heap_buffers() -> bool:
    """Let this process reuse freed buffers below 32 MiB instead of mapping and zeroing
    fresh pages for each (and trimming the heap after each image).

    The fixed 1 MiB threshold above bounds a replica's memory on tiles of huge images; with
    the default 128 KiB trim threshold, though, every mid-sized buffer of every task is
    mapped, faulted in and unmapped again, which cost a batch worker 15 % more CPU per
    256×192 image (measured). A process that runs one image at a time (a batch worker) is
    bounded by glibc's own ceiling instead (32 MiB, trimming at twice that); buffers above it
    (a 12 MP image's) still go back to the OS. A no-op off glibc."""
    return _mallopt((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 64 << 20))


def _mallopt(*settings: tuple[int, int]) -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return all([libc.mallopt(param, value) for param, value in settings])
    except (OSError, AttributeError):
        return False
