"""Synthetic camera frames of returned devices on the belt, with ground truth.

Pure functions over numpy arrays: `generate_appearance` decides what a unit looks like for a target
cosmetic grade, `render_frame` draws it as the overhead camera at the scan point would see it.

Coordinates: millimetres relative to the device's top-left corner, x to the right, y down, angles
in degrees in image convention (clockwise from +x, because y points down).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import cv2
import numpy as np

Grade = Literal["A", "B", "C", "D"]
Category = Literal["phone", "tablet", "laptop"]
DefectKind = Literal["scratch", "crack"]

FRAME_SIZE: tuple[int, int] = (1280, 720)  # (width, height), like cv2
SCREEN_INSET_MM = 4.0
# Defects keep this far from the screen edge so that the inspected area clearly contains them (a
# scratch ending right at the bezel would also leave a dark gap that reads as a line of its own).
DEFECT_EDGE_CLEARANCE_MM = 3.0
# Keeps independent defects apart: touching scratches would merge into one component that looks
# like a branching crack, which this generator does not intend to model.
DEFECT_SPACING_MM = 3.0
AMBIGUOUS_PROBABILITY = 0.05

# Body colours chosen to stand out from the dark grey belt in at least one channel, as a real
# station would ensure with belt colour and lighting.
BODY_PALETTE_BGR: tuple[tuple[int, int, int], ...] = (
    (24, 24, 27),  # black
    (200, 200, 205),  # silver
    (232, 232, 232),  # white
    (150, 190, 215),  # gold
    (150, 95, 45),  # blue
    (170, 170, 220),  # rose
    (130, 130, 135),  # graphite
)
BELT_LEVEL = 72
SCREEN_OFF_BGR = (20, 18, 16)


@dataclass(frozen=True)
class DefectSpec:
    """One drawn defect. A scratch is a straight segment centred on (x_mm, y_mm); a crack starts at
    (x_mm, y_mm) and sends `branches` jagged arms, the first at `angle_deg`, each about `length_mm`."""

    kind: DefectKind
    x_mm: float
    y_mm: float
    length_mm: float
    angle_deg: float
    branches: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "x_mm": round(self.x_mm, 2),
            "y_mm": round(self.y_mm, 2),
            "length_mm": round(self.length_mm, 2),
            "angle_deg": round(self.angle_deg, 1),
            "branches": self.branches,
        }


@dataclass(frozen=True)
class Appearance:
    """Everything `render_frame` needs to draw a unit; also the ground truth for vision tests."""

    category: Category
    width_mm: float
    height_mm: float
    body_bgr: tuple[int, int, int]
    screen_on: bool
    defects: list[DefectSpec] = field(default_factory=list)
    smudges: int = 0

    @property
    def scratches(self) -> list[DefectSpec]:
        return [d for d in self.defects if d.kind == "scratch"]

    @property
    def cracks(self) -> list[DefectSpec]:
        return [d for d in self.defects if d.kind == "crack"]

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["body_bgr"] = list(self.body_bgr)
        data["width_mm"] = round(self.width_mm, 2)
        data["height_mm"] = round(self.height_mm, 2)
        data["defects"] = [d.to_dict() for d in self.defects]
        return data


def inspected_area_mm(width_mm: float, height_mm: float) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the surface that carries defects: the screen, or the lid of a laptop."""
    return (SCREEN_INSET_MM, SCREEN_INSET_MM, width_mm - SCREEN_INSET_MM, height_mm - SCREEN_INSET_MM)


# --- appearance generation ---------------------------------------------------------------------


