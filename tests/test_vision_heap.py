from __future__ import annotations

import resource

import numpy as np
import pytest

from vision import heap


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def test_freed_frame_sized_buffers_stay_mapped() -> None:
    """After `retain_freed_memory`, a buffer the size of a unit's line response (3 MB), freed and
    allocated again, comes back already mapped: writing it all faults in (next to) no pages."""
    if not heap.retain_freed_memory():
        pytest.skip("the C library has no mallopt (not glibc)")
    assert heap.retain_freed_memory()  # idempotent
    size = 3 * 1024 * 1024
    np.ones(size, np.uint8).sum()  # the heap grows to hold it once
    before = _minor_faults()
    for _ in range(20):
        buffer = np.empty(size, np.uint8)
        buffer.fill(1)
        assert int(buffer[:: 4096].sum()) == -(-size // 4096)
        del buffer
    # Without the setting this loop faults in ~750 pages (glibc maps the first buffer afresh;
    # in a check, a dozen buffers of changing sizes keep it mapping and trimming).
    assert _minor_faults() - before < 200
