"""Damage check: find the unit on the belt, find thin line defects on its surface, measure them.

Pipeline per frame (all single-threaded, GIL released in OpenCV and the Numba kernels):

1. locate the device: colour difference from the belt (estimated on the frame border) on a
   half-size copy, largest outer contour, which must not touch the frame edge;
2. inspect its interior minus a margin: Numba line response (a pixel brighter or darker than both
   flanks `radius` px away) on the grey image;
3. hysteresis: connected components of the low threshold that reach the high one;
4. per component (Numba stats kernel): size, second moments, response, orientation histogram;
   a thin elongated component is a scratch, a spread-out or very long one is a crack, small
   compact blobs are noise (dust, sensor noise, corners of the screen).

`DamageChecker.check` never raises for bad input and keeps no per-call state on the instance, so
one checker can serve several worker threads at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from vision import kernels
from vision.report import DamageReport, Defect

_LOCATE_SCALE = 2  # localisation runs on a frame downscaled by this factor: edges need no more
_BORDER_PX = 6  # frame border strip (in downscaled px) that is taken to show only belt


@dataclass(frozen=True)
class _Device:
    left: int
    top: int
    right: int
    bottom: int
    width_px: float
    height_px: float
    origin_x: float  # device top-left corner (axis-aligned approximation), full-res px
    origin_y: float
    contour: np.ndarray  # full-resolution outer contour, int32 (N, 1, 2)


class DamageChecker:
    """Finds scratches and cracks on the unit in a BGR frame; see module docstring.

    Thresholds are in grey levels of line contrast; lengths in mm through `px_per_mm`.
    """

    def __init__(
        self,
        px_per_mm: float = 3.0,
        *,
        margin_mm: float = 2.0,
        line_radius_px: int = 3,
        low_threshold: float = 10.0,
        high_threshold: float = 24.0,
        belt_threshold: int = 30,
        min_device_mm: float = 25.0,
        min_defect_mm: float = 1.0,
        noise_spread: float = 0.6,
        crack_spread: float = 0.3,
        crack_min_extent_mm: float = 6.0,
        crack_min_length_mm: float = 40.0,
        stroke_width_px: float = 2.0,
        max_components: int = 5000,
    ) -> None:
        if not math.isfinite(px_per_mm) or px_per_mm <= 0:
            raise ValueError(f"px_per_mm must be positive, got {px_per_mm}")
        if not 0 < low_threshold <= high_threshold:
            raise ValueError("need 0 < low_threshold <= high_threshold")
        self.px_per_mm = float(px_per_mm)
        self.margin_px = max(0, round(margin_mm * px_per_mm))
        self.line_radius_px = kernels._check_radius(line_radius_px)
        self.low_threshold = float(low_threshold)
        self.high_threshold = float(high_threshold)
        self.belt_threshold = int(belt_threshold)
        self.min_device_px = min_device_mm * px_per_mm
        self.min_defect_px = min_defect_mm * px_per_mm
        self.noise_spread = noise_spread
        self.crack_spread = crack_spread
        self.crack_min_extent_px = crack_min_extent_mm * px_per_mm
        self.crack_min_length_px = crack_min_length_mm * px_per_mm
        self.stroke_width_px = stroke_width_px
        self.max_components = max_components

    # -- public -----------------------------------------------------------------------------------

    def check(self, frame_bgr: np.ndarray) -> DamageReport:
        started = time.perf_counter()
        problem = _frame_problem(frame_bgr)
        if problem is not None:
            return DamageReport.failed(problem, _ms_since(started))
        try:
            return self._check(frame_bgr, started)
        except (cv2.error, ValueError, MemoryError) as exc:
            # A frame that passed validation but still breaks a stage is a vision failure for
            # this unit (quarantine), never a crash of the worker.
            return DamageReport.failed(f"vision failure: {type(exc).__name__}: {exc}", _ms_since(started))

    # -- stages -----------------------------------------------------------------------------------

    def _check(self, frame: np.ndarray, started: float) -> DamageReport:
        device = self._locate(frame)
        if device is None:
            return DamageReport(False, 0.0, 0.0, [], 0.0, _ms_since(started))
        ppm = self.px_per_mm
        width_mm, height_mm = device.width_px / ppm, device.height_px / ppm

        roi = frame[device.top : device.bottom, device.left : device.right]
        gray = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY)
        response, orientation = kernels.line_response(gray, self.line_radius_px, "both")
        response *= self._interior_mask(device, gray.shape)

        foreground = (response > self.low_threshold).view(np.uint8)
        # Labels only: OpenCV's own statistics pass costs ten times the labelling; ours is one
        # cheap Numba pass that also yields the moments and responses.
        n_labels, labels = cv2.connectedComponents(foreground, connectivity=8, ltype=cv2.CV_32S)
        if n_labels - 1 > self.max_components:
            return DamageReport(
                True,
                width_mm,
                height_mm,
                [],
                0.0,
                _ms_since(started),
                error=f"surface too busy to inspect ({n_labels - 1} line fragments)",
            )
        stats = kernels.component_stats(foreground, labels, response, orientation, n_labels)
        defects = self._classify(stats[1:], device)
        return DamageReport(True, width_mm, height_mm, defects, damage_score(defects), _ms_since(started))

    def _locate(self, frame: np.ndarray) -> _Device | None:
        height, width = frame.shape[:2]
        small = cv2.resize(frame, (width // _LOCATE_SCALE, height // _LOCATE_SCALE), interpolation=cv2.INTER_AREA)
        b = _BORDER_PX
        strips = (small[:b], small[-b:], small[:, :b], small[:, -b:])
        border = np.concatenate([strip.reshape(-1, 3) for strip in strips])
        belt = np.median(border[::3], axis=0)
        diff = cv2.absdiff(small, (*(float(c) for c in belt), 0.0))
        channels = cv2.split(diff)
        strongest = cv2.max(cv2.max(channels[0], channels[1]), channels[2])
        _, mask = cv2.threshold(strongest, self.belt_threshold, 255, cv2.THRESH_BINARY)
        # Opening removes belt texture specks; closing bridges dark screen/body seams.
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return None
        contour = max(contours, key=cv2.contourArea)
        x, y, w, h = cv2.boundingRect(contour)
        sh, sw = small.shape[:2]
        if x <= 0 or y <= 0 or x + w >= sw or y + h >= sh:
            # Touching the frame edge: a partial view or not a unit at all (noise, glare).
            return None
        rect = cv2.minAreaRect(contour)
        (centre_x, centre_y), (side_a, side_b), _ = rect
        corners = cv2.boxPoints(rect)
        edge = corners[1] - corners[0]
        first_is_horizontal = abs(edge[0]) >= abs(edge[1])
        # boxPoints' first edge has length side_b in OpenCV 4.5+; order the sides by the edge's
        # direction instead of relying on that convention.
        first_len = float(np.hypot(*edge))
        other_len = side_a if abs(first_len - side_b) < abs(first_len - side_a) else side_b
        w_px, h_px = (first_len, other_len) if first_is_horizontal else (other_len, first_len)
        s = _LOCATE_SCALE
        # Contour points are pixel centres: the outline spans one more downscaled pixel.
        w_px, h_px = (w_px + 1) * s, (h_px + 1) * s
        if min(w_px, h_px) < self.min_device_px:
            return None
        origin_x = (centre_x + 0.5) * s - w_px / 2
        origin_y = (centre_y + 0.5) * s - h_px / 2
        return _Device(x * s, y * s, (x + w) * s, (y + h) * s, w_px, h_px, origin_x, origin_y, contour * s)

    def _interior_mask(self, device: _Device, shape: tuple[int, ...]) -> np.ndarray:
        mask = np.zeros(shape, np.uint8)
        cv2.fillPoly(mask, [device.contour - np.array([device.left, device.top], np.int32)], 1)
        if self.margin_px:
            size = 2 * self.margin_px + 1
            mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
        return mask

    def _classify(self, stats: np.ndarray, device: _Device) -> list[Defect]:
        if stats.shape[0] == 0:
            return []
        strong = stats[:, kernels.STAT_MAX_RESPONSE] >= self.high_threshold
        stats = stats[strong]
        count = stats[:, kernels.STAT_COUNT]
        mean_x = stats[:, kernels.STAT_SUM_X] / count
        mean_y = stats[:, kernels.STAT_SUM_Y] / count
        var_x = stats[:, kernels.STAT_SUM_XX] / count - mean_x**2
        var_y = stats[:, kernels.STAT_SUM_YY] / count - mean_y**2
        cov = stats[:, kernels.STAT_SUM_XY] / count - mean_x * mean_y
        half_trace = (var_x + var_y) / 2
        root = np.sqrt(np.maximum(((var_x - var_y) / 2) ** 2 + cov**2, 0.0))
        # A uniform segment of n pixels has variance (n^2 - 1) / 12 along itself, hence the +1.
        major = np.sqrt(12 * np.maximum(half_trace + root, 0.0) + 1)
        minor = np.sqrt(12 * np.maximum(half_trace - root, 0.0) + 1)
        spread = minor / major
        orientations = stats[:, kernels.STAT_ORIENTATION_0 : kernels.STAT_ORIENTATION_0 + 4]
        dominant_share = orientations.max(axis=1) / count
        mean_response = stats[:, kernels.STAT_SUM_RESPONSE] / count

        # The extent of a stroke includes its round ends, half a stroke width at each; the scratch
        # itself runs between the end points. A crack's length is that of all its arms together:
        # its area over the stroke width.
        stroke = count / major
        length = np.maximum(major - stroke, major / 2)
        is_crack = ((spread >= self.crack_spread) & (major >= self.crack_min_extent_px)) | (
            major >= self.crack_min_length_px
        )
        length = np.where(is_crack, np.maximum(count / self.stroke_width_px, major), length)
        width = count / length
        is_noise = ~is_crack & ((length < self.min_defect_px) | (spread > self.noise_spread))

        ppm = self.px_per_mm
        device_offset = (device.left - device.origin_x, device.top - device.origin_y)
        defects: list[Defect] = []
        for i in np.flatnonzero(~is_noise):
            crack = bool(is_crack[i])
            contrast = min(1.0, (mean_response[i] - self.low_threshold) / (2 * self.high_threshold))
            # Strong contrast, clearly longer than the noise floor, and (for a scratch) one dominant
            # direction all make a finding more believable.
            shape_term = 1.0 if crack else float(dominant_share[i])
            size_term = min(1.0, length[i] / (3 * self.min_defect_px))
            confidence = float(np.clip(0.4 + 0.6 * contrast * size_term * (0.5 + 0.5 * shape_term), 0.0, 1.0))
            defects.append(
                Defect(
                    kind="crack" if crack else "scratch",
                    x_mm=(float(mean_x[i]) + device_offset[0]) / ppm,
                    y_mm=(float(mean_y[i]) + device_offset[1]) / ppm,
                    length_mm=float(length[i]) / ppm,
                    width_mm=float(width[i]) / ppm,
                    area_mm2=float(count[i]) / ppm**2,
                    confidence=confidence,
                )
            )
        defects.sort(key=lambda d: (d.kind != "crack", -d.length_mm))
        return defects


def damage_score(defects: list[Defect]) -> float:
    """0 (pristine) .. 1 (wrecked). Scratches saturate towards 0.75 with total length; any crack
    puts the unit at 0.8 or above, so the score orders units the way the grades do."""
    scratch_mm = sum(d.length_mm for d in defects if d.kind == "scratch")
    crack_mm = sum(d.length_mm for d in defects if d.kind == "crack")
    if crack_mm > 0:
        return 0.8 + 0.2 * (1 - math.exp(-(crack_mm + scratch_mm) / 150.0))
    return 0.75 * (1 - math.exp(-scratch_mm / 60.0))


def _frame_problem(frame: object) -> str | None:
    if not isinstance(frame, np.ndarray):
        return f"frame must be a numpy array, got {type(frame).__name__}"
    if frame.dtype != np.uint8:
        return f"frame must be uint8, got {frame.dtype}"
    if frame.ndim != 3 or frame.shape[2] != 3:
        return f"frame must be HxWx3 BGR, got shape {frame.shape}"
    if frame.shape[0] < 64 or frame.shape[1] < 64:
        return f"frame too small: {frame.shape[1]}x{frame.shape[0]}"
    return None


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def warm_up() -> None:
    """Compile or load every kernel (and touch the OpenCV paths) on a tiny synthetic unit, so the
    first real frame is not slow. Call after setting NUMBA_CACHE_DIR and before reporting READY."""
    frame = np.full((96, 128, 3), 70, np.uint8)
    frame[24:72, 32:96] = (20, 18, 16)
    cv2.line(frame, (40, 30), (80, 60), (150, 150, 150), 1, cv2.LINE_AA)
    DamageChecker(px_per_mm=1.0, min_device_mm=10.0).check(frame)
    gray = np.zeros((8, 8), np.uint8)
    for polarity in ("both", "bright", "dark"):
        kernels.line_response(gray, 1, polarity)  # type: ignore[arg-type]