def _scratch_ends(spec: DefectSpec) -> tuple[np.ndarray, np.ndarray]:
    a = math.radians(spec.angle_deg)
    half = np.array([math.cos(a), math.sin(a)]) * spec.length_mm / 2
    centre = np.array([spec.x_mm, spec.y_mm])
    return centre - half, centre + half


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def _segments_cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> bool:
    def side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> float:
        return float((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0


def _defect_distance(first: DefectSpec, second: DefectSpec) -> float:
    """Clearance in mm between two defects' footprints; a crack's footprint is the disc its arms
    stay in (radius = arm length)."""
    if first.kind == "crack" and second.kind == "crack":
        return math.hypot(first.x_mm - second.x_mm, first.y_mm - second.y_mm) - first.length_mm - second.length_mm
    if first.kind == "crack" or second.kind == "crack":
        crack, line = (first, second) if first.kind == "crack" else (second, first)
        a, b = _scratch_ends(line)
        return _point_segment_distance(np.array([crack.x_mm, crack.y_mm]), a, b) - crack.length_mm
    a, b = _scratch_ends(first)
    c, d = _scratch_ends(second)
    if _segments_cross(a, b, c, d):
        return 0.0
    return min(
        _point_segment_distance(a, c, d),
        _point_segment_distance(b, c, d),
        _point_segment_distance(c, a, b),
        _point_segment_distance(d, a, b),
    )


def _too_close(candidate: DefectSpec, placed: list[DefectSpec]) -> bool:
    for other in placed:
        if other.kind == "crack" and candidate.kind == "crack":
            # Two crack discs may overlap freely: the grade is D either way.
            continue
        if _defect_distance(candidate, other) < DEFECT_SPACING_MM:
            return True
    return False


def _place_scratch(
    length_mm: float,
    area: tuple[float, float, float, float],
    placed: list[DefectSpec],
    rng: np.random.Generator,
    attempts: int = 200,
) -> DefectSpec | None:
    x0, y0, x1, y1 = area
    c = DEFECT_EDGE_CLEARANCE_MM
    for _ in range(attempts):
        angle = float(rng.uniform(0.0, 180.0))
        a = math.radians(angle)
        half_w = abs(math.cos(a)) * length_mm / 2
        half_h = abs(math.sin(a)) * length_mm / 2
        lo_x, hi_x = x0 + c + half_w, x1 - c - half_w
        lo_y, hi_y = y0 + c + half_h, y1 - c - half_h
        if lo_x >= hi_x or lo_y >= hi_y:
            continue
        spec = DefectSpec("scratch", float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y)), length_mm, angle)
        if not _too_close(spec, placed):
            return spec
    return None


def _place_crack(
    branch_mm: float,
    branches: int,
    area: tuple[float, float, float, float],
    placed: list[DefectSpec],
    rng: np.random.Generator,
) -> DefectSpec:
    x0, y0, x1, y1 = area
    c = DEFECT_EDGE_CLEARANCE_MM
    # The arms must fit on the surface: shorten them on small screens rather than clip them.
    radius = min(branch_mm, (x1 - x0) / 2 - c, (y1 - y0) / 2 - c)
    for _ in range(50):
        spec = DefectSpec(
            "crack",
            float(rng.uniform(x0 + c + radius, x1 - c - radius)),
            float(rng.uniform(y0 + c + radius, y1 - c - radius)),
            float(radius),
            float(rng.uniform(0.0, 360.0)),
            branches,
        )
        if not _too_close(spec, placed):
            return spec
    return spec


def _scratches(
    count: int,
    length_range: tuple[float, float],
    area: tuple[float, float, float, float],
    placed: list[DefectSpec],
    rng: np.random.Generator,
) -> None:
    for _ in range(count):
        spec = _place_scratch(float(rng.uniform(*length_range)), area, placed, rng)
        if spec is not None:
            placed.append(spec)


