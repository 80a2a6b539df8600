"""Damage check: find the unit on the belt, find defects on its surface and outline, measure them.

Pipeline per frame (all single-threaded, GIL released in OpenCV and the Numba kernels):

1. locate the device: colour difference from the belt (estimated on the frame border) on one
   pixel per 2x2 block, largest outer contour, which must not touch the frame edge; its minimum-area
   rectangle gives a rough pose, turned by the smallest angle (|angle| <= 45 degrees) that makes it
   axis-aligned. A straight line fitted to each side of the outline's convex hull gives the four
   corners, and a homography from the canonical rectangle onto them (a tilted camera sees a
   general quadrilateral); with the station's `camera_homography` the size is measured on the belt
   plane. Pixels become millimetres through the calibration `px_per_mm`.
2. inspect the interior minus a margin: Numba line response (a pixel brighter or darker than both
   flanks `radius` px away) on the grey image of the unit's bounding box. Measuring happens on the
   camera's own pixels and only the results are carried into the canonical view: resampling the
   image first would blur one-pixel scratches below the detection threshold.
3. per-tile statistics (Numba): printed labels (blocks of tiles both very dark and very bright)
   are masked out, and the median tile response, the noise floor, raises the thresholds on
   textured or noisy surfaces;
4. hysteresis: connected components of the low threshold that reach the high one;
5. per component (Numba stats kernel): size, second moments, response, orientation histogram;
   a thin elongated component is a scratch, a spread-out or very long one is a crack unless it
   is one straight stroke or two crossing ones (`straight_strokes`: scratches); compact blobs
   (dust, sensor noise) and anything soft and wide (smudges, oil, stains, glare: no ridge for
   the line filter) never become components at all. A scratch must also show as one ridge in
   the grey profile along its centre line: two-sided, without gaps (`ridge_profiles`), and no
   wider than a scratch (`ridge_widths`), which specks merged into a stroke, a stain's rim, a
   screen's corner or a glare band a few mm wide are not; nor may a wider ridge run on past its
   ends (`ridge_run_on`), as it does past a glare band's tip where the screen's edge cuts it off;
6. outline: the contour in canonical coordinates, side by side (corners excluded), against a
   straight line fitted to each side: inward runs are dents (shallow, smooth), chips (steep) or
   missing parts (deep or long). Corners: deeper inside than the rounding the other corners show
   is a chip. With the catalog size, a unit measurably smaller than its catalog outline also has a
   missing part, a larger one is "oversize".

`DamageChecker.check` never raises for bad input and keeps no per-call state on the instance, so
one checker can serve several worker threads at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import cv2
import numpy as np

from vision import heap, kernels, ridge_kernels
from vision.report import DamageReport, Defect

_LOCATE_SCALE = 2  # localisation runs on a frame downscaled by this factor: edges need no more
_BORDER_PX = 6  # frame border strip (in downscaled px) that is taken to show only belt
_TILE = 16
# The outline at full resolution is measured only in blocks of this many px (a multiple of
# _LOCATE_SCALE) where the downscaled mask found the unit's edge, one block around included.
_EDGE_BLOCK = 16
# Full-resolution px a mask value depends on around itself: the closing and opening in
# `_belt_mask` reach 4 px, contour tracing looks one further.
_MASK_REACH = 5
MAX_HOMOGRAPHY_CONDITION = 1e12  # beyond this a camera homography is numerically singular


@dataclass(frozen=True)
class DevicePose:
    """The located unit. `centre` and the contour are full-resolution frame px; width/height are the
    canonical view's sides in px at the checker's calibration. `homography` maps canonical px to
    frame px: a camera that looks at the belt at a slant sees the rectangle as a general
    quadrilateral, so the mapping is projective, fitted to the unit's four outline corners.
    `angle_deg` is the in-plane turn of the unit (for people: the report and the evidence)."""

    left: int
    top: int
    right: int
    bottom: int
    centre: tuple[float, float]
    angle_deg: float
    width_px: float
    height_px: float
    contour: np.ndarray  # full-resolution outer contour, int32 (N, 1, 2)
    contour_f: np.ndarray  # the same points as float64 (N, 2), at pixel centres
    homography: np.ndarray  # 3x3, canonical px -> frame px

    def to_device(self, points: np.ndarray) -> np.ndarray:
        """Frame px (N, 2) -> canonical px (N, 2), origin at the unit's top-left corner."""
        return _apply_homography(np.linalg.inv(self.homography), points)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        return _apply_homography(self.homography, points)

    def corners(self) -> np.ndarray:
        w, h = self.width_px, self.height_px
        return self.to_frame(np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64))

    def local_scale(self, frame_points: np.ndarray) -> np.ndarray:
        """Canonical px per frame px at each frame point (N,): lengths measured on the camera's
        pixels become canonical lengths with it, so the far end of a tilted view is not shrunk."""
        inverse = np.linalg.inv(self.homography)
        p = np.asarray(frame_points, np.float64).reshape(-1, 2)
        w = inverse[2, 0] * p[:, 0] + inverse[2, 1] * p[:, 1] + inverse[2, 2]
        # |det J| of a projective map at a point is det(H) / w^3; the square root is the area scale.
        return np.sqrt(np.abs(np.linalg.det(inverse) / w**3))

    def rectify(self, frame: np.ndarray, px_per_mm_out: float | None = None, scale: float = 1.0) -> np.ndarray:
        """The canonical view as an image (for people and evidence; measuring uses the raw pixels)."""
        w, h = self.width_px * scale, self.height_px * scale
        to_view = np.diag([scale, scale, 1.0]) @ np.linalg.inv(self.homography)
        return cv2.warpPerspective(frame, to_view, (max(1, round(w)), max(1, round(h))), flags=cv2.INTER_LINEAR)


def _apply_homography(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, np.float64).reshape(-1, 2)
    x = matrix[0, 0] * p[:, 0] + matrix[0, 1] * p[:, 1] + matrix[0, 2]
    y = matrix[1, 0] * p[:, 0] + matrix[1, 1] * p[:, 1] + matrix[1, 2]
    w = matrix[2, 0] * p[:, 0] + matrix[2, 1] * p[:, 1] + matrix[2, 2]
    return np.stack([x / w, y / w], axis=1)


def _rotation_homography(centre: tuple[float, float], angle_deg: float, width: float, height: float) -> np.ndarray:
    """Canonical px -> frame px for an upright view: a turn by `angle_deg` about `centre`."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    to_centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]], np.float64)
    turn = np.array([[c, -s, centre[0]], [s, c, centre[1]], [0, 0, 1]], np.float64)
    return turn @ to_centre


def _channel_median(pixels: np.ndarray) -> np.ndarray:
    """`np.median(pixels, axis=0)` of (N, 3) pixels, N >= 1, to the last bit: one partition per
    channel row instead of the general function's copy, strided partition and mean."""
    channels = np.ascontiguousarray(pixels.T)
    n = channels.shape[1]
    middle = n // 2
    if n % 2:
        return np.partition(channels, middle, axis=1)[:, middle].astype(np.float64)
    ordered = np.partition(channels, (middle - 1, middle), axis=1)
    return (ordered[:, middle - 1].astype(np.float64) + ordered[:, middle]) / 2


