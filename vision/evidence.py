"""Evidence images: the frame with every finding outlined and the grade written on it, as JPEG.

Drawing and encoding are pure (`draw_evidence`, `encode_jpeg`); `EvidenceWriter` puts them on its
own worker thread so neither the event loop nor the vision worker waits for the disk. Files are
written atomically (temporary name, then rename) under `<dir>/<YYYYMMDD>/<unit_id>.jpg`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from vision.report import DamageReport

log = logging.getLogger("vision.evidence")

# BGR colours per finding kind; chosen to read on both dark and bright units.
COLOURS: dict[str, tuple[int, int, int]] = {
    "scratch": (0, 215, 255),
    "crack": (0, 0, 255),
    "dent": (255, 128, 0),
    "chip": (255, 0, 255),
    "missing_part": (0, 128, 255),
    "oversize": (0, 128, 255),
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _yield_to_grading() -> None:
    """Lower this thread's scheduling priority (on Linux a nice value is per thread). Evidence is
    never on a unit's critical path, so on a busy core it should only use what grading leaves."""
    # Not Linux, or not permitted: only latency suffers.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, 10)


def draw_evidence(frame: np.ndarray, report: DamageReport, grade: str | None, caption: str = "") -> np.ndarray:
    """A copy of `frame` with the unit's rectangle, each defect's outline and label, labels found
    on the surface, and a header with the grade, the counts and the damage score."""
    image = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    thickness = max(1, round(image.shape[1] / 640))
    if report.device_corners_px:
        corners = np.array(report.device_corners_px, np.float32).round().astype(np.int32)
        cv2.polylines(image, [corners], True, (0, 255, 0), thickness, cv2.LINE_AA)
    for x0, y0, x1, y1 in report.label_regions_px:
        cv2.rectangle(image, (x0, y0), (x1, y1), (200, 200, 200), thickness, cv2.LINE_AA)
    for defect in report.defects:
        colour = COLOURS.get(defect.kind, (255, 255, 255))
        if defect.outline_px:
            points = np.array(defect.outline_px, np.float32).round().astype(np.int32)
            cv2.polylines(image, [points], True, colour, thickness, cv2.LINE_AA)
        x, y = (round(v) for v in defect.frame_px)
        text = f"{defect.kind} {defect.length_mm:.1f}mm"
        cv2.putText(image, text, (x + 6, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colour, thickness,
                    cv2.LINE_AA)
    counts = Counter(d.kind for d in report.defects)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no defects"
    header = f"grade {grade or '-'}  score {report.damage_score:.2f}  {summary}"
    if report.error:
        header += f"  ERROR: {report.error}"
    lines = [header, caption] if caption else [header]
    bar = 22 * thickness * len(lines) + 6
    cv2.rectangle(image, (0, 0), (image.shape[1], bar), (0, 0, 0), -1)
    for i, line in enumerate(lines):
        cv2.putText(image, line[:160], (8, 18 * thickness + i * 22 * thickness), cv2.FONT_HERSHEY_SIMPLEX,
                    0.55 * thickness, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


class EvidenceWriter:
    """Writes evidence images on one background thread; when the disk falls behind by more than
    `max_pending` images, new ones are dropped and counted rather than queued without bound."""

    def __init__(self, directory: Path | str, *, quality: int = 80, max_pending: int = 64) -> None:
        self.directory = Path(directory)
        self.quality = quality
        self.max_pending = max_pending
        self.counters: Counter[str] = Counter()
        self._pending = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence", initializer=_yield_to_grading)

    def path_for(self, unit_id: str, when: dt.datetime | None = None) -> Path:
        if not _SAFE_NAME.match(unit_id):
            raise ValueError(f"unit id {unit_id!r} is not a safe file name")
        day = (when or dt.datetime.now(dt.UTC)).strftime("%Y%m%d")
        return self.directory / day / f"{unit_id}.jpg"

    def submit(
        self, unit_id: str, frame: np.ndarray, report: DamageReport, grade: str | None, caption: str = ""
    ) -> Path | None:
        """Queue the image; returns the path it will have, or None when it was dropped."""
        path = self.path_for(unit_id)
        with self._lock:
            if self._pending >= self.max_pending:
                self.counters["dropped"] += 1
                return None
            self._pending += 1
        self._pool.submit(self._write, path, frame, report, grade, caption)
        return path

    def _write(self, path: Path, frame: np.ndarray, report: DamageReport, grade: str | None, caption: str) -> None:
        try:
            write_atomically(path, encode_jpeg(draw_evidence(frame, report, grade, caption), self.quality))
            self.counters["written"] += 1
        except (OSError, ValueError, cv2.error) as exc:
            self.counters["failed"] += 1
            log.warning("evidence image %s not written: %s", path, exc)
        finally:
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True)
