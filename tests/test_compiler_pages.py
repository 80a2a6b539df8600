"""LLVM's code pages handed back after the kernels are loaded (vision/compiler_pages.py).

Runs in a fresh interpreter: the pages a process holds depend on everything it did before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vision.compiler_pages import mapped_ranges, resident_kb

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, os, numpy as np
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
    # Pages are read back on demand: compiling a new function afterwards still works.
    assert figures["compiled_after"] == 45.0
    assert figures["after_compile"] > figures["after"]


_MAPS = """\
55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 131 /usr/bin/python3.11
7f1e2c000000-7f1e2c400000 r--p 00000000 08:01 77 /venv/lib/llvmlite/binding/libllvmlite.so
7f1e2c400000-7f1e2f000000 r-xp 00400000 08:01 77 /venv/lib/llvmlite/binding/libllvmlite.so
7f1e30000000-7f1e30021000 rw-p 00000000 00:00 0
7ffd1a2f0000-7ffd1a311000 rw-p 00000000 00:00 0                          [stack]
"""


def test_only_the_named_library_ranges_are_found() -> None:
    assert mapped_ranges("libllvmlite", _MAPS) == [
        (0x7F1E2C000000, 0x7F1E2C400000),
        (0x7F1E2C400000, 0x7F1E2F000000),
    ]
    assert mapped_ranges("libnothing", _MAPS) == []


def test_resident_kb_adds_the_named_mappings_only() -> None:
    smaps = """\
7f1e2c000000-7f1e2c400000 r--p 00000000 08:01 77 /venv/libllvmlite.so
Size:               4096 kB
Rss:                1200 kB
VmFlags: rd mr mw me sd
7f1e30000000-7f1e30021000 rw-p 00000000 00:00 0
Size:                132 kB
Rss:                 100 kB
7f1e2c400000-7f1e2f000000 r-xp 00400000 08:01 77 /venv/libllvmlite.so
Rss:                  34 kB
"""
    assert resident_kb("libllvmlite", smaps) == 1234
