"""LLVM's code pages dropped from the resident set after the kernels are loaded
(vision/compiler_pages.py).

The release runs in a fresh interpreter: the pages a process holds depend on everything it did
before. The test process itself has Numba loaded, so the child's library pages are shared with it,
as they are with a second daemon or a test run on a gateway: the release must work all the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import vision.damage  # noqa: F401  (Numba and LLVM mapped here too: the child's pages are shared)
from vision.compiler_pages import Mapping, parse_smaps, resident_kb

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, numpy as np
from pathlib import Path
from vision.compiler_pages import release_compiler_pages, resident_kb
from vision.damage import warm_up
import numba

def llvm_kb():
    return resident_kb("libllvmlite", Path("/proc/self/smaps").read_text())

warm_up()
before = llvm_kb()
released = release_compiler_pages()
after = llvm_kb()

# The loaded kernels run without LLVM: a whole check finds the drawn scratch, pages stay out.
from vision.damage import DamageChecker
import cv2
frame = np.full((480, 640, 3), 70, np.uint8)
frame[120:360, 200:440] = (20, 18, 16)
cv2.line(frame, (230, 150), (400, 300), (150, 150, 150), 1, cv2.LINE_AA)
report = DamageChecker(px_per_mm=2.0, min_device_mm=30.0).check(frame)
after_check = llvm_kb()

@numba.njit("float64(float64[:])", cache=False)
def total(values):
    s = 0.0
    for v in values:
        s += v
    return s

print(json.dumps({"before": before, "released": released, "after": after, "after_check": after_check,
                  "defects": [d.kind for d in report.defects],
                  "compiled_after": total(np.arange(10.0)), "after_compile": llvm_kb()}))
"""


def test_llvm_pages_are_released_and_numba_still_compiles() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the suite's Numba cache: warm after the first test
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=300, check=True).stdout
    figures = json.loads(out.splitlines()[-1])
    assert figures["before"] > 20_000  # kB: importing Numba alone touches tens of MB of LLVM
    assert figures["released"] is not None and figures["released"] > figures["before"] // 2
    assert figures["after"] < figures["before"] // 2
    assert figures["defects"], "the check after the release found nothing"
    assert figures["after_check"] < figures["before"] // 2
    # Pages are mapped back on demand: compiling a new function afterwards still works.
    assert figures["compiled_after"] == 45.0
    assert figures["after_compile"] > figures["after"]


_SMAPS = """\
55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 131 /usr/bin/python3.11
Rss:                  64 kB
Anonymous:             0 kB
7f1e2c000000-7f1e2c400000 r--p 00000000 08:01 77 /venv/lib/llvmlite/binding/libllvmlite.so
Size:               4096 kB
Rss:                1200 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
7f1e2c400000-7f1e2f000000 r-xp 00400000 08:01 77 /venv/lib/llvmlite/binding/libllvmlite.so
Rss:                  34 kB
Anonymous:             0 kB
7f1e2f000000-7f1e2f100000 r--p 03000000 08:01 77 /venv/lib/llvmlite/binding/libllvmlite.so
Rss:                 300 kB
Anonymous:           296 kB
7f1e2f100000-7f1e2f120000 rw-p 03100000 08:01 77 /venv/lib/llvmlite/binding/libllvmlite.so
Rss:                 128 kB
Anonymous:           128 kB
7f1e30000000-7f1e30021000 rw-p 00000000 00:00 0
Rss:                 100 kB
Anonymous:           100 kB
"""


def test_only_clean_read_only_mappings_are_dropped() -> None:
    mappings = [m for m in parse_smaps(_SMAPS) if "libllvmlite" in m.path]
    assert [(m.perms, m.rss_kb, m.droppable) for m in mappings] == [
        ("r--p", 1200, True),
        ("r-xp", 34, True),
        ("r--p", 300, False),  # relocated by the dynamic linker, then made read-only (RELRO)
        ("rw-p", 128, False),
    ]
    assert mappings[0] == Mapping(0x7F1E2C000000, 0x7F1E2C400000, "r--p", mappings[0].path, 1200, 0)
    assert parse_smaps(_SMAPS)[-1].path == ""  # an anonymous mapping has no path
    assert resident_kb("libllvmlite", _SMAPS) == 1200 + 34 + 300 + 128


@given(st.text())
def test_smaps_text_of_any_shape_never_raises(text: str) -> None:
    for mapping in parse_smaps(text):
        assert mapping.rss_kb >= 0 and mapping.anonymous_kb >= 0
