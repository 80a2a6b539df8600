"""Evidence images: the located unit with every finding outlined and the grade written above it, as JPEG.

An evidence image is an audit picture, not part of a unit's decision, yet it shares the one core
with the decision path. So the writer keeps only the part of the frame that matters: the unit's
bounding box, its findings, their labels and a margin, at full resolution (a phone is about a third
of a 1280x720 frame), with the header in a strip above it; when no unit was located it keeps the
whole frame.

Drawing and encoding are pure (`evidence_region`, `cut_evidence`, `render_evidence`, `draw_evidence`,
`encode_jpeg`); `EvidenceWriter` runs them, from cutting the frame to the rename, on its own worker
thread, scheduled SCHED_IDLE where the OS allows it, so it only uses the CPU the decision path leaves.
A queued image holds its frame until it is written. Once `raise_at` images wait, the worker is
put back under normal scheduling until it has caught up: it always makes progress, and the backlog
is bounded (`max_pending`; past that an image is dropped and counted, never queued without bound).
Files are written atomically (temporary name, then rename) under `<dir>/<YYYYMMDD>/<unit_id>.jpg`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vision.report import DamageReport, Point

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
_FONT = cv2.FONT_HERSHEY_SIMPLEX

# Around the unit's bounding box: room for the outline's own width, dents and chips just outside it,
# and the belt around the unit (a person checking the picture wants to see the unit's edge).
CROP_MARGIN_PX = 40
# The header strip above a crop wraps to the crop's width; narrower than this and it needs many lines.
MIN_CROP_WIDTH_PX = 480
HEADER_SCALE = 0.5
HEADER_LINE_PX = 18


@dataclass(frozen=True)
class EvidenceCrop:
    """The pixels an evidence image is made of: a copy of `region` (x0, y0, x1, y1) of a frame of
    `frame_size` (width, height). Owns its pixels, so the frame can be reused once this exists."""

    pixels: np.ndarray
    region: tuple[int, int, int, int]
    frame_size: tuple[int, int]
    report: DamageReport

    @property
    def whole_frame(self) -> bool:
        return self.region == (0, 0, *self.frame_size)


def _line_thickness(frame_width: int) -> int:
    return max(1, round(frame_width / 640))


def _defect_text(kind: str, length_mm: float) -> str:
    return f"{kind} {length_mm:.1f}mm"


def evidence_region(frame_shape: tuple[int, ...], report: DamageReport) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the frame an evidence image keeps: the located unit, every finding with its
    label, and the printed labels, plus CROP_MARGIN_PX, at least MIN_CROP_WIDTH_PX wide (when the
    frame is); the whole frame when no unit was located."""
    height, width = frame_shape[:2]
    if not report.device_corners_px:
        return 0, 0, width, height
    thickness = _line_thickness(width)
    points: list[Point] = list(report.device_corners_px)
    for defect in report.defects:
        points.extend(defect.outline_px)
        x, y = (round(v) for v in defect.frame_px)
        (text_w, text_h), _ = cv2.getTextSize(
            _defect_text(defect.kind, defect.length_mm), _FONT, 0.4 * thickness, thickness
        )
        points.extend([(x, y), (x + 6 + text_w, y - 6 - text_h)])
    for lx0, ly0, lx1, ly1 in report.label_regions_px:
        points.extend([(lx0, ly0), (lx1, ly1)])
    xs = [p[0] for p in points if math.isfinite(p[0])]
    ys = [p[1] for p in points if math.isfinite(p[1])]
    if not xs or not ys:
        return 0, 0, width, height
    x0 = max(0, math.floor(min(xs)) - CROP_MARGIN_PX)
    x1 = min(width, math.ceil(max(xs)) + CROP_MARGIN_PX + 1)
    y0 = max(0, math.floor(min(ys)) - CROP_MARGIN_PX)
    y1 = min(height, math.ceil(max(ys)) + CROP_MARGIN_PX + 1)
    if x1 <= x0 or y1 <= y0:
        return 0, 0, width, height
    missing = min(width, MIN_CROP_WIDTH_PX) - (x1 - x0)
    if missing > 0:  # widen around the centre, shifted back inside the frame
        x0 = max(0, x0 - missing // 2)
        x1 = min(width, x0 + min(width, MIN_CROP_WIDTH_PX))
        x0 = x1 - min(width, MIN_CROP_WIDTH_PX)
    return x0, y0, x1, y1


def cut_evidence(frame: np.ndarray, report: DamageReport, *, crop: bool = True) -> EvidenceCrop:
    """A copy of the pixels the evidence image needs (BGR; a grey frame is converted)."""
    height, width = frame.shape[:2]
    region = evidence_region(frame.shape, report) if crop else (0, 0, width, height)
    x0, y0, x1, y1 = region
    window = frame[y0:y1, x0:x1]
    pixels = np.array(window) if frame.ndim == 3 else cv2.cvtColor(window, cv2.COLOR_GRAY2BGR)
    return EvidenceCrop(pixels, region, (width, height), report)


def _wrap(text: str, width_px: int) -> list[str]:
    """`text` broken at spaces into lines that fit `width_px` in the header font."""
    if cv2.getTextSize(text, _FONT, HEADER_SCALE, 1)[0][0] <= width_px:
        return [text]
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and cv2.getTextSize(candidate, _FONT, HEADER_SCALE, 1)[0][0] > width_px:
            lines.append(current)
            current = word
        else:
            current = candidate
    return [*lines, current] if current else lines


def _header_lines(report: DamageReport, grade: str | None, caption: str) -> list[str]:
    counts = Counter(d.kind for d in report.defects)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no defects"
    header = f"grade {grade or '-'}  score {report.damage_score:.2f}  {summary}"
    if report.error:
        header += f"  ERROR: {report.error}"
    return [header[:160], caption[:160]] if caption else [header[:160]]


def render_evidence(crop: EvidenceCrop, grade: str | None, caption: str = "") -> np.ndarray:
    """The evidence picture from a cut: the unit's outline, each finding's outline and label, the
    printed labels, and a header with the grade, the counts and the damage score (in a strip above
    a crop; over the top of a whole frame, which then keeps the frame's size). Draws on `crop.pixels`."""
    image, report = crop.pixels, crop.report
    x0, y0 = crop.region[0], crop.region[1]
    offset = np.array([x0, y0], np.float32)
    thickness = _line_thickness(crop.frame_size[0])
    if report.device_corners_px:
        corners = (np.array(report.device_corners_px, np.float32) - offset).round().astype(np.int32)
        cv2.polylines(image, [corners], True, (0, 255, 0), thickness, cv2.LINE_AA)
    for lx0, ly0, lx1, ly1 in report.label_regions_px:
        cv2.rectangle(image, (lx0 - x0, ly0 - y0), (lx1 - x0, ly1 - y0), (200, 200, 200), thickness, cv2.LINE_AA)
    for defect in report.defects:
        colour = COLOURS.get(defect.kind, (255, 255, 255))
        if defect.outline_px:
            points = (np.array(defect.outline_px, np.float32) - offset).round().astype(np.int32)
            cv2.polylines(image, [points], True, colour, thickness, cv2.LINE_AA)
        x, y = (round(v) for v in defect.frame_px)
        text = _defect_text(defect.kind, defect.length_mm)
        cv2.putText(image, text, (x - x0 + 6, y - y0 - 6), _FONT, 0.4 * thickness, colour, thickness, cv2.LINE_AA)
    lines = _header_lines(report, grade, caption)
    if crop.whole_frame:
        _draw_header_over(image, lines, thickness)
        return image
    return np.vstack([_header_strip(image.shape[1], lines), image])


def _draw_header_over(image: np.ndarray, lines: list[str], thickness: int) -> None:
    bar = 22 * thickness * len(lines) + 6
    cv2.rectangle(image, (0, 0), (image.shape[1], bar), (0, 0, 0), -1)
    for i, line in enumerate(lines):
        origin = (8, 18 * thickness + i * 22 * thickness)
        cv2.putText(image, line, origin, _FONT, 0.55 * thickness, (255, 255, 255), thickness, cv2.LINE_AA)


def _header_strip(width: int, lines: Iterable[str]) -> np.ndarray:
    wrapped = [part for line in lines for part in _wrap(line, width - 16)]
    strip = np.zeros((HEADER_LINE_PX * len(wrapped) + 8, width, 3), np.uint8)
    for i, line in enumerate(wrapped):
        origin = (8, HEADER_LINE_PX * (i + 1))
        cv2.putText(strip, line, origin, _FONT, HEADER_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def draw_evidence(
    frame: np.ndarray, report: DamageReport, grade: str | None, caption: str = "", *, crop: bool = False
) -> np.ndarray:
    """A new image of `frame` with the findings drawn: the whole frame by default (`edge inspect`),
    or, with `crop`, only the located unit and its surroundings (the daemon's evidence images)."""
    return render_evidence(cut_evidence(frame, report, crop=crop), grade, caption)


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


def _set_idle_scheduling(idle: bool, thread_id: int = 0) -> bool:
    """Put a thread (its native id; 0 is the calling thread: on Linux a policy is per thread) under
    SCHED_IDLE, or back under SCHED_OTHER. False where the OS has no such policy or refuses."""
    policy = getattr(os, "SCHED_IDLE" if idle else "SCHED_OTHER", None)
    if policy is None:
        return False
    try:
        os.sched_setscheduler(thread_id, policy, os.sched_param(0))
    except (OSError, AttributeError):
        return False
    return True


def idle_scheduling_is_reversible() -> bool:
    """Whether a thread here can go under SCHED_IDLE and come back: leaving SCHED_IDLE needs root,
    CAP_SYS_NICE or an RLIMIT_NICE that allows nice 0 (systemd: LimitNICE=+0). Tried on a throwaway
    thread, since a thread that cannot come back would stay idle."""
    outcome: list[bool] = []

    def probe() -> None:
        outcome.append(_set_idle_scheduling(True) and _set_idle_scheduling(False))

    thread = threading.Thread(target=probe, name="evidence-sched-probe", daemon=True)
    thread.start()
    thread.join()
    return bool(outcome and outcome[0])


class EvidenceWriter:
    """Writes evidence images on one background thread that yields the core to the decision path.

    `submit` only queues: the worker cuts the unit out of the frame, then draws, encodes and writes.
    The worker runs SCHED_IDLE, so it only gets the CPU nothing else wants. A SCHED_IDLE thread on a
    saturated core barely runs at all, so it is `submit` that moves it back under normal scheduling
    (a fair share of the core) once `raise_at` images are waiting; the worker goes idle again when
    the backlog is down to the image it is on, so it always catches up. Where SCHED_IDLE cannot be
    left again (no privilege, see `idle_scheduling_is_reversible`) it runs at nice 10 throughout.
    Each waiting image holds its frame (2.7 MB at 1280x720), so past `max_pending` waiting images a
    new one is dropped and counted (`counters["dropped"]`) rather than queued without bound;
    `pending` is the backlog.
    """

    WARN_EVERY_S = 60.0  # backlog warnings at most this often (each is counted)

    def __init__(
        self,
        directory: Path | str,
        *,
        quality: int = 80,
        max_pending: int = 16,
        raise_at: int = 3,
        crop: bool = True,
        idle_priority: bool = True,
    ) -> None:
        if max_pending < 1 or raise_at < 1:
            raise ValueError("max_pending and raise_at must be at least 1")
        self.directory = Path(directory)
        self.quality = quality
        self.max_pending = max_pending
        self.raise_at = raise_at
        self.crop = crop
        self.counters: Counter[str] = Counter()
        self.cpu_ns = 0  # CPU time the worker spent on images (thread time), for benchmarks
        self._pending = 0
        self._peak_pending = 0
        self._lock = threading.Lock()
        self._idle_priority = idle_priority and idle_scheduling_is_reversible()
        self._idle_now = False
        self._worker_id = 0  # the worker's native thread id, once it runs
        self._warned_at: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence", initializer=self._start_worker)

    @property
    def pending(self) -> int:
        """Images queued and not yet written (the backlog)."""
        return self._pending

    def stats(self) -> dict[str, int]:
        """Backlog and outcome counters."""
        return {"pending": self._pending, "peak_pending": self._peak_pending, **self.counters}

    def error_counters(self) -> dict[str, int]:
        """Images dropped (backlog full) or failed (disk, encoding), for the controller's error counters."""
        return {f"evidence:{kind}": self.counters[kind] for kind in ("dropped", "failed") if self.counters[kind]}

    def path_for(self, unit_id: str, when: dt.datetime | None = None) -> Path:
        if not _SAFE_NAME.match(unit_id):
            raise ValueError(f"unit id {unit_id!r} is not a safe file name")
        day = (when or dt.datetime.now(dt.UTC)).strftime("%Y%m%d")
        return self.directory / day / f"{unit_id}.jpg"

    def submit(
        self, unit_id: str, frame: np.ndarray, report: DamageReport, grade: str | None, caption: str = ""
    ) -> Path | None:
        """Queue the image; returns the path it will have, or None when it was dropped. The frame
        must not be changed until the image is written (the worker reads it)."""
        path = self.path_for(unit_id)
        with self._lock:
            if self._pending >= self.max_pending:
                self.counters["dropped"] += 1
                self._warn(
                    "dropped",
                    "evidence backlog full (%d images): image for %s dropped (%d so far)",
                    self._pending,
                    unit_id,
                    self.counters["dropped"],
                )
                return None
            self._pending += 1
            self._peak_pending = max(self._peak_pending, self._pending)
            if self._idle_now and self._pending >= self.raise_at:
                self._raise_worker()
        try:
            self._pool.submit(self._write, path, frame, report, grade, caption)
        except RuntimeError:  # closed: a unit decided while the daemon stops
            with self._lock:
                self._pending -= 1
                self.counters["dropped"] += 1
            log.warning("evidence writer closed: image for %s dropped", unit_id)
            return None
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        return path

    def _warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at.get(kind, -self.WARN_EVERY_S) >= self.WARN_EVERY_S:
            self._warned_at[kind] = now
            log.warning(message, *args)

    def _start_worker(self) -> None:
        with self._lock:
            self._worker_id = threading.get_native_id()
            if self._idle_priority:
                self._idle_now = _set_idle_scheduling(True)
                self._idle_priority = self._idle_now
        if not self._idle_priority:
            # On Linux a nice value is per thread. Not lowered with SCHED_IDLE: an unprivileged
            # thread could not raise it again to catch up.
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, 0, 10)

    def _raise_worker(self) -> None:
        """Under the lock: the worker back under normal scheduling, until it has caught up."""
        if _set_idle_scheduling(False, self._worker_id):
            self._idle_now = False
            self.counters["priority_raised"] += 1
            self._warn(
                "raised",
                "evidence backlog of %d images: writer under normal scheduling until it catches up (%d times so far)",
                self._pending,
                self.counters["priority_raised"],
            )

    def _settle_priority(self) -> None:
        """On the worker, before each image: idle again once the backlog is down to this image."""
        with self._lock:
            if self._idle_priority and not self._idle_now and self._pending <= 1:
                self._idle_now = _set_idle_scheduling(True)

    def _write(self, path: Path, frame: np.ndarray, report: DamageReport, grade: str | None, caption: str) -> None:
        started = time.thread_time_ns()
        try:
            self._settle_priority()
            crop = cut_evidence(frame, report, crop=self.crop)
            write_atomically(path, encode_jpeg(render_evidence(crop, grade, caption), self.quality))
            self.counters["written"] += 1
        except Exception as exc:  # any failure is counted and logged, never lost in a discarded future
            self.counters["failed"] += 1
            log.warning("evidence image %s not written: %s: %s", path, type(exc).__name__, exc)
        finally:
            self.cpu_ns += time.thread_time_ns() - started
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        """Write every queued image, then stop the worker; logs what the images cost."""
        with self._lock:
            # An idle-scheduled writer could starve on a busy core and hold the stop: catch up at
            # normal priority from here on.
            self._idle_priority = False
            if self._idle_now and self._pending:
                self._raise_worker()
        self._pool.shutdown(wait=True)
        written = self.counters["written"]
        if written or self.counters["dropped"] or self.counters["failed"]:
            log.info(
                "evidence: %d images written (%.2f ms CPU each), %d dropped, %d failed, peak backlog %d",
                written,
                self.cpu_ns / 1e6 / max(1, written + self.counters["failed"]),
                self.counters["dropped"],
                self.counters["failed"],
                self._peak_pending,
            )