def generate_appearance(
    target_grade: Grade,
    category: Category,
    width_mm: float,
    height_mm: float,
    rng: np.random.Generator,
    allow_ambiguous: bool = False,
) -> tuple[Appearance, bool]:
    """Pick an appearance for a unit that should grade `target_grade` under the default policy.

    Returns (appearance, ambiguous). Unambiguous units keep every scratch length and count well
    clear of the grade thresholds (A: <= 3 scratches <= 3 mm; B: <= 10 scratches <= 7 mm; C: more
    or longer; D: any crack), so a correct vision stage must grade them exactly. With
    `allow_ambiguous`, about 5% of units instead put a defect within ~1 mm (or the count at) a
    threshold, where either neighbouring grade is an acceptable answer.
    """
    if target_grade not in ("A", "B", "C", "D"):
        raise ValueError(f"unknown grade {target_grade!r}")
    if category not in ("phone", "tablet", "laptop"):
        raise ValueError(f"unknown category {category!r}")
    if width_mm <= 2 * (SCREEN_INSET_MM + DEFECT_EDGE_CLEARANCE_MM) + 10 or height_mm <= 30:
        raise ValueError(f"device too small to carry defects: {width_mm} x {height_mm} mm")
    area = inspected_area_mm(width_mm, height_mm)
    defects: list[DefectSpec] = []
    ambiguous = allow_ambiguous and rng.random() < AMBIGUOUS_PROBABILITY

    if ambiguous:
        _ambiguous_defects(target_grade, area, defects, rng)
    elif target_grade == "A":
        _scratches(int(rng.integers(0, 3)), (1.5, 2.2), area, defects, rng)
    elif target_grade == "B":
        _scratches(int(rng.integers(4, 9)), (4.0, 6.0), area, defects, rng)
    elif target_grade == "C":
        if rng.random() < 0.5:
            _scratches(int(rng.integers(12, 17)), (9.0, 14.0), area, defects, rng)
        else:
            _scratches(int(rng.integers(2, 6)), (9.5, 14.0), area, defects, rng)
            _scratches(int(rng.integers(0, 4)), (4.0, 6.0), area, defects, rng)
    else:
        for _ in range(int(rng.integers(1, 3))):
            defects.append(_place_crack(float(rng.uniform(12.0, 30.0)), int(rng.integers(3, 6)), area, defects, rng))
        _scratches(int(rng.integers(0, 4)), (3.0, 8.0), area, defects, rng)

    appearance = Appearance(
        category=category,
        width_mm=float(width_mm),
        height_mm=float(height_mm),
        body_bgr=BODY_PALETTE_BGR[int(rng.integers(len(BODY_PALETTE_BGR)))],
        screen_on=category != "laptop" and bool(rng.random() < 0.25),
        defects=defects,
        smudges=int(rng.integers(0, 4)),
    )
    return appearance, ambiguous


def _ambiguous_defects(
    target_grade: Grade, area: tuple[float, float, float, float], defects: list[DefectSpec], rng: np.random.Generator
) -> None:
    if target_grade == "A":
        # Count at the A limit, one scratch right at the 3 mm limit.
        _scratches(2, (1.5, 2.2), area, defects, rng)
        _scratches(1, (2.6, 3.4), area, defects, rng)
    elif target_grade == "B":
        # Either the count or the longest scratch sits on the B/C border.
        if rng.random() < 0.5:
            _scratches(int(rng.integers(10, 12)), (4.0, 6.0), area, defects, rng)
        else:
            _scratches(int(rng.integers(4, 9)), (4.0, 6.0), area, defects, rng)
            _scratches(1, (6.5, 7.5), area, defects, rng)
    elif target_grade == "C":
        _scratches(int(rng.integers(3, 8)), (4.0, 6.0), area, defects, rng)
        _scratches(1, (6.6, 7.8), area, defects, rng)
    else:
        # A short, barely branching crack can pass for a pair of scratches.
        defects.append(_place_crack(float(rng.uniform(3.0, 5.0)), 2, area, defects, rng))


