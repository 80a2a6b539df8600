"""Drop LLVM's code pages from the daemon's resident set once the Numba kernels are loaded.

Numba links LLVM (llvmlite's libllvmlite.so, about 180 MB on disk) into the process. Importing
Numba and loading the cached kernels touches about 68 MB of it, mostly static initialisers spread
over the whole library, and those pages then stay mapped for the life of the daemon although
nothing runs them again: a loaded kernel is native code that Numba's dispatcher calls without
LLVM. `MADV_DONTNEED` unmaps them from the process; they stay in the page cache, where the kernel
reclaims them whenever memory is needed, instead of counting against the daemon's resident memory
(the 250 MB budget). Should Numba ever compile again (a kernel meeting a new signature), the
pages it needs are mapped back from the file on demand.

Only read-only mappings without a private copy of any page are unmapped: for a private file
mapping `MADV_DONTNEED` throws away what the process wrote, and the dynamic linker writes
relocations into the library's data before it makes part of them read-only (RELRO); those
mappings hold anonymous pages and are left alone. (`MADV_PAGEOUT` would keep the pages mapped
until reclaimed but is refused silently for a library the daemon's user does not own, as
installed, and for pages another process maps too.)
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_MADV_DONTNEED = 4  # linux/mman.h
LIBRARY_MARKER = "libllvmlite"


@dataclass(frozen=True)
class Mapping:
    """One entry of /proc/PID/smaps."""

    start: int
    end: int
    perms: str
    path: str
    rss_kb: int
    anonymous_kb: int

    @property
    def droppable(self) -> bool:
        """Read-only and every resident page still the file's own: safe to unmap and map back."""
        return "w" not in self.perms and self.anonymous_kb == 0


def parse_smaps(text: str) -> list[Mapping]:
    """The mappings of a /proc/PID/smaps text, with their Rss and Anonymous figures."""
    mappings: list[Mapping] = []
    header: tuple[int, int, str, str] | None = None
    figures: dict[str, int] = {}

    def close() -> None:
        if header is not None:
            mappings.append(Mapping(*header, figures.get("Rss", 0), figures.get("Anonymous", 0)))

    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if not fields:
            continue
        key = fields[0]
        if key.endswith(":"):
            if len(fields) >= 2 and fields[1].isdigit():
                figures[key[:-1]] = int(fields[1])
            continue
        start, dash, end = key.partition("-")
        if not dash or len(fields) < 5:
            continue
        try:
            span = (int(start, 16), int(end, 16))
        except ValueError:
            continue
        close()
        header = (*span, fields[1], fields[5] if len(fields) == 6 else "")
        figures = {}
    close()
    return mappings


def resident_kb(marker: str, smaps: str) -> int:
    """Resident kB of the mappings in a /proc/PID/smaps text whose path contains `marker`."""
    return sum(m.rss_kb for m in parse_smaps(smaps) if marker in m.path)


def release_compiler_pages(marker: str = LIBRARY_MARKER) -> int | None:
    """Unmap the resident read-only pages of LLVM's library from this process; returns the kB
    released, or None where that cannot be done (no /proc, or no such library mapped)."""
    try:
        before = parse_smaps(Path("/proc/self/smaps").read_text())
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    library = [m for m in before if marker in m.path]
    if not library:
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    for mapping in library:
        if mapping.droppable and mapping.rss_kb and madvise(mapping.start, mapping.end - mapping.start, _MADV_DONTNEED):
            log.warning("madvise(MADV_DONTNEED) on %s refused: %s", mapping.path, os.strerror(ctypes.get_errno()))
    after = resident_kb(marker, Path("/proc/self/smaps").read_text())
    return max(0, sum(m.rss_kb for m in library) - after)
