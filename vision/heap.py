"""Keep freed frame-sized buffers mapped in the process's heap (glibc's allocator).

Every check allocates a dozen buffers the size of the unit's box (grey image, line response,
masks, labels: 0.5-3 MB each) and frees them again. glibc's malloc serves such sizes from fresh
memory mappings (or from a heap it trims again once the block at its top is free), so the next
check finds them unmapped and faults in every page anew: 900-1500 page faults per 1280x720 frame
(1500 in a worker thread), 2-3 ms of the 10 ms budget. glibc's own adjustment of its thresholds
avoids that only now and then, depending on the order in which sizes come and go. Raising the
mmap and trim thresholds keeps that memory in the heap, already mapped, for the next frame; the
price is that each thread's heap keeps up to TRIM_THRESHOLD_BYTES of freed memory.
"""

from __future__ import annotations

import ctypes

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# glibc's ceiling for the mmap threshold on 64-bit (HEAP_MAX_SIZE / 2); the largest buffer of a
# 1280x720 check (the frame's int32 labels) is 3.7 MB.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# Free memory at the top of a heap is only handed back beyond this: more than a check's peak
# (about 30 MB for a 1280x720 frame), little enough that a burst does not pin its peak for good
# (the daemon soaks at 231-239 MB with 48 MB, against 245 MB with 256 MB).
TRIM_THRESHOLD_BYTES = 48 * 1024 * 1024
# Each malloc arena keeps its own freed memory; glibc makes up to 8 per core, one per busy thread
# (vision workers, camera receive threads, the evidence writer...). Four bound what is kept to
# 4 x TRIM_THRESHOLD_BYTES while the threads still rarely wait on each other's arena.
ARENAS = 4


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed buffers up to MMAP_THRESHOLD_BYTES in the heap instead
    of unmapping them, at most TRIM_THRESHOLD_BYTES in each of at most ARENAS arenas. Process-wide and
    idempotent; False (nothing changed) where the C library has no `mallopt` (musl, macOS) or refuses the values."""
    try:
        libc = ctypes.CDLL(None)  # the C library the process already runs on; no ldconfig lookup
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # The mmap threshold first: setting it also stops glibc from adjusting both thresholds itself.
    return (
        bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        and bool(mallopt(_M_ARENA_MAX, ARENAS))
    )
