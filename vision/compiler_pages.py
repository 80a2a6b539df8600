"""Hand LLVM's code pages back to the kernel once the Numba kernels are loaded.

Numba links LLVM (llvmlite's libllvmlite.so, about 180 MB on disk) into the process. Importing
Numba and loading the cached kernels touches about 68 MB of it, mostly static initialisers spread
over the whole library, and those pages then stay resident for the life of the daemon although
nothing runs them again: a loaded kernel is native code that Numba's dispatcher calls without LLVM.
They are clean file pages, so the kernel would drop them under memory pressure anyway, but until
then they count against the daemon's resident memory (the 250 MB budget) and against a systemd
memory limit. `MADV_PAGEOUT` (Linux 5.4+) asks the kernel to reclaim them now; should Numba ever
compile again (a kernel meeting a new signature), the pages it needs are read back on demand.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_MADV_PAGEOUT = 21  # linux/mman.h; older kernels answer EINVAL
LIBRARY_MARKER = "libllvmlite"


def mapped_ranges(marker: str, maps: str) -> list[tuple[int, int]]:
    """(start, end) of every mapping in a /proc/PID/maps text whose path contains `marker`."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and marker in fields[5]:
            start, _, end = fields[0].partition("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def resident_kb(marker: str, smaps: str) -> int:
    """Resident kB of the mappings in a /proc/PID/smaps text whose path contains `marker`."""
    total = 0
    inside = False
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            inside = len(head) == 6 and marker in head[5]
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def release_compiler_pages(marker: str = LIBRARY_MARKER) -> int | None:
    """Ask the kernel to reclaim the resident pages of LLVM's library; returns the kB released, or
    None where that cannot be done (not Linux, a kernel before 5.4, no such library mapped)."""
    if not hasattr(os, "sched_getaffinity"):  # not Linux: no /proc, no MADV_PAGEOUT
        return None
    try:
        ranges = mapped_ranges(marker, Path("/proc/self/maps").read_text())
        before = resident_kb(marker, Path("/proc/self/smaps").read_text())
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    if not ranges:
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    for start, end in ranges:
        if madvise(start, end - start, _MADV_PAGEOUT) != 0:
            log.debug("madvise(MADV_PAGEOUT) on %s refused: %s", marker, os.strerror(ctypes.get_errno()))
            return None
    after = resident_kb(marker, Path("/proc/self/smaps").read_text())
    return max(0, before - after)