# --- rendering ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _belt_texture(height: int, width: int) -> np.ndarray:
    """A belt strip wider than the frame; frames take a shifted window so the belt appears to move."""
    rng = np.random.default_rng(12345)
    coarse = rng.normal(0.0, 1.0, (height // 16 + 2, width // 16 + 2)).astype(np.float32)
    blotches = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * 4.0
    grain = rng.normal(0.0, 2.0, (height, width)).astype(np.float32)
    weave = 2.0 * np.sin(np.arange(width, dtype=np.float32) * (2 * math.pi / 9.0))[None, :]
    level = np.clip(BELT_LEVEL + blotches + grain + weave, 0, 255).astype(np.uint8)
    belt = np.stack([level, level, np.clip(level.astype(np.int16) + 3, 0, 255).astype(np.uint8)], axis=2)
    belt.setflags(write=False)
    return belt


@functools.lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> np.ndarray:
    """Pre-drawn sensor noise (int16, sigma ~2 levels); frames take a random window of it because
    drawing fresh Gaussian noise per frame would cost more than the whole rest of the render."""
    rng = np.random.default_rng(54321)
    bank = np.rint(rng.normal(0.0, 2.0, (2 * height, 2 * width))).astype(np.int16)
    bank.setflags(write=False)
    return bank


def _surface_is_bright(bgr: tuple[int, int, int]) -> bool:
    b, g, r = bgr
    return 0.114 * b + 0.587 * g + 0.299 * r > 128


def _defect_colour(surface: tuple[int, int, int], rng: np.random.Generator, strength: float) -> tuple[int, ...]:
    """Scratches catch the light on dark glass and show as darker grooves on bright metal."""
    delta = strength * (-1 if _surface_is_bright(surface) else 1)
    return tuple(int(np.clip(c + delta, 0, 255)) for c in surface)


_SHIFT = 4  # cv2 fixed-point bits, so lines land on sub-pixel positions
_SCALE = 1 << _SHIFT


def _pt(x_px: float, y_px: float) -> tuple[int, int]:
    return (round(x_px * _SCALE), round(y_px * _SCALE))


def _draw_scratch(
    patch: np.ndarray, spec: DefectSpec, px_per_mm: float, surface: tuple[int, int, int], rng: np.random.Generator
) -> None:
    a = math.radians(spec.angle_deg)
    dx, dy = math.cos(a) * spec.length_mm / 2, math.sin(a) * spec.length_mm / 2
    p0 = _pt((spec.x_mm - dx) * px_per_mm, (spec.y_mm - dy) * px_per_mm)
    p1 = _pt((spec.x_mm + dx) * px_per_mm, (spec.y_mm + dy) * px_per_mm)
    colour = _defect_colour(surface, rng, float(rng.uniform(60.0, 110.0)))
    cv2.line(patch, p0, p1, colour, int(rng.integers(1, 3)), cv2.LINE_AA, _SHIFT)


def _draw_crack(
    patch: np.ndarray, spec: DefectSpec, px_per_mm: float, surface: tuple[int, int, int], rng: np.random.Generator
) -> None:
    colour = _defect_colour(surface, rng, float(rng.uniform(90.0, 130.0)))
    branches = max(spec.branches, 1)
    for i in range(branches):
        heading = math.radians(spec.angle_deg + i * 360.0 / branches + rng.uniform(-20.0, 20.0))
        arm_mm = spec.length_mm * rng.uniform(0.75, 1.0)
        steps = 8
        x, y = spec.x_mm, spec.y_mm
        points = [_pt(x * px_per_mm, y * px_per_mm)]
        for _ in range(steps):
            # Wander around the arm's mean heading without drifting off it, so the arm stays in its disc.
            step_heading = heading + math.radians(rng.uniform(-25.0, 25.0))
            x += math.cos(step_heading) * arm_mm / steps
            y += math.sin(step_heading) * arm_mm / steps
            points.append(_pt(x * px_per_mm, y * px_per_mm))
        cv2.polylines(patch, [np.array(points, np.int32)], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA, _SHIFT)
    impact = _pt(spec.x_mm * px_per_mm, spec.y_mm * px_per_mm)
    cv2.circle(patch, impact, round(1.0 * px_per_mm * _SCALE), colour, -1, cv2.LINE_AA, _SHIFT)


def _draw_smudge(patch: np.ndarray, area_px: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """Fingerprint-like haze: large, soft, low contrast, so it must not read as a line."""
    x0, y0, x1, y1 = area_px
    rx, ry = int(rng.integers(12, 40)), int(rng.integers(12, 40))
    cx = int(rng.integers(x0 + rx, max(x0 + rx + 1, x1 - rx)))
    cy = int(rng.integers(y0 + ry, max(y0 + ry + 1, y1 - ry)))
    bx0, by0, bx1, by1 = max(cx - 2 * rx, x0), max(cy - 2 * ry, y0), min(cx + 2 * rx, x1), min(cy + 2 * ry, y1)
    region = patch[by0:by1, bx0:bx1]
    if region.size == 0:
        return
    blob = np.zeros(region.shape[:2], np.float32)
    cv2.ellipse(blob, (cx - bx0, cy - by0), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    blob = cv2.GaussianBlur(blob, (0, 0), max(rx, ry) / 2.5) * float(rng.uniform(6.0, 14.0))
    region[:] = np.clip(region.astype(np.float32) + blob[..., None], 0, 255).astype(np.uint8)


def _draw_device(appearance: Appearance, px_per_mm: float, rng: np.random.Generator) -> np.ndarray:
    """The device alone, in its own coordinates (top-left = (0, 0))."""
    w_px, h_px = round(appearance.width_mm * px_per_mm), round(appearance.height_mm * px_per_mm)
    patch = np.empty((h_px, w_px, 3), np.uint8)
    patch[:] = appearance.body_bgr
    x0, y0, x1, y1 = (round(v * px_per_mm) for v in inspected_area_mm(appearance.width_mm, appearance.height_mm))
    if appearance.category == "laptop":
        surface = appearance.body_bgr
    elif appearance.screen_on:
        # A lit home screen: a smooth vertical gradient, bright enough to show the body/screen step.
        top, bottom = np.array([120, 90, 60], np.float32), np.array([160, 120, 90], np.float32)
        ramp = np.linspace(0.0, 1.0, max(y1 - y0, 1), dtype=np.float32)[:, None, None]
        patch[y0:y1, x0:x1] = (top + (bottom - top) * ramp).astype(np.uint8)
        surface = (140, 105, 75)
    else:
        patch[y0:y1, x0:x1] = SCREEN_OFF_BGR
        surface = SCREEN_OFF_BGR
    for _ in range(appearance.smudges):
        _draw_smudge(patch, (x0, y0, x1, y1), rng)
    for spec in appearance.defects:
        if spec.kind == "scratch":
            _draw_scratch(patch, spec, px_per_mm, surface, rng)
        else:
            _draw_crack(patch, spec, px_per_mm, surface, rng)
    return patch


def device_placement(
    appearance: Appearance, px_per_mm: float = 3.0, size: tuple[int, int] = FRAME_SIZE
) -> tuple[int, int, bool]:
    """(x, y, turned) of the device's top-left pixel in the frame; `turned` when the unit lies
    rotated by 90 degrees because only that way it fits the field of view (big tablets)."""
    width, height = size
    w_px, h_px = round(appearance.width_mm * px_per_mm), round(appearance.height_mm * px_per_mm)
    turned = (h_px > height or w_px > width) and (w_px <= height and h_px <= width)
    if turned:
        w_px, h_px = h_px, w_px
    return (width - w_px) // 2, (height - h_px) // 2, turned


def render_frame(
    appearance: Appearance,
    rng: np.random.Generator,
    px_per_mm: float = 3.0,
    size: tuple[int, int] = FRAME_SIZE,
) -> np.ndarray:
    """Draw the unit centred on the belt: BGR uint8 of shape (size[1], size[0], 3).

    A unit larger than the field of view is drawn cropped (as a real camera would see it); the
    vision stage then reports no device rather than guess.
    """
    if px_per_mm <= 0:
        raise ValueError("px_per_mm must be positive")
    width, height = size
    belt = _belt_texture(height, width + 256)
    shift = int(rng.integers(0, 256))
    frame = belt[:, shift : shift + width].copy()

    patch = _draw_device(appearance, px_per_mm, rng)
    left, top, turned = device_placement(appearance, px_per_mm, size)
    if turned:
        patch = np.ascontiguousarray(np.rot90(patch, k=-1))
    h_px, w_px = patch.shape[:2]
    fx0, fy0 = max(left, 0), max(top, 0)
    fx1, fy1 = min(left + w_px, width), min(top + h_px, height)
    frame[fy0:fy1, fx0:fx1] = patch[fy0 - top : fy1 - top, fx0 - left : fx1 - left]

    frame = cv2.GaussianBlur(frame, (3, 3), 0.6)
    bank = _noise_bank(height, width)
    ny, nx = int(rng.integers(0, height)), int(rng.integers(0, width))
    noise = bank[ny : ny + height, nx : nx + width]
    return cv2.add(frame, cv2.merge([noise, noise, noise]), dtype=cv2.CV_8U)