def _border_pixels(frame: np.ndarray, small_width: int, small_height: int) -> np.ndarray:
    """(N, 3) pixels of the border strips, _BORDER_PX wide, of the frame area-averaged down to
    `small_width` x `small_height` (_LOCATE_SCALE times smaller; an odd last row or column is left
    out): the same values as those strips of the whole downscaled frame, at a tenth of its cost."""
    s, b = _LOCATE_SCALE, _BORDER_PX * _LOCATE_SCALE
    even = frame[: small_height * s, : small_width * s]
    strips = (even[:b], even[-b:], even[:, :b], even[:, -b:])
    shrunk = [
        cv2.resize(strip, (strip.shape[1] // s, strip.shape[0] // s), interpolation=cv2.INTER_AREA) for strip in strips
    ]
    return np.concatenate([strip.reshape(-1, 3) for strip in shrunk])


def _edge_blocks(coarse: np.ndarray, box: tuple[int, int, int, int], scale: int) -> np.ndarray:
    """Block states (`kernels.BLOCK_*`) of the full-resolution `box` from the mask `coarse` of
    the frame downscaled by `scale`: a block is unit (belt) when the coarse mask is 255 (0) all
    over it and the eight blocks around it, so at least a block's width from the coarse outline;
    every other block is measured."""
    bx0, by0, bx1, by1 = box
    n_y, n_x = -(-(by1 - by0) // _EDGE_BLOCK), -(-(bx1 - bx0) // _EDGE_BLOCK)
    if bx0 % scale or by0 % scale:  # not on the coarse grid: measure everything
        return np.full((n_y, n_x), kernels.BLOCK_EDGE, np.uint8)
    step = _EDGE_BLOCK // scale
    # Where the coarse mask does not reach (an odd frame size), 128: neither belt nor unit.
    patch = np.full((n_y * step, n_x * step), 128, np.uint8)
    known = coarse[by0 // scale : by0 // scale + n_y * step, bx0 // scale : bx0 // scale + n_x * step]
    patch[: known.shape[0], : known.shape[1]] = known
    # The mask is 0 or 255, so a block's rounded mean is 255 (0) only where all of it is: OpenCV's
    # area average over whole blocks, a fraction of the cost of a min and a max per block.
    mean = cv2.resize(patch, (n_x, n_y), interpolation=cv2.INTER_AREA)
    square = np.ones((3, 3), np.uint8)
    lowest = cv2.erode(mean, square, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    highest = cv2.dilate(mean, square, borderType=cv2.BORDER_CONSTANT, borderValue=255)
    blocks = np.full((n_y, n_x), kernels.BLOCK_EDGE, np.uint8)
    blocks[lowest == 255] = kernels.BLOCK_INSIDE
    blocks[highest == 0] = kernels.BLOCK_OUTSIDE
    return blocks


def _clear_of_unmeasured(contour: np.ndarray, blocks: np.ndarray) -> bool:
    """Whether every pixel within _MASK_REACH of the contour (N, 1, 2, box px) lies in a measured
    block: there the blocked mask equals the fully measured one, and so does the traced outline."""
    return kernels.measured_around(contour, blocks, _EDGE_BLOCK, _MASK_REACH)


class DamageChecker:
    """Finds scratches, cracks, dents, chips and missing parts on the unit in a BGR frame; see the
    module docstring. Thresholds are in grey levels of line contrast; sizes in mm via `px_per_mm`."""

    def __init__(
        self,
        px_per_mm: float = 3.0,
        *,
        margin_mm: float = 2.0,
        line_radius_px: int = 3,
        low_threshold: float = 10.0,
        high_threshold: float = 24.0,
        noise_factor_low: float = 4.0,
        noise_factor_high: float = 8.0,
        belt_threshold: int = 30,
        min_device_mm: float = 25.0,
        # Below ~1.2 mm a dust speck pair and a scratch look alike; neither changes a grade.
        min_defect_mm: float = 1.2,
        noise_spread: float = 0.6,
        crack_spread: float = 0.3,
        crack_min_extent_mm: float = 6.0,
        crack_min_length_mm: float = 40.0,
        stroke_width_px: float = 2.0,
        max_components: int = 5000,
        outline_corner_mm: float = 14.0,
        outline_min_depth_mm: float = 0.8,
        outline_min_length_mm: float = 1.5,
        missing_depth_mm: float = 3.8,
        missing_length_mm: float = 16.0,
        size_tolerance_mm: float = 3.0,
        size_tolerance_pct: float = 2.0,
        label_min_tiles: int = 6,
        ridge_min_gap_ratio: float = 0.4,
        ridge_min_two_sided: float = 0.72,
        ridge_max_width_px: float = 4.0,
        crack_min_wander_px: float = 2.0,
        crack_max_width_px: float = 5.0,
        bent_scratch_max_width_px: float = 4.5,
        camera_homography: np.ndarray | None = None,
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
        self.noise_factor_low = noise_factor_low
        self.noise_factor_high = noise_factor_high
        self.belt_threshold = int(belt_threshold)
        self.min_device_px = min_device_mm * px_per_mm
        self.min_defect_px = min_defect_mm * px_per_mm
        self.noise_spread = noise_spread
        self.crack_spread = crack_spread
        self.crack_min_extent_px = crack_min_extent_mm * px_per_mm
        self.crack_min_length_px = crack_min_length_mm * px_per_mm
        self.stroke_width_px = stroke_width_px
        self.max_components = max_components
        self.outline_corner_mm = outline_corner_mm
        self.outline_min_depth_mm = outline_min_depth_mm
        self.outline_min_length_mm = outline_min_length_mm
        self.missing_depth_mm = missing_depth_mm
        self.missing_length_mm = missing_length_mm
        self.size_tolerance_mm = size_tolerance_mm
        self.size_tolerance_pct = size_tolerance_pct
        self.label_min_tiles = label_min_tiles
        self.ridge_min_gap_ratio = ridge_min_gap_ratio
        self.ridge_min_two_sided = ridge_min_two_sided
        self.ridge_max_width_px = ridge_max_width_px
        self.crack_min_wander_px = crack_min_wander_px
        self.crack_max_width_px = crack_max_width_px
        self.bent_scratch_max_width_px = bent_scratch_max_width_px
        self.camera_homography = _camera_homography(camera_homography)

    # -- public -----------------------------------------------------------------------------------

    def check(
        self,
        frame_bgr: np.ndarray,
        expected_size_mm: tuple[float, float] | None = None,
        *,
        whole_frame: bool = False,
        pose: DevicePose | None = None,
    ) -> DamageReport:
        """Inspect one frame. `expected_size_mm` (catalog length, width in any order) adds a missing
        part when the unit is measurably smaller. `whole_frame` treats the entire image as the unit's
        surface (close-up photographs where no belt is visible). `pose` skips the localisation: the
        unit was found by other means (`pose_from_quad`, for photographs without a belt)."""
        started = time.perf_counter()
        problem = _frame_problem(frame_bgr)
        if problem is not None:
            return DamageReport.failed(problem, _ms_since(started))
        try:
            report = self._check(frame_bgr, started, whole_frame, pose)
        except (cv2.error, ValueError, MemoryError) as exc:
            # A frame that passed validation but still breaks a stage is a vision failure for
            # this unit (quarantine), never a crash of the worker.
            return DamageReport.failed(f"vision failure: {type(exc).__name__}: {exc}", _ms_since(started))
        if expected_size_mm is not None:
            report = compare_with_catalog(report, expected_size_mm, self.size_tolerance_mm, self.size_tolerance_pct)
        return report

    def locate(self, frame: np.ndarray) -> DevicePose | None:
        return self._locate(frame)

    # -- stages -----------------------------------------------------------------------------------

    def _check(self, frame: np.ndarray, started: float, whole_frame: bool, pose: DevicePose | None) -> DamageReport:
        device = pose or (_whole_frame_pose(frame) if whole_frame else self._locate(frame))
        if device is None:
            return DamageReport(False, 0.0, 0.0, [], 0.0, _ms_since(started))
        ppm = self.px_per_mm
        width_mm, height_mm = device.width_px / ppm, device.height_px / ppm
        corners = tuple((float(x), float(y)) for x, y in device.corners())

        roi = frame[device.top : device.bottom, device.left : device.right]
        gray = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY)
        response, orientation = kernels.line_response(gray, self.line_radius_px, "both")
        interior = self._interior_mask(device, gray.shape, whole_frame)
        tiles = kernels.tile_stats(gray, response, interior, _TILE, line_threshold=self.low_threshold)
        labels_mask, label_boxes = self._labels(tiles, gray)
        inspect = interior & ~labels_mask if labels_mask is not None else interior
        low, high = self._thresholds(tiles)

        # Nothing outside the inspected area becomes foreground, and the statistics read the
        # response only under the foreground: it needs no masking pass of its own.
        foreground = (response > low).view(np.uint8)
        foreground &= inspect
        # Labels only: OpenCV's own statistics pass costs ten times the labelling; ours is one
        # cheap Numba pass that also yields the moments and responses. The labelling itself skips
        # the background a word at a time (the labels are OpenCV's, numbered the same way).
        n_labels, labels = kernels.connected_components(foreground)
        label_regions = tuple(
            (x0 + device.left, y0 + device.top, x1 + device.left, y1 + device.top) for x0, y0, x1, y1 in label_boxes
        )
        common = dict(device_angle_deg=device.angle_deg, device_corners_px=corners, label_regions_px=label_regions)
        if n_labels - 1 > self.max_components:
            return DamageReport(
                True, width_mm, height_mm, [], 0.0, _ms_since(started),
                error=f"surface too busy to inspect ({n_labels - 1} line fragments)", **common,  # type: ignore[arg-type]
            )
        stats = kernels.component_stats(foreground, labels, response, orientation, n_labels)
        defects = self._classify(stats[1:], device, low, high, labels, gray)
        if not whole_frame:
            defects += self._outline(device)
        defects.sort(key=_defect_order)
        return DamageReport(
            True, width_mm, height_mm, defects, damage_score(defects), _ms_since(started), **common  # type: ignore[arg-type]
        )

    def _locate(self, frame: np.ndarray) -> DevicePose | None:
        height, width = frame.shape[:2]
        s = _LOCATE_SCALE
        sh, sw = height // s, width // s
        belt = _channel_median(_border_pixels(frame, sw, sh)[::3])
        # The coarse mask reads one pixel per s x s block: it only finds the unit's box and where
        # its edge runs; the outline itself is measured at full resolution below.
        mask = self._belt_mask(frame, belt, step=s)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return None
        contour = max(contours, key=cv2.contourArea)
        x, y, w, h = cv2.boundingRect(contour)
        if x <= 0 or y <= 0 or x + w >= sw or y + h >= sh:
            # Touching the frame edge: a partial view or not a unit at all (noise, glare).
            return None
        # The outline at full resolution, in the unit's box only: chips a few pixels wide
        # vanish at half size.
        pad = 4 * s
        bx0, by0 = max(x * s - pad, 0), max(y * s - pad, 0)
        bx1, by1 = min((x + w) * s + pad, width), min((y + h) * s + pad, height)
        # Only near the half-size outline: inside and outside of it the full-resolution mask is
        # known without reading the pixels (3/4 of the unit's box on a laptop).
        blocks = _edge_blocks(mask, (bx0, by0, bx1, by1), s)
        fine = self._belt_mask(frame, belt, (bx0, by0, bx1, by1), blocks)
        fine_contours, _ = cv2.findContours(fine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        outline = max(fine_contours, key=cv2.contourArea) if fine_contours else None
        if outline is None or not _clear_of_unmeasured(outline, blocks):
            # The outline strays from the half-size one (a notch too narrow to show at half size):
            # measure the whole box, the same mask as if no blocks had been skipped.
            fine = self._belt_mask(frame, belt, (bx0, by0, bx1, by1))
            fine_contours, _ = cv2.findContours(fine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            if not fine_contours:
                return None
            outline = max(fine_contours, key=cv2.contourArea)
        contour = outline + np.array([bx0, by0], np.int32)
        # The minimum-area rectangle is found on the hull anyway; handing it the hull (the same
        # rectangle) spares it a hull of its own, and the corner fit reuses it.
        hull = cv2.convexHull(contour)
        rect = cv2.minAreaRect(hull)
        (centre_x, centre_y), _, _ = rect
        corners = cv2.boxPoints(rect)
        edge0, edge1 = corners[1] - corners[0], corners[2] - corners[1]
        len0, len1 = float(np.hypot(*edge0)), float(np.hypot(*edge1))
        angle0 = math.degrees(math.atan2(float(edge0[1]), float(edge0[0])))
        # The smallest turn that makes the rectangle axis-aligned; an odd number of quarter turns
        # between it and edge 0 means edge 0 runs vertically in the canonical view.
        angle = (angle0 + 45.0) % 90.0 - 45.0
        quarter_turns = round((angle0 - angle) / 90.0)
        w_side, h_side = (len1, len0) if quarter_turns % 2 else (len0, len1)
        # Contour points are pixel centres: the outline spans one more pixel.
        w_px, h_px = w_side + 1, h_side + 1
        if min(w_px, h_px) < self.min_device_px:
            return None
        contour_f = contour.reshape(-1, 2).astype(np.float64)
        rough = _rotation_homography((float(centre_x), float(centre_y)), angle, w_px, h_px)
        homography, w_px, h_px = self._fit_quadrilateral(contour_f, rough, w_px, h_px, hull)
        centre = _apply_homography(homography, np.array([[w_px / 2, h_px / 2]]))[0]
        fx, fy, fw, fh = cv2.boundingRect(contour)
        return DevicePose(
            fx, fy, fx + fw, fy + fh, (float(centre[0]), float(centre[1])), angle, w_px, h_px,
            contour, contour_f, homography,
        )

    def _fit_quadrilateral(
        self, contour_f: np.ndarray, rough: np.ndarray, w_px: float, h_px: float, hull: np.ndarray | None = None
    ) -> tuple[np.ndarray, float, float]:
        """The outline's four corners from a straight line fitted to each side, and the homography
        from the canonical rectangle onto them; falls back to the rotated rectangle `rough`.

        Lines are fitted to the convex hull, not the raw contour: every kind of outline damage is
        a notch, and the hull bridges a notch along the very line the intact edge lies on. Only
        the middle of each side counts, away from the rounded corners. `hull`: the contour's
        convex hull when the caller has it."""
        if hull is None:
            # The points are whole pixels: the integer hull is the same polygon at half the cost.
            hull = cv2.convexHull(contour_f.astype(np.int32))
        hull = hull.reshape(-1, 2).astype(np.float64)
        # A sample every 4 px: the hull's sides are straight, so more samples add nothing to the
        # fit but time (the robust fit's cost grows with them; corners move < 0.15 px from 2 px).
        samples = _densify(hull, step=4.0)
        local = _apply_homography(np.linalg.inv(rough), samples)
        # Keystone moves a side's ends by a few percent of its length off the rectangle.
        band = max(0.08 * min(w_px, h_px), 4.0)
        lines = []
        inside = _apply_homography(rough, np.array([[w_px / 2, h_px / 2]]))[0]
        for side in range(4):
            along, inward, length = _side_coordinates(local, side, w_px, h_px)
            trim = min(self.outline_corner_mm * self.px_per_mm, 0.3 * length)
            near = (np.abs(inward) < band) & (along > trim) & (along < length - trim)
            if np.count_nonzero(near) < 6:
                return rough, w_px, h_px
            vx, vy, x0, y0 = cv2.fitLine(samples[near].astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
            normal = np.array([-vy, vx], np.float64)
            # Orient the normal outwards (away from the unit's centre) and move the line half a
            # pixel out: contour points are pixel centres, the edge is the pixels' outer border.
            offset = float(normal @ np.array([x0, y0]))
            if normal @ inside > offset:
                normal, offset = -normal, -offset
            lines.append((normal, offset + 0.5))
        # Corners of the canonical view: top-left = top & left, then clockwise.
        quad = []
        for first, second in ((0, 3), (0, 1), (2, 1), (2, 3)):
            (n1, c1), (n2, c2) = lines[first], lines[second]
            matrix = np.array([n1, n2])
            if abs(float(np.linalg.det(matrix))) < 1e-6:
                return rough, w_px, h_px
            quad.append(np.linalg.solve(matrix, np.array([c1, c2])))
        frame_quad = np.array(quad, np.float64)
        plane_quad = frame_quad if self.camera_homography is None else _apply_homography(
            np.linalg.inv(self.camera_homography), frame_quad
        )
        top, right = np.linalg.norm(plane_quad[1] - plane_quad[0]), np.linalg.norm(plane_quad[2] - plane_quad[1])
        bottom, left = np.linalg.norm(plane_quad[2] - plane_quad[3]), np.linalg.norm(plane_quad[3] - plane_quad[0])
        width, height = float(top + bottom) / 2, float(left + right) / 2
        # A fit far off the rough rectangle means the sides were not straight lines (a unit
        # badly broken, or two units touching): the rectangle is the safer description.
        if not (0.8 < width / w_px < 1.25 and 0.8 < height / h_px < 1.25):
            return rough, w_px, h_px
        canonical = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        homography = cv2.getPerspectiveTransform(canonical, frame_quad.astype(np.float32)).astype(np.float64)
        return homography, width, height

    def _belt_mask(
        self,
        image: np.ndarray,
        belt: np.ndarray,
        box: tuple[int, int, int, int] | None = None,
        blocks: np.ndarray | None = None,
        step: int = 1,
    ) -> np.ndarray:
        """255 where the image (in `box`, x0, y0, x1, y1, when given) differs from the belt colour
        by more than `belt_threshold`; `blocks` (of _EDGE_BLOCK px) as `kernels.belt_difference_mask`;
        `step` > 1: of the whole image, one pixel per step x step block (no box, no blocks)."""
        if step > 1:
            mask = kernels.belt_difference_mask_sampled(image, belt, self.belt_threshold, step)
        else:
            mask = kernels.belt_difference_mask(image, belt, self.belt_threshold, box, blocks, _EDGE_BLOCK)
        # Closing first bridges the seam where a bright bezel blurs into a dark screen through
        # belt-coloured pixels (opening first would eat a bezel thinned by a dent); opening then
        # removes belt texture specks. Both small: a larger closing would fill chips.
        # Closing then opening with 3x3 is dilate, erode, erode, dilate; the two erosions are one
        # erosion with 5x5 (also at the image border, which OpenCV leaves out of a min), a pass less.
        square3 = np.ones((3, 3), np.uint8)
        return cv2.dilate(cv2.erode(cv2.dilate(mask, square3), np.ones((5, 5), np.uint8)), square3)

    def _interior_mask(self, device: DevicePose, shape: tuple[int, ...], whole_frame: bool) -> np.ndarray:
        mask = np.zeros(shape, np.uint8)
        cv2.fillPoly(mask, [device.contour - np.array([device.left, device.top], np.int32)], 1)
        margin = self.margin_px if not whole_frame else self.line_radius_px
        if margin:
            size = 2 * margin + 1
            mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
        return mask

    def _labels(
        self, tiles: np.ndarray, gray: np.ndarray
    ) -> tuple[np.ndarray | None, list[tuple[int, int, int, int]]]:
        """Printed labels: compact blocks of tiles dense with dark, line-like ink."""
        count = np.maximum(tiles[:, :, kernels.TILE_COUNT], 1.0)
        # Printed modules are near-black ink and so dense that most of the tile answers the line
        # filter; a scratch or a crack arm covers a quarter of a tile at most, and a dark
        # screen inside a bright body (also dark and bright) is a step that does not answer.
        both = (tiles[:, :, kernels.TILE_DARK] / count >= 0.08) & (tiles[:, :, kernels.TILE_LINE] / count >= 0.45)
        if int(both.sum()) < self.label_min_tiles:
            return None, []
        grid = both.astype(np.uint8)
        shape = gray.shape
        grown = cv2.dilate(grid, np.ones((3, 3), np.uint8))
        n, comp, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        mask = np.zeros(shape, np.uint8)
        boxes = []
        for i in range(1, n):
            tx, ty, tw, th = stats[i, :4]
            hits = int((grid[comp == i]).sum())
            # A label is a compact block; a ring or a streak of such tiles is something else.
            if hits < self.label_min_tiles or hits < 0.3 * max(int(tw) - 2, 1) * max(int(th) - 2, 1):
                continue
            # The dilation already added a tile around the block; one more covers the
            # label's outer modules in tiles too little inked to qualify, its quiet zone and edge.
            pad = _TILE
            x0, y0 = max(int(tx) * _TILE - pad, 0), max(int(ty) * _TILE - pad, 0)
            x1, y1 = min(int(tx + tw) * _TILE + pad, shape[1]), min(int(ty + th) * _TILE + pad, shape[0])
            mask[y0:y1, x0:x1] = 1
            boxes.append((x0, y0, x1, y1))
        return (mask if boxes else None), boxes

    def _thresholds(self, tiles: np.ndarray) -> tuple[float, float]:
        count = tiles[:, :, kernels.TILE_COUNT]
        full = count >= _TILE * _TILE * 0.9
        if not full.any():
            return self.low_threshold, self.high_threshold
        noise = float(np.median(tiles[:, :, kernels.TILE_SUM_RESPONSE][full] / count[full]))
        return (
            max(self.low_threshold, self.noise_factor_low * noise),
            max(self.high_threshold, self.noise_factor_high * noise),
        )

    def _classify(
        self, stats: np.ndarray, device: DevicePose, low: float, high: float, labels: np.ndarray, gray: np.ndarray
    ) -> list[Defect]:
        if stats.shape[0] == 0:
            return []
        strong = stats[:, kernels.STAT_MAX_RESPONSE] >= high
        label_ids = np.flatnonzero(strong) + 1
        stats = stats[strong]
        if stats.shape[0] == 0:
            return []
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
        theta = 0.5 * np.arctan2(2 * cov, var_x - var_y)
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
        # Straight strokes that only look like a crack by their moments: scratches crossing each
        # other (an X spreads like a star). Checked on the component's pixels.
        strokes: dict[int, list[tuple[np.ndarray, np.ndarray, int]]] = {}
        # Lines along a bent centre line (`_traced_line`): index -> length in px.
        curved: dict[int, float] = {}
        not_damage: list[int] = []
        # Each candidate's pixels, found once: the stroke, trace and width checks all read them.
        component_pixels: dict[int, np.ndarray] = {}

        def pixels_of(i: int) -> np.ndarray:
            if i not in component_pixels:
                component_pixels[i] = self._component_points(
                    labels, int(label_ids[i]), mean_x[i], mean_y[i], major[i], int(count[i])
                )
            return component_pixels[i]

        for i in np.flatnonzero(is_crack):
            points = pixels_of(int(i))
            found = self._straight_strokes(points, 11.5)
            if found and len(found) == 2:
                is_crack[i] = False
                if not self._narrow_strokes(gray, found, low):
                    # Two straight strokes crossing, wider than scratches: two glare bands.
                    not_damage.append(int(i))
                    continue
                strokes[int(i)] = found
                continue
            if found and spread[i] < self.crack_spread:
                # A crack by its length alone, but one straight stroke: a scratch however long
                # (or, failing the ridge rules below, a glare band). `straight_strokes` found it
                # as straight as a scratch is, where a crack's arms, even two running off nearly
                # straight, zigzag. (A spread-out component is a crack by its shape: kept.)
                is_crack[i] = False
                continue
            kind = None
            if spread[i] < self.crack_spread:
                # Long, slim and not straight: one line along a smooth curve is a scratch (a key's
                # arc), a wandering one stays a crack.
                kind, traced_length, figures = self._traced_line(gray, points, float(theta[i]), low)
                if kind == "scratch":
                    is_crack[i] = False
                    curved[int(i)] = traced_length
                    continue
                if kind is None and figures.get("wander", math.inf) <= self.crack_min_wander_px:
                    # One smooth line, but no scratch's narrow ridge: as for a straight stroke
                    # failing the ridge rules, a glare band, not a crack (whose arms zigzag).
                    is_crack[i] = False
                    not_damage.append(int(i))
                    continue
            # A component lying mostly along one straight line that runs on a ridge wider than a
            # crack's arms is a glare band, with whatever meets it: a highlight on it, another
            # band crossing it. A slim one that is no single line (`_traced_line` found none) is
            # held to midway between a scratch's width and a crack's; a spread-out one to a
            # crack's. Cracks' arms are narrow wherever they run straight. Not a scratch's width:
            # a straight crack under a slightly soft focus measures wider (2705 synthetic crack
            # units re-rendered with blur sigma +0.1 .. +0.4: up to 4.38 px, where a 4.0 limit
            # dropped the crack of 1, 9, 59, 154 of them; midway none). Narrow glare bands crossed
            # by a wider one measure 4.09 .. 5.24: midway leaves 1 false crack in 2240 glare-only
            # units, 4.0 none.
            widest = self.crack_max_width_px
            if spread[i] < self.crack_spread and kind is None:
                widest = (self.ridge_max_width_px + self.crack_max_width_px) / 2
            if self._main_stroke_width(gray, points) > widest:
                is_crack[i] = False
                not_damage.append(int(i))
                continue
            # A crack is a groove or a bright line nearly as narrow as a scratch (its impact point
            # and junctions widen it a little), in whatever direction its arms run; a glare band's
            # crossing or the ring around a highlight is wider.
            if local_ridge_width(gray, points, 2.0 * self.line_radius_px) > self.crack_max_width_px:
                is_crack[i] = False
                not_damage.append(int(i))
        length = np.where(is_crack, np.maximum(count / self.stroke_width_px, major), length)
        for i, traced_length in curved.items():
            length[i] = traced_length
        width = count / length
        is_noise = ~is_crack & ((length < self.min_defect_px) | (spread > self.noise_spread))
        is_noise[not_damage] = True
        for i in strokes:
            is_noise[i] = True  # reported below, one scratch per stroke
        # A scratch is one continuous groove or ridge; short strokes of other origin pass the
        # moments and the width just as well. Along the stroke's middle 70% (its ends taper):
        # a ridge must stand out on both sides by at least `low`, nowhere fade out (dust specks
        # a few px apart merge into a "stroke" through the background between them, or through
        # the bright gap the line filter sees there), and be darker or brighter than both flanks
        # rather than only one (a stain's rim, a screen's corner: steps, not ridges).
        stroke_like = np.flatnonzero(~is_noise & ~is_crack)
        stroke_like = stroke_like[~np.isin(stroke_like, list(curved))]
        if stroke_like.size:
            direction = np.stack([np.cos(theta[stroke_like]), np.sin(theta[stroke_like])], axis=1)
            centres = np.stack([mean_x[stroke_like], mean_y[stroke_like]], axis=1)
            contrast, gap_ratio, two_sided = ridge_profiles(
                gray, centres, direction, 0.35 * length[stroke_like], self.line_radius_px + 1.0
            )
            # A glare band on glossy glass (a lamp's reflection, its edge blurred) is a ridge
            # too, but wider than a scratch: a scratch is a pixel or two wide before the optics.
            not_a_ridge = (
                (contrast < low) | (gap_ratio < self.ridge_min_gap_ratio) | (two_sided < self.ridge_min_two_sided)
            )
            ridge = np.flatnonzero(~not_a_ridge)
            ridge_width = ridge_widths(
                gray, centres[ridge], direction[ridge], 0.35 * length[stroke_like[ridge]], 2.0 * self.line_radius_px
            )
            not_a_ridge[ridge[ridge_width > self.ridge_max_width_px]] = True
            # The tip of a glare band, where the screen's edge cuts it off, is as narrow as a
            # scratch; but past the stroke's end the band runs on, wider. A scratch ends.
            ridge = np.flatnonzero(~not_a_ridge)
            half = 0.5 * major[stroke_like[ridge]]
            ends = np.concatenate([centres[ridge] - half[:, None] * direction[ridge],
                                   centres[ridge] + half[:, None] * direction[ridge]])
            outward = np.concatenate([-direction[ridge], direction[ridge]])
            glare_tip = self._runs_on_wider(gray, ends, outward, np.tile(contrast[ridge], 2))
            not_a_ridge[ridge] |= glare_tip.reshape(2, -1).any(axis=0)
            is_noise[stroke_like[not_a_ridge]] = True
            # Two scratches crossing at a shallow angle: too slim for a crack by the moments, one
            # stroke by them, but their centre line runs between the two (gaps, a wide "ridge").
            # Read as two straight strokes they are two scratches, if each is a narrow ridge.
            for i in stroke_like[not_a_ridge & (major[stroke_like] >= 6 * self.min_defect_px)]:
                # Slim by the moments, so no crack's star: crossings down to 7 degrees count.
                # Not straight along its axis: one narrow ridge along its own centre line that
                # wanders is a crack (two arms off an impact point, too short to be a crack by
                # length), even where its arms pass for two strokes crossing at a shallow angle
                # (whose pieces stand side by side, no single line); one along a smooth curve is a
                # bent scratch, unless it is two strokes crossing.
                points = pixels_of(int(i))
                kind, traced_length, _ = self._traced_line(gray, points, float(theta[i]), low)
                found = None if kind == "crack" else self._straight_strokes(points, 7.0)
                if found and len(found) == 2 and self._narrow_strokes(gray, found, low):
                    strokes[int(i)] = found
                    continue
                if kind == "crack":
                    is_crack[i], is_noise[i] = True, False
                    length[i] = max(count[i] / self.stroke_width_px, major[i])
                    width[i] = count[i] / length[i]
                elif kind == "scratch":
                    is_noise[i] = False
                    length[i], width[i] = traced_length, count[i] / max(traced_length, 1.0)

        ppm = self.px_per_mm
        keep = np.flatnonzero(~is_noise)
        centres_frame = np.stack([mean_x[keep] + device.left, mean_y[keep] + device.top], axis=1)
        centres_device = device.to_device(centres_frame) if keep.size else centres_frame
        # Lengths were measured on the camera's pixels; a tilted view shrinks the far side.
        scale = device.local_scale(centres_frame) if keep.size else np.ones(0)
        defects: list[Defect] = []
        for row, i in enumerate(keep):
            crack = bool(is_crack[i])
            contrast = min(1.0, (mean_response[i] - low) / (2 * high))
            # Strong contrast, clearly longer than the noise floor, and (for a scratch) one dominant
            # direction all make a finding more believable.
            shape_term = 1.0 if crack else float(dominant_share[i])
            size_term = min(1.0, length[i] / (3 * self.min_defect_px))
            confidence = float(np.clip(0.4 + 0.6 * contrast * size_term * (0.5 + 0.5 * shape_term), 0.0, 1.0))
            fx, fy = (float(v) for v in centres_frame[row])
            box = cv2.boxPoints(((fx, fy), (float(major[i]) + 4, float(minor[i]) + 4), math.degrees(float(theta[i]))))
            defects.append(
                Defect(
                    kind="crack" if crack else "scratch",
                    x_mm=float(centres_device[row, 0]) / ppm,
                    y_mm=float(centres_device[row, 1]) / ppm,
                    length_mm=float(length[i] * scale[row]) / ppm,
                    width_mm=float(width[i] * scale[row]) / ppm,
                    area_mm2=float(count[i] * scale[row] ** 2) / ppm**2,
                    confidence=confidence,
                    frame_px=(fx, fy),
                    outline_px=tuple((float(x), float(y)) for x, y in box),
                )
            )
        for i, found in strokes.items():
            contrast = min(1.0, (mean_response[i] - low) / (2 * high))
            for start, end, pixels in found:
                offset = np.array([device.left, device.top], np.float64)
                start_f, end_f = start + offset, end + offset
                centre = (start_f + end_f) / 2
                local = float(device.local_scale(centre[None])[0])
                stroke_px = float(np.hypot(*(end - start)))
                ends_device = device.to_device(np.array([start_f, end_f]))
                stroke_length = float(np.hypot(*(ends_device[1] - ends_device[0])))
                size_term = min(1.0, stroke_length / (3 * self.min_defect_px))
                box = cv2.boxPoints(
                    ((float(centre[0]), float(centre[1])), (stroke_px + 4, 6.0),
                     math.degrees(math.atan2(*(end - start)[::-1])))
                )
                centre_device = device.to_device(centre[None])[0]
                defects.append(
                    Defect(
                        kind="scratch",
                        x_mm=float(centre_device[0]) / ppm,
                        y_mm=float(centre_device[1]) / ppm,
                        length_mm=stroke_length / ppm,
                        width_mm=pixels * local / max(stroke_length, 1.0) / ppm,
                        area_mm2=pixels * local**2 / ppm**2,
                        confidence=float(np.clip(0.4 + 0.6 * contrast * size_term, 0.0, 1.0)),
                        frame_px=(float(centre[0]), float(centre[1])),
                        outline_px=tuple((float(x), float(y)) for x, y in box),
                    )
                )
        return defects

    def _straight_strokes(
        self, points: np.ndarray, min_crossing_deg: float
    ) -> list[tuple[np.ndarray, np.ndarray, int]] | None:
        """The component (its pixels, `_component_points`) as one straight stroke, or as two
        straight strokes that cross (an X, each running on past the crossing on both sides); None
        when it is neither, as a crack is: arms that wander, branch, or meet at an impact point.
        Returns (start, end, pixels) per stroke in the labels' px."""
        if points.shape[0] < 2 * self.min_defect_px:
            return None
        # The band holds a stroke's anti-aliased, blurred flanks, which answer the line filter too.
        band = self.stroke_width_px + 1.0
        found = straight_strokes(points, band, 3 * self.min_defect_px, min_crossing_deg=min_crossing_deg)
        return found or None

    def _main_stroke_width(self, gray: np.ndarray, points: np.ndarray) -> float:
        """The ridge width (`ridge_widths`, along its middle 70%) under the densest straight band
        of a component's pixels (N, 2), when that band holds at least half of them over
        `_MAIN_STROKE_MIN_SPAN` minimum defects' length; 0 when no such stroke."""
        band = self.stroke_width_px + 1.0
        if points.shape[0] < 2 * self.min_defect_px:
            return 0.0
        line = densest_line(points, band)
        if line is None:
            return 0.0
        mean, direction, normal = line
        on_line = np.abs((points - mean) @ normal) <= band
        along = (points[on_line] - mean) @ direction
        if on_line.mean() < _MAIN_STROKE_MIN_SHARE or along.size < 2:
            return 0.0
        span = float(along.max() - along.min())
        if span < _MAIN_STROKE_MIN_SPAN * self.min_defect_px:
            return 0.0
        centre = mean + direction * float(along.max() + along.min()) / 2
        return float(ridge_widths(
            gray, centre[None], direction[None], np.array([0.35 * span]), 2.0 * self.line_radius_px
        )[0])

    def _component_points(self, labels: np.ndarray, label: int, centre_x: float, centre_y: float, extent: float,
                          pixel_count: int = 0) -> np.ndarray:
        """Pixel centres (N, 2) of component `label`, found within `extent` + 4 px of its centre;
        `pixel_count`: the component's size, when known (room made for that many)."""
        reach = int(extent) + 4
        x0, y0 = max(int(centre_x) - reach, 0), max(int(centre_y) - reach, 0)
        window = labels[y0 : int(centre_y) + reach + 1, x0 : int(centre_x) + reach + 1]
        return ridge_kernels.label_pixels(window, label, x0, y0, pixel_count)

    def _traced_line(
        self, gray: np.ndarray, points: np.ndarray, theta: float, low: float
    ) -> tuple[str | None, float, dict[str, float]]:
        """A thin component read as one line along its own, possibly bent, centre line: ("crack",
        length) when the line is one narrow, unbroken, two-sided ridge that wanders (a crack's arms
        zigzag), ("scratch", length) when it is such a ridge along a smooth curve, (None, 0) when
        it is no single line (two lines side by side, a branch, a gap) or no narrow ridge along it.
        The figures measured come third (for diagnosis)."""
        direction = np.array([math.cos(theta), math.sin(theta)])
        band = self.stroke_width_px + 1.0
        along, offset, count, single = centre_line(points, direction, 2 * band)
        figures: dict[str, float] = {"single": float(single)}
        if not single or along.size < 4:
            return None, 0.0, figures
        normal = np.array([-direction[1], direction[0]])
        mean = points.mean(axis=0)
        path = mean + along[:, None] * direction + offset[:, None] * normal
        wandering = wander(along, offset, count)
        if wandering <= self.crack_min_wander_px:
            # Smooth: profiled across the parabola through the pieces, whose direction is the
            # line's own; the pieces' means, a pixel off here and there, would tilt each profile
            # and widen the ridge.
            path = mean + along[:, None] * direction + _parabola_through(along, offset, count)[:, None] * normal
        # The pieces at the ends hold the line's tapering tips: profiles there measure the end.
        inner = path[1:-1]
        contrast, gap_ratio, two_sided = ridge_profile_along(gray, inner, self.line_radius_px + 1.0)
        width = ridge_width_along(gray, inner, 2.0 * self.line_radius_px)
        figures.update(contrast=contrast, gap=gap_ratio, two=two_sided, width=width, wander=wandering)
        kind = "crack" if wandering > self.crack_min_wander_px else "scratch"
        # A line along a smooth arc, profiled across its own direction everywhere, may measure a
        # little wider than a straight one: its pixels' rounding lies on both sides of the arc.
        # Evidence enough for a bent scratch, once the ridge ends where the line does (a glare
        # band runs on); a crack's width limit stays that of a scratch.
        widest = self.ridge_max_width_px if kind == "crack" else self.bent_scratch_max_width_px
        if (
            contrast < low or gap_ratio < self.ridge_min_gap_ratio or two_sided < self.ridge_min_two_sided
            or width > widest
        ):
            return None, 0.0, figures
        pieces = np.diff(path, axis=0)
        projected = (points - mean) @ direction
        if kind == "scratch":
            # Out from the end pieces along their own direction, from the outermost pixels.
            first, last = path[0] - path[1], path[-1] - path[-2]
            outward = np.stack([first / max(math.hypot(*first), 1e-9), last / max(math.hypot(*last), 1e-9)])
            ends = np.stack([path[0], path[-1]]) + outward * np.array(
                [[along[0] - projected.min()], [projected.max() - along[-1]]]
            )
            runs_on = self._runs_on_wider(gray, ends, outward, np.full(2, contrast))
            figures["runs_on"] = float(runs_on.any())
            if runs_on.any():
                return None, 0.0, figures
        # Out to the outermost pixels, less the round ends (half a stroke width each).
        length = float(np.hypot(pieces[:, 0], pieces[:, 1]).sum()) + (along[0] - projected.min()) + (
            projected.max() - along[-1]
        ) - self.stroke_width_px
        return kind, max(length, 0.0), figures

    def _runs_on_wider(
        self, gray: np.ndarray, ends: np.ndarray, outward: np.ndarray, contrast: np.ndarray
    ) -> np.ndarray:
        """Per stroke end (K, 2 px, with the unit direction `outward` away from the stroke), whether
        a ridge runs on past it that is wider than any scratch: a fifth of the stroke's `contrast`
        or more, and wider than `ridge_max_width_px` by 1 px. A glare band's tip does, a scratch
        ends; one scratch running into another meets a ridge as narrow as itself."""
        run_contrast, run_width = ridge_run_on(gray, ends, outward, 2.0 * self.line_radius_px)
        return (run_contrast >= _RUN_ON_SHARE * contrast) & (run_width > self.ridge_max_width_px + 1.5)

    def _narrow_strokes(self, gray: np.ndarray, found: list[tuple[np.ndarray, np.ndarray, int]], low: float) -> bool:
        """Both crossing strokes (start, end in `gray`'s px) stand out by `low`, and no part of
        them clear of the other (which would widen the profile) is wider than a scratch."""
        starts = np.array([start for start, _, _ in found])
        ends = np.array([end for _, end, _ in found])
        spans = np.hypot(*(ends - starts).T)
        directions = (ends - starts) / np.maximum(spans, 1e-9)[:, None]
        flank = self.line_radius_px + 1.0
        # The legs: each stroke either side of the crossing, less the stretch where the other
        # stroke lies within the profiles' reach (it would pose as a flank or a wider ridge).
        reach = 2.0 * self.line_radius_px
        matrix = np.array([directions[0], -directions[1]]).T
        sine = abs(float(np.linalg.det(matrix)))
        t, u = np.linalg.solve(matrix, starts[1] - starts[0])
        clear = (reach + 2.0) / sine
        legs = []
        for k, position in enumerate((t, u)):
            for a, b in ((0.0, position - clear), (position + clear, spans[k])):
                if b - a >= 6.0:
                    legs.append((starts[k] + directions[k] * (a + b) / 2, directions[k], 0.45 * (b - a)))
        if not legs:
            # Too shallow a crossing to see either stroke on its own (the other is the flank
            # everywhere): two straight, unbroken strokes are the evidence there is.
            return True
        centres, leg_directions, halves = (np.array(v) for v in zip(*legs, strict=True))
        contrast, _, _ = ridge_profiles(gray, centres, leg_directions, halves, flank)
        width = ridge_widths(gray, centres, leg_directions, halves, reach)
        return bool(np.all(contrast >= low) and np.all(width <= self.ridge_max_width_px))

    def _outline(self, device: DevicePose) -> list[Defect]:
        """Inward runs of the outline against each side's straight line, corners excluded."""
        ppm = self.px_per_mm
        points = device.to_device(device.contour_f)
        w, h = device.width_px, device.height_px
        band = max(self.missing_depth_mm * 3, 12.0) * ppm
        corner = self.outline_corner_mm * ppm
        defects: list[Defect] = []
        bin_px = max(1.0, ppm * 0.5)
        # Per side (0 top, 1 right, 2 bottom, 3 left) the deepest outline point in each bin along
        # it: a notch's walls put several points there. One Numba pass for all four sides.
        profiles = kernels.outline_depths(points, w, h, band, corner, bin_px)
        for side, depth in enumerate(profiles):
            if depth is None:
                continue
            n_bins = depth.size
            known = np.isfinite(depth)
            if np.count_nonzero(known) < 8:
                continue
            u = np.arange(n_bins, dtype=np.float64)
            # A straight baseline through the undamaged edge (a tilted camera makes it slope).
            # The rectangle touches the outermost points, so the edge is the shallowest part of
            # the profile even when a missing piece takes most of the side.
            base_fit = known & (depth <= _percentile(depth[known], 20.0) + ppm * 0.7)
            if np.count_nonzero(base_fit) < 4:
                continue
            slope, offset = _line_fit(u[base_fit], depth[base_fit])
            refit = known & (np.abs(depth - (slope * u + offset)) < ppm * 0.5)
            if np.count_nonzero(refit) >= 4:
                slope, offset = _line_fit(u[refit], depth[refit])
            residual = np.where(known, depth - (slope * u + offset), 0.0)
            inside = residual > self.outline_min_depth_mm * ppm
            for start, stop in _runs(inside):
                run_len = (stop - start) * bin_px / ppm
                if run_len < self.outline_min_length_mm:
                    continue
                seg = residual[start:stop]
                depth_mm = float(seg.max()) / ppm
                # Width at half depth: steep walls (chip) keep it close to the full run.
                half = np.count_nonzero(seg > seg.max() / 2) * bin_px / ppm
                if depth_mm >= self.missing_depth_mm or run_len >= self.missing_length_mm:
                    kind = "missing_part"
                elif depth_mm / max(half, 1e-6) >= 0.6:
                    kind = "chip"
                else:
                    kind = "dent"
                centre_along = corner + (start + stop) / 2 * bin_px
                centre_in = depth_mm * ppm / 2
                cx, cy = _from_side(side, centre_along, centre_in, w, h)
                quad = np.array(
                    [_from_side(side, corner + a * bin_px, b, w, h)
                     for a, b in ((start - 1, -4), (stop + 1, -4), (stop + 1, depth_mm * ppm + 4),
                                  (start - 1, depth_mm * ppm + 4))]
                )
                frame_quad = device.to_frame(quad)
                fx, fy = device.to_frame(np.array([[cx, cy]]))[0]
                defects.append(
                    Defect(
                        kind=kind,  # type: ignore[arg-type]
                        x_mm=cx / ppm,
                        y_mm=cy / ppm,
                        length_mm=run_len,
                        width_mm=depth_mm,
                        area_mm2=float(seg.sum()) * bin_px / ppm**2,
                        confidence=float(np.clip(0.5 + 0.5 * (depth_mm - self.outline_min_depth_mm), 0.5, 1.0)),
                        frame_px=(float(fx), float(fy)),
                        outline_px=tuple((float(x), float(y)) for x, y in frame_quad),
                    )
                )
        return defects + self._corners(device, points)

    def _corners(self, device: DevicePose, points: np.ndarray) -> list[Defect]:
        """Chips at the corners, which the side check leaves out: every corner should follow the
        same rounding. Its radius is measured on the corners themselves (the second smallest
        cut-off of the four, so up to two damaged corners cannot inflate it); an outline point
        deeper inside than that rounded corner puts it there, is missing material."""
        ppm = self.px_per_mm
        w, h = device.width_px, device.height_px
        zone = self.outline_corner_mm * ppm
        if min(w, h) <= 2 * zone:
            return []
        # Each corner's outline points, in coordinates running inwards from that corner; picked
        # once, as most of the outline lies along the sides, outside every corner's zone.
        x, y = points[:, 0], points[:, 1]
        near_left, near_right, near_top, near_bottom = x < zone, x > w - zone, y < zone, y > h - zone
        local: list[tuple[np.ndarray, np.ndarray]] = []
        for flip_x, flip_y in ((False, False), (True, False), (True, True), (False, True)):
            in_zone = (near_right if flip_x else near_left) & (near_bottom if flip_y else near_top)
            if np.count_nonzero(in_zone) < 4:
                return []
            u = w - x[in_zone] if flip_x else x[in_zone]
            v = h - y[in_zone] if flip_y else y[in_zone]
            local.append((u, v))
        # Along the diagonal a corner of radius r is cut back by r (sqrt 2 - 1).
        cutoffs = [float(np.min(np.hypot(u, v))) for u, v in local]
        radius = min(sorted(cutoffs)[1] / (math.sqrt(2) - 1), zone)
        defects: list[Defect] = []
        for corner_index, (u, v) in enumerate(local):
            on_arc = (u < radius) & (v < radius)
            depth = np.where(on_arc, radius - np.hypot(radius - u, radius - v), np.minimum(u, v))
            missing = depth > self.outline_min_depth_mm * ppm
            if not missing.any():
                continue
            # The damaged stretch of outline, measured along the contour's own points.
            extent = np.hypot(np.ptp(u[missing]), np.ptp(v[missing])) / ppm
            if extent < self.outline_min_length_mm:
                continue
            depth_mm = float(depth.max()) / ppm
            deepest = int(np.argmax(depth))
            du, dv = u[deepest], v[deepest]
            cx = w - du if corner_index in (1, 2) else du
            cy = h - dv if corner_index in (2, 3) else dv
            kind = "missing_part" if depth_mm >= self.missing_depth_mm or extent >= self.missing_length_mm else "chip"
            corner_xy = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)[corner_index]
            box = np.array([corner_xy, [cx, cy]])
            lo, hi = box.min(axis=0) - 4, box.max(axis=0) + 4
            quad = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
            fx, fy = device.to_frame(np.array([[cx, cy]]))[0]
            defects.append(
                Defect(
                    kind=kind,  # type: ignore[arg-type]
                    x_mm=float(cx) / ppm,
                    y_mm=float(cy) / ppm,
                    length_mm=float(extent),
                    width_mm=depth_mm,
                    area_mm2=float(depth[missing].sum()) * 2.0 / ppm**2,
                    confidence=float(np.clip(0.5 + 0.5 * (depth_mm - self.outline_min_depth_mm), 0.5, 1.0)),
                    frame_px=(float(fx), float(fy)),
                    outline_px=tuple((float(x), float(y)) for x, y in device.to_frame(quad)),
                )
            )
        return defects


def compare_with_catalog(
    report: DamageReport, expected_size_mm: tuple[float, float], tolerance_mm: float = 3.0, tolerance_pct: float = 2.0
) -> DamageReport:
    """Add a missing part when the measured outline is smaller than the catalog's (either side,
    beyond the tolerance), an "oversize" finding when it is larger. Pure; applied after the check,
    once the unit's identity is known."""
    if not report.device_found or report.error:
        return report
    expected = sorted(float(v) for v in expected_size_mm)
    if len(expected) != 2 or not all(math.isfinite(v) and v > 0 for v in expected):
        return report
    measured = sorted((report.device_width_mm, report.device_height_mm))
    report = replace(report, expected_size_mm=(expected[1], expected[0]))
    mismatch = [
        (abs(e - m), e, m > e)
        for m, e in zip(measured, expected, strict=True)
        if abs(e - m) > max(tolerance_mm, e * tolerance_pct / 100)
    ]
    if not mismatch:
        return report
    shortfall, side, larger = max(mismatch)
    corners = report.device_corners_px
    centre = (sum(p[0] for p in corners) / 4, sum(p[1] for p in corners) / 4) if len(corners) == 4 else (0.0, 0.0)
    defect = Defect(
        kind="oversize" if larger else "missing_part",
        x_mm=report.device_width_mm / 2,
        y_mm=report.device_height_mm / 2,
        length_mm=side,
        width_mm=shortfall,
        area_mm2=shortfall * side,
        confidence=float(np.clip(shortfall / (2 * tolerance_mm), 0.5, 1.0)),
        frame_px=centre,
        outline_px=corners,
    )
    defects = sorted([*report.defects, defect], key=_defect_order)
    return report.with_defects(defects, damage_score(defects))


def ridge_profiles(
    gray: np.ndarray, centres: np.ndarray, directions: np.ndarray, half_lengths: np.ndarray, flank_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grey-level profile along each stroke's centre line, as three figures per stroke.

    Stroke k runs through `centres[k]` (x, y px) along the unit vector `directions[k]`; it is sampled
    every pixel from -`half_lengths[k]` to +`half_lengths[k]` (at least the centre). At each sample
    the stroke's value is the darkest (or brightest) of five points across it within 1 px, which
    forgives a centre line a pixel off; the flanks are the points `flank_px` away on either side.
    Polarity (dark groove or bright ridge) is the one with the larger total contrast.

    Returns per stroke: the mean two-sided contrast (by how much the stroke beats the nearer of
    its flanks, grey levels); the weakest sample's two-sided contrast over that mean (a gap in the
    stroke brings it to 0 or below); and two-sided over one-sided contrast, summed over the
    samples (1 for a line on a flat surface, about 0 for a step edge, whose far flank is level
    with the stroke). Pure: no state, any number of strokes; a stroke without contrast gets -inf.
    """
    n = centres.shape[0]
    if n == 0:
        empty = np.zeros(0, np.float64)
        return empty, empty.copy(), empty.copy()
    steps = np.floor(np.maximum(np.nan_to_num(half_lengths, nan=0.0, posinf=0.0, neginf=0.0), 0.0)).astype(np.int64)
    counts = 2 * steps + 1
    owner = np.repeat(np.arange(n), counts)
    first = np.cumsum(counts) - counts
    along = (np.arange(owner.size) - first[owner] - steps[owner]).astype(np.float64)
    unit = directions[owner]
    normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
    points = centres[owner] + along[:, None] * unit
    return ridge_kernels.profile_figures(gray, points, normal, owner, n, flank_px)


def ridge_profile_along(gray: np.ndarray, path: np.ndarray, flank_px: float) -> tuple[float, float, float]:
    """`ridge_profiles`' three figures for one stroke that follows the polyline `path` (M >= 2
    points, x, y px) instead of a straight line: sampled every pixel along it, across each piece's
    own direction. For a bent or wandering line, whose straight axis runs off it."""
    points, tangents = ridge_kernels.path_samples(path, 1.0)
    if points.shape[0] == 0:
        return -math.inf, -math.inf, -math.inf
    normal = np.stack([-tangents[:, 1], tangents[:, 0]], axis=1)
    owner = np.zeros(points.shape[0], np.int64)
    mean, gap_ratio, two_sided = ridge_kernels.profile_figures(gray, points, normal, owner, 1, flank_px)
    return float(mean[0]), float(gap_ratio[0]), float(two_sided[0])


_WIDTH_STRIDE_PX = 2.0
# Past a stroke's end (px from its outermost pixels): where a glare band's ridge still runs on.
_RUN_ON_PX = np.arange(3.0, 13.0)
_RUN_ON_SHARE = 0.2  # of the stroke's own contrast: a ridge running on, not noise


def ridge_run_on(
    gray: np.ndarray, ends: np.ndarray, outward: np.ndarray, reach_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ridge, if any, past each stroke end `ends` (K, 2; x, y px) in the unit direction
    `outward` (K, 2) away from the stroke: sampled every pixel from 3 to 12 px past the end, its
    mean two-sided contrast (as `ridge_profiles`, flanks `reach_px` away: wide enough for a band)
    and median width (as `ridge_widths`, out to `reach_px`). Pure; float64 (K,) each."""
    ends = np.asarray(ends, np.float64).reshape(-1, 2)
    outward = np.asarray(outward, np.float64).reshape(-1, 2)
    k, m = ends.shape[0], _RUN_ON_PX.size
    if k == 0:
        return np.zeros(0), np.zeros(0)
    points = (ends[:, None, :] + _RUN_ON_PX[None, :, None] * outward[:, None, :]).reshape(-1, 2)
    normal = np.repeat(np.stack([-outward[:, 1], outward[:, 0]], axis=1), m, axis=0)
    owner = np.repeat(np.arange(k), m)
    contrast = ridge_kernels.profile_figures(gray, points, normal, owner, k, reach_px)[0]
    widths = ridge_kernels.widths_at(gray, points, normal, owner, k, reach_px).reshape(k, m)
    # Samples are few and ordered per end: the median by one sort along each row.
    widths.sort(axis=1)
    return contrast, 0.5 * (widths[:, (m - 1) // 2] + widths[:, m // 2])


def ridge_widths(
    gray: np.ndarray, centres: np.ndarray, directions: np.ndarray, half_lengths: np.ndarray, reach_px: float
) -> np.ndarray:
    """The width (px) of each stroke's ridge across its centre line; strokes as in `ridge_profiles`.

    At each sample along the stroke the grey profile across it, every half pixel out to
    `reach_px` either side, is taken against the straight line between its two ends; the width is
    that of its peak where it stands above half its height (a one-pixel line blurred by the
    optics is about 2 px wide, a glare band as wide as it is). Per stroke the median over the
    samples, which the crossing of another stroke or a speck beside it does not move. Pure; a
    stroke without contrast gets inf.
    """
    n = centres.shape[0]
    if n == 0:
        return np.zeros(0, np.float64)
    # Every other pixel along the stroke: a median needs no more, and the profile is the cost.
    steps = np.floor(
        np.maximum(np.nan_to_num(half_lengths, nan=0.0, posinf=0.0, neginf=0.0), 0.0) / _WIDTH_STRIDE_PX
    ).astype(np.int64)
    counts = 2 * steps + 1
    owner = np.repeat(np.arange(n), counts)
    first = np.cumsum(counts) - counts
    along = (np.arange(owner.size) - first[owner] - steps[owner]).astype(np.float64) * _WIDTH_STRIDE_PX
    unit = directions[owner]
    normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
    points = centres[owner] + along[:, None] * unit
    width = ridge_kernels.widths_at(gray, points, normal, owner, n, reach_px)
    order = np.lexsort((width, owner))  # each stroke's widths in a row, ascending
    return width[order][first + steps]


def ridge_width_along(gray: np.ndarray, path: np.ndarray, reach_px: float) -> float:
    """`ridge_widths` for one stroke following the polyline `path` (M >= 2 points), each profile
    across the piece it lies on; inf for a path without length."""
    points, tangents = ridge_kernels.path_samples(path, _WIDTH_STRIDE_PX)
    if points.shape[0] == 0:
        return math.inf
    normal = np.stack([-tangents[:, 1], tangents[:, 0]], axis=1)
    owner = np.zeros(points.shape[0], np.int64)
    return _median(ridge_kernels.widths_at(gray, points, normal, owner, 1, reach_px))


def local_ridge_width(gray: np.ndarray, points: np.ndarray, reach_px: float, samples: int = 48,
                      neighbourhood_px: float = 5.0) -> float:
    """The median ridge width (as `ridge_widths`) of a component of any shape, from its pixels
    (N, 2, integer x, y): at up to `samples` of them, across the direction its pixels within
    `neighbourhood_px` run in there (their principal axis). For a crack's branching arms, which no
    one straight axis follows; inf without pixels."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if points.shape[0] == 0:
        return math.inf
    picked = points[np.linspace(0, points.shape[0] - 1, min(samples, points.shape[0])).astype(np.int64)]
    # Neighbours are looked up in a mask of the component's pixels, one disc of offsets per sample,
    # rather than found by distances to all N pixels: a crack's thousands of pixels cost nothing.
    reach = math.floor(max(neighbourhood_px, 0.0))
    cells = np.rint(points).astype(np.int64)
    origin = cells.min(axis=0) - reach
    size = cells.max(axis=0) - origin + reach + 1
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[cells[:, 1] - origin[1], cells[:, 0] - origin[0]] = 1
    normal = ridge_kernels.neighbourhood_normals(mask, np.rint(picked).astype(np.int64) - origin, neighbourhood_px)
    # One polarity for the whole component: a crack is a groove (or a bright line) throughout.
    widths = ridge_kernels.widths_at(gray, picked, normal, np.zeros(picked.shape[0], np.int64), 1, reach_px)
    return _median(widths)


def _median(values: np.ndarray) -> float:
    """`np.median` of a non-empty 1-D array without NaN, to the last bit, on one partition: the
    general function costs more than the widths it takes the median of."""
    middle = values.size // 2
    if values.size % 2:
        return float(np.partition(values, middle)[middle])
    ordered = np.partition(values, (middle - 1, middle))
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def centre_line(
    points: np.ndarray, direction: np.ndarray, step: float, split_px: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """The centre line of a thin component's pixel centres (N, 2) that runs roughly along the unit
    vector `direction`: the mean of its pixels in each `step`-long piece along that axis.

    Returns (along, offset, count, single): per piece its position along the axis and the mean
    offset across it (px, from the pixels' mean), its pixel count; `single` is False when the pixels
    are not one line: a piece without pixels (a gap), or pixels of one piece apart across the axis
    by more than `split_px` (two lines side by side, the legs of a shallow crossing, or a line that
    turns back). Pure geometry."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    direction = np.asarray(direction, np.float64)
    empty = np.zeros(0, np.float64)
    if points.shape[0] < 2 or not (np.isfinite(points).all() and np.isfinite(direction).all()) or step <= 0:
        return empty, empty, empty, False
    normal = np.array([-direction[1], direction[0]])
    centred = points - points.mean(axis=0)
    along, across = centred @ direction, centred @ normal
    piece = np.floor((along - along.min()) / step).astype(np.int64)
    counts = np.bincount(piece).astype(np.float64)
    offsets = np.bincount(piece, weights=across) / np.maximum(counts, 1)
    positions = np.bincount(piece, weights=along) / np.maximum(counts, 1)
    order = np.lexsort((across, piece))
    same_piece = piece[order][1:] == piece[order][:-1]
    split = bool(np.any(same_piece & (np.diff(across[order]) > split_px)))
    single = bool(counts.min() > 0) and not split
    filled = counts > 0
    return positions[filled], offsets[filled], counts[filled], single


def wander(along: np.ndarray, offset: np.ndarray, count: np.ndarray) -> float:
    """Peak-to-peak offset (px) of a centre line's pieces (as `centre_line` gives them) about the
    smooth curve (a parabola) through them: about 0 for a straight or evenly bent line (a
    scratch's arc), pixels for a crack's arms, which turn this way and that. Pieces holding few
    pixels (the tapering ends) are left out; fewer than 4 pieces give 0."""
    full = count >= max(3.0, 0.5 * float(np.median(count))) if count.size else count.astype(bool)
    if np.count_nonzero(full) < 4:
        return 0.0
    residual = offset[full] - _parabola_through(along[full], offset[full])
    return float(residual.max() - residual.min())


def _parabola_through(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """The least-squares parabola through (x, y) (at least 3 distinct x), with `weight` per point
    on the squared residuals, evaluated at x. By its 3 x 3 normal equations on x centred and scaled
    to a unit range, where they are well conditioned: a tenth of `np.polyfit`'s cost."""
    scale = max(float(np.ptp(x)), 1.0)
    t = (x - x.mean()) / scale
    basis = np.stack([t * t, t, np.ones_like(t)])
    weighted = basis * weight if weight is not None else basis
    return np.linalg.solve(weighted @ basis.T, weighted @ y) @ basis


# A crack candidate's densest straight band is its main stroke if it holds this share of its
# pixels over this many minimum defects' length (`DamageChecker._main_stroke_width`).
_MAIN_STROKE_MIN_SHARE = 0.5
_MAIN_STROKE_MIN_SPAN = 3.0
_STROKE_ANGLES = np.deg2rad(np.arange(0.0, 180.0, 2.0))
_STROKE_NORMALS = np.stack([-np.sin(_STROKE_ANGLES), np.cos(_STROKE_ANGLES)], axis=1)


def densest_line(points: np.ndarray, band: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The straight line through the most of `points` (N, 2): a Hough vote over 90 directions for
    the densest band `band` px either side of a line, refined by a least-squares fit (principal
    axis) of that band's points. Returns (a point on it, its unit direction, its unit normal), or
    None when the band holds fewer than 2 points."""
    # The votes of all directions and the points of the best band, two adjacent bins (a stroke
    # straddling a bin edge still counts whole), in one Numba pass: the NumPy way, a bincount
    # over a row per direction, cost 0.5 ms per stroke. Ties go to the first direction and bin.
    _, in_band = ridge_kernels.densest_band(points, ridge_kernels.point_mean(points), _STROKE_NORMALS, band)
    chosen = points[in_band]
    if chosen.shape[0] < 2:
        return None
    mean = ridge_kernels.point_mean(chosen)
    direction = np.linalg.svd(chosen - mean, full_matrices=False)[2][0]
    return mean, direction, np.array([-direction[1], direction[0]])


def straight_strokes(
    points: np.ndarray, band: float, min_length: float, cover: float = 0.9, max_wobble: float = 1.8,
    min_crossing_deg: float = 11.5,
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Explain a set of pixel centres (N, 2) as one straight stroke or two crossing ones.

    Each stroke is the densest straight band `band` px either side of a line (a coarse Hough vote
    over 90 directions, refined by a least-squares fit of its pixels) and must be one unbroken run
    at least `min_length` long. Two strokes must cross (at `min_crossing_deg` or more), each passing the
    crossing by a few band widths on both sides (a crack's arms meet at their ends instead), and
    every stroke, a lone one too, must be straight: its centre line drifts by at most `max_wobble`
    px (a crack's arms, even two running off nearly straight, zigzag by more). Together the
    strokes must hold `cover` of the points. Returns [(start, end, pixel count), ...], or [] when
    no such reading fits. Pure geometry, no image access.
    """
    every = np.asarray(points, np.float64).reshape(-1, 2)
    remaining = every
    total = every.shape[0]
    if total == 0:
        return []
    strokes: list[tuple[np.ndarray, np.ndarray, int]] = []
    lines: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(2):
        if remaining.shape[0] < min_length:
            break
        line = densest_line(remaining, band)
        if line is None:
            break
        mean, direction, normal = line
        # Extent and continuity over all the points: the first stroke took the crossing's pixels.
        on_line = np.abs((every - mean) @ normal) <= band
        along = np.sort((every[on_line] - mean) @ direction)
        if along.size < 2 or along[-1] - along[0] < min_length or np.max(np.diff(along)) > 2 * band + 1:
            break
        strokes.append((mean + along[0] * direction, mean + along[-1] * direction, int(on_line.sum())))
        lines.append((mean, direction))
        remaining = remaining[np.abs((remaining - mean) @ normal) > band]
        if remaining.shape[0] <= (1 - cover) * total:
            break
    if not strokes or remaining.shape[0] > (1 - cover) * total:
        return []
    if len(strokes) == 1:
        # A crack of two arms running off in nearly opposite directions fits one band too; its
        # arms zigzag, a scratch does not.
        start, _, _ = strokes[0]
        if _wobble(every, start, lines[0][1], -math.inf, band) > max_wobble:
            return []
    if len(strokes) == 2:
        (p, d), (q, e) = lines
        matrix = np.array([d, -e]).T
        sine = abs(float(np.linalg.det(matrix)))
        if sine < math.sin(math.radians(min_crossing_deg)):  # nearly parallel: not a crossing
            return []
        t, _ = np.linalg.solve(matrix, q - p)
        crossing = p + t * d
        # Within this distance of the crossing the other stroke runs inside this one's band: the
        # shallower the crossing, the longer the stretch. Each stroke must run on past it, on
        # both sides: a crack's arms meeting at a shallow bend would only reach into it.
        overlap = band / sine
        for (start, end, _), direction in zip(strokes, (d, e), strict=True):
            position = float((crossing - start) @ direction)
            stroke_length = float((end - start) @ direction)
            leg = overlap + 2 * band
            if not leg <= position <= stroke_length - leg:
                return []
            # A crack's arms cross too, now and then, but they wander: the stroke's centre line,
            # piece by piece (away from the crossing, where the other stroke's pixels, a band
            # and their own width off, pull it), drifts by pixels where a scratch's stays within one.
            if _wobble(every, start, direction, position, band, 2 * overlap) > max_wobble:
                return []
    return strokes


def _wobble(
    points: np.ndarray, start: np.ndarray, direction: np.ndarray, skip_at: float, band: float, skip: float = 0.0
) -> float:
    """Peak-to-peak offset (px) of a stroke's centre line, measured in pieces of 2 bands' length,
    leaving out `skip` px (at least 2 bands) either side of `skip_at`."""
    normal = np.array([-direction[1], direction[0]])
    offset = (points - start) @ normal
    along = (points - start) @ direction
    keep = (np.abs(offset) <= band) & (np.abs(along - skip_at) > max(2 * band, skip))
    pieces = np.floor(along[keep] / (2 * band)).astype(np.int64)
    if pieces.size == 0:
        return 0.0
    pieces -= pieces.min()
    counts = np.bincount(pieces)
    sums = np.bincount(pieces, weights=offset[keep])
    # A piece cut short (the stroke's tapering end, the edge of the skipped stretch) holds a few
    # stray pixels whose mean says nothing about the centre line.
    full = counts >= max(4.0, 0.5 * float(np.median(counts[counts > 0])))
    if np.count_nonzero(full) < 2:
        return 0.0
    means = sums[full] / counts[full]
    if skip > 0 and np.count_nonzero(full) >= 3:
        # About the straight line through the pieces: where another stroke runs close by (a
        # shallow crossing) the fitted direction is a little off, which is no wobble.
        slope, offset = _line_fit(np.flatnonzero(full).astype(np.float64), means)
        means = means - (slope * np.flatnonzero(full) + offset)
    return float(means.max() - means.min())


def _camera_homography(matrix: object) -> np.ndarray | None:
    if matrix is None:
        return None
    array = np.asarray(matrix, np.float64)
    problem = ValueError("camera_homography must be an invertible 3x3 matrix of finite numbers")
    if array.shape != (3, 3) or not np.isfinite(array).all() or not np.abs(array).max() > 0:
        raise problem
    # Scaled to its largest entry 1 (a homography means the same at any scale), as the station
    # file's validation does: dividing by a tiny corner entry could overflow. Invertible means
    # well-conditioned, a test that does not depend on the scale (a determinant does).
    array = array / np.abs(array).max()
    if not np.linalg.cond(array) < MAX_HOMOGRAPHY_CONDITION:
        raise problem
    return array


def _densify(polygon: np.ndarray, step: float) -> np.ndarray:
    """Points every `step` px along a closed polygon (N, 2), its vertices included."""
    if polygon.shape[0] == 0:
        return polygon
    edges = np.roll(polygon, -1, axis=0) - polygon
    counts = np.maximum(1, np.ceil(np.hypot(edges[:, 0], edges[:, 1]) / step)).astype(np.int64)
    owner = np.repeat(np.arange(polygon.shape[0]), counts)
    # Position of each point within its edge, 0 .. (count - 1) / count.
    first = np.cumsum(counts) - counts
    fraction = (np.arange(owner.size) - first[owner]) / counts[owner]
    return polygon[owner] + fraction[:, None] * edges[owner]


def _side_coordinates(points: np.ndarray, side: int, w: float, h: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(along, inward, side length) of canonical points for side 0 top, 1 right, 2 bottom, 3 left."""
    if side == 0:
        return points[:, 0], points[:, 1], w
    if side == 1:
        return points[:, 1], w - points[:, 0], h
    if side == 2:
        return points[:, 0], h - points[:, 1], w
    return points[:, 1], points[:, 0], h


def _from_side(side: int, along: float, inward: float, w: float, h: float) -> tuple[float, float]:
    if side == 0:
        return along, inward
    if side == 1:
        return w - inward, along
    if side == 2:
        return along, h - inward
    return inward, along


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares straight line y = slope * x + offset, in closed form: np.polyfit's general
    solver (an SVD) cost 0.2 ms a call, eight calls per unit. Needs two distinct x values."""
    x_mean, y_mean = float(x.mean()), float(y.mean())
    dx = x - x_mean
    slope = float(dx @ (y - y_mean)) / float(dx @ dx)
    return slope, y_mean - slope * x_mean


def _percentile(values: np.ndarray, percent: float) -> float:
    """`np.percentile(values, percent)` (its default, linear method), to the last bit: the same
    arithmetic on one partition, without the general function's overhead (0.1 ms a call, four
    calls per unit). `values` must be non-empty and free of NaN."""
    n = values.size
    position = (n - 1) * (percent / 100)
    if position >= n - 1:
        return float(values.max())
    below = math.floor(position)
    ordered = np.partition(values, (below, below + 1))
    low, high = float(ordered[below]), float(ordered[below + 1])
    weight = position - below
    step = high - low
    # numpy interpolates from the nearer end, which keeps the result within [low, high].
    return high - step * (1 - weight) if weight >= 0.5 else low + step * weight


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in the 1-D bool array `flags`."""
    if not flags.any():  # most sides of most units: no run at all
        return []
    padded = np.zeros(flags.size + 2, np.bool_)
    padded[1:-1] = flags
    # Plain ints from one tolist(): iterating NumPy arrays makes a scalar object per element.
    edges = np.flatnonzero(padded[1:] != padded[:-1]).tolist()
    return list(zip(edges[::2], edges[1::2], strict=True))


_KIND_ORDER = {"missing_part": 0, "oversize": 0, "crack": 1, "chip": 2, "dent": 3, "scratch": 4}


def _defect_order(d: Defect) -> tuple[int, float]:
    return (_KIND_ORDER.get(d.kind, 9), -d.length_mm)


def _whole_frame_pose(frame: np.ndarray) -> DevicePose:
    h, w = frame.shape[:2]
    contour = np.array([[[0, 0]], [[w - 1, 0]], [[w - 1, h - 1]], [[0, h - 1]]], np.int32)
    # Canonical px are the image's own, shifted so the outline (pixel borders) starts at 0.
    homography = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], np.float64)
    return DevicePose(0, 0, w, h, ((w - 1) / 2, (h - 1) / 2), 0.0, float(w), float(h), contour,
                      contour.reshape(-1, 2).astype(np.float64), homography)


def pose_from_quad(
    corners: np.ndarray, frame_shape: tuple[int, ...], *, corner_radius: float = 0.06,
    camera_homography: np.ndarray | None = None,
) -> DevicePose:
    """The pose of a unit whose four outline corners (top-left, top-right, bottom-right,
    bottom-left, frame px) were found some other way than on the belt. Its contour is the ideal
    outline, a rectangle with corners rounded by `corner_radius` of the short side: the actual
    outline is not known to the pixel, so the outline check finds nothing on it (callers say that
    dents and chips were not assessed), while the rounding keeps the background in the corners
    out of the surface inspection."""
    quad = np.asarray(corners, np.float64).reshape(4, 2)
    sides = np.roll(quad, -1, axis=0) - quad
    turns = sides[:, 0] * np.roll(sides, -1, axis=0)[:, 1] - sides[:, 1] * np.roll(sides, -1, axis=0)[:, 0]
    # Only a convex quadrilateral is the image of a rectangle; any other has no sane homography.
    if not np.isfinite(quad).all() or not (np.all(turns > 0) or np.all(turns < 0)):
        raise ValueError("outline corners do not form a convex quadrilateral")
    plane = quad if camera_homography is None else _apply_homography(np.linalg.inv(camera_homography), quad)
    width = float(np.linalg.norm(plane[1] - plane[0]) + np.linalg.norm(plane[2] - plane[3])) / 2
    height = float(np.linalg.norm(plane[3] - plane[0]) + np.linalg.norm(plane[2] - plane[1])) / 2
    if not (math.isfinite(width) and math.isfinite(height)) or min(width, height) < 8:
        raise ValueError(f"outline too small or degenerate: {width:.1f} x {height:.1f} px")
    canonical = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    homography = cv2.getPerspectiveTransform(canonical, quad.astype(np.float32)).astype(np.float64)
    radius = corner_radius * min(width, height)
    arcs = []
    for cx, cy, start in ((width - radius, height - radius, 0), (radius, height - radius, 90),
                          (radius, radius, 180), (width - radius, radius, 270)):
        steps = np.deg2rad(np.linspace(start, start + 90, 10))
        arcs.append(np.stack([cx + radius * np.cos(steps), cy + radius * np.sin(steps)], axis=1))
    outline = _densify(np.concatenate(arcs), step=2.0)
    contour_f = _apply_homography(homography, outline)
    height_px, width_px = frame_shape[:2]
    contour_f[:, 0] = np.clip(contour_f[:, 0], 0, width_px - 1)
    contour_f[:, 1] = np.clip(contour_f[:, 1], 0, height_px - 1)
    contour = np.round(contour_f).astype(np.int32).reshape(-1, 1, 2)
    x, y, w, h = cv2.boundingRect(contour)
    centre = _apply_homography(homography, np.array([[width / 2, height / 2]]))[0]
    top = quad[1] - quad[0]
    angle = (math.degrees(math.atan2(float(top[1]), float(top[0]))) + 45.0) % 90.0 - 45.0
    return DevicePose(x, y, x + w, y + h, (float(centre[0]), float(centre[1])), angle, width, height,
                      contour, contour_f, homography)


def damage_score(defects: list[Defect]) -> float:
    """0 (pristine) .. 1 (wrecked). Scratches saturate towards 0.75 with total length; a dent or
    chip puts the unit at 0.5 or above; any crack or missing part at 0.8 or above, so the score
    orders units the way the grades do."""
    scratch_mm = sum(d.length_mm for d in defects if d.kind == "scratch")
    crack_mm = sum(d.length_mm for d in defects if d.kind == "crack")
    missing = sum(1 for d in defects if d.kind in ("missing_part", "oversize"))
    dents = sum(1 for d in defects if d.kind in ("dent", "chip"))
    if crack_mm > 0 or missing:
        return 0.8 + 0.2 * (1 - math.exp(-(crack_mm + scratch_mm + 30.0 * missing) / 150.0))
    base = 0.75 * (1 - math.exp(-scratch_mm / 60.0))
    if dents:
        return max(base, 0.5 + 0.05 * min(dents, 4))
    return base
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
    first real frame is not slow, and keep freed frame-sized buffers mapped (`heap`), so no frame
    pays 2-3 ms of page faults. Call after setting NUMBA_CACHE_DIR and before reporting READY."""
    heap.retain_freed_memory()
    frame = np.full((96, 128, 3), 70, np.uint8)
    frame[24:72, 32:96] = (20, 18, 16)
    cv2.line(frame, (40, 30), (80, 60), (150, 150, 150), 1, cv2.LINE_AA)
    DamageChecker(px_per_mm=1.0, min_device_mm=10.0).check(frame)
    gray = np.zeros((8, 8), np.uint8)
    for polarity in ("both", "bright", "dark"):
        kernels.line_response(gray, 1, polarity)  # type: ignore[arg-type]
