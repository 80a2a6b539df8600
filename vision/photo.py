"""Photographs from disk: decoding them safely and finding the unit where no belt is to be seen.

On the belt the damage check finds the unit by its colour difference from a uniform belt. An
ordinary photograph (a phone on a desk, a wooden table, a gradient sweep, a patterned cloth) has
no uniform background, so `find_outline` looks for the largest plausible outline instead: a
convex, nearly rectangular four-sided shape with the aspect ratio of a phone, tablet or laptop,
not cut by the picture's edge. Several segmentations are tried (brightness and colour
thresholds in both polarities, distance from the border colour, edges), because no single one
separates a black phone from a dark-grained table and a silver one from a white sheet alike.
Of the outlines of one object the segmentations give (with its drop shadow, or its screen alone)
the one on the crispest edge is kept, widened to a body around it on all four sides. When none
gives a plausible outline there is no unit: the caller reports "no device found" rather than
inspecting the background.

A printed barcode has a unit's outline too: a label, a block of its bars between two thick ones, a
symbol on a sheet of paper are convex, rectangular and of a phone's or a tablet's aspect. An outline
whose inside is mostly code texture is therefore no unit (`printed_code`): parallel bars of
several widths, about as much ink as paper, that alternate across and run on along (a 1-D code,
with its quiet zones), or a crisp grid of ink and paper squares alternating both ways (a 2-D
code). Text, stripes and app icons on a screen are none of these. An outline lying within a
symbol the barcode reader found is none either (`within_symbol`). A unit with a label on it, or a
screen showing a code on part of it, is still a unit: what counts is how much of the outline the
code covers, not whether there is one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_PIXELS = 100_000_000  # refuse decompression bombs (OpenCV's own limit is 2^30)
MIN_SIDE_PX = 64
# Long side over short side. Phones are 2.0-2.3, tablets and closed laptops 1.3-1.6; a foldable
# folded is up to ~2.6. Squares are rejected: a sticker, a tile or a box is no unit we grade.
MIN_ASPECT = 1.2
MAX_ASPECT = 2.7
_WORK_SIDE_PX = 720  # outline search runs on a copy this size: outlines need no more
_MIN_AREA_FRACTION = 0.02  # of the picture: a unit smaller than this is too few pixels to grade
_MAX_AREA_FRACTION = 0.92  # larger: the picture is a close-up of a surface, not a unit in a scene
_MIN_RECTANGULARITY = 0.86  # contour area / its minimum-area rectangle's area
_MIN_SOLIDITY = 0.93  # contour area / convex hull area
_SAME_UNIT_OVERLAP = 0.8  # outlines overlapping this much (intersection over union) are one object
_MIN_GAP_SHARE = 0.2  # a body's narrowest bezel side against its widest (older phones: ~0.4)
_MIN_BEZEL = 0.02  # of the screen's short side
_MIN_EDGE_SHARE = 0.1  # a body's outline edge against its screen's: a shadow's is weaker still
_MAX_INNER_FRACTION = 0.5  # an outline inside a plausible one, at most this much of it, is the unit on a mat
# Printed codes (`printed_code`). The scales are the outline's own: a code that IS the outline has
# its bars or modules at some fraction of it, whatever the picture's resolution.
CODE_SHARE = 0.5  # an outline whose inside is this much code texture is the code, not a unit
_CODE_SIDE_PX = 480  # the inside is looked at rectified, at most this long (never enlarged)
_CODE_MARGIN = 0.04  # of the short side, left out all round: the outline's own edge
_CODE_MIN_CONTRAST = 48  # grey levels (2nd to 98th percentile) below which there is no printed code
_CODE_STEP = 0.25  # a mark is this much of the contrast darker (brighter) than both sides of it
_CODE_MIN_MARKS = 3  # dark marks within half the short side either way: a dense run, not an edge or two
_CODE_BAR_INK = 0.35  # share of a 1-D code's bars and spaces that is ink (blurred text lines: a thin core)
_CODE_WIDTHS_VARY = 0.5  # its bars' or spaces' widths vary this much (`_spread`): 1 to 4 modules
_CODE_QUIET_ZONE = 10  # a 1-D code's quiet zone, in bar widths (the symbologies ask for 10 modules)
_CODE_BOTH_WAYS = 0.25  # a 2-D code alternates across this much of the inside in each direction
_CODE_WAYS_BALANCE = 0.6  # ... and in the one direction at least this much of it in the other
_CODE_MAX_GREY = 0.25  # ... with at most this share of its pixels between ink and paper (crisp)
_CODE_INK = (0.3, 0.7)  # ... and about as much ink as paper (text is far less ink, dark mode far more)
_CODE_MAX_CHROMA = 12.0  # ... in grey (median distance from neutral in Lab's a, b)
_SYMBOL_QUIET_ZONE = 0.1  # a read symbol's extent grows by this much of each side, on each end
_WITHIN_SYMBOL = 0.8  # an outline this much inside a read symbol's extent is (part of) the symbol


class PhotoError(ValueError):
    """The file is not an image the check can use; the message says why."""


class PhotoTooSmall(PhotoError):
    """The image decoded but is under MIN_SIDE_PX on a side: too small to grade, not necessarily
    to read (a tight crop of a label strip still carries its barcode). `image` is the decoded
    picture, 8-bit BGR, for a caller that reads barcodes on it and reports no unit."""

    def __init__(self, message: str, image: np.ndarray) -> None:
        super().__init__(message)
        self.image = image


@dataclass(frozen=True)
class PhotoOutline:
    """A unit found in a photograph: its corners (top-left, top-right, bottom-right, bottom-left of
    the upright view, in the picture's px), its sides in px, and how it was found."""

    corners: np.ndarray  # (4, 2) float64
    long_side_px: float
    short_side_px: float
    rectangularity: float
    method: str

    @property
    def aspect(self) -> float:
        return self.long_side_px / self.short_side_px


def load_photo(path: Path) -> np.ndarray:
    """An image file as an 8-bit BGR array, upright as its EXIF orientation says. Greyscale,
    16-bit and alpha images are converted (alpha is dropped: a transparent background reads as
    black). Raises PhotoError with a reason a person can act on; PhotoTooSmall, which carries the
    decoded image, when it is under MIN_SIDE_PX on a side."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PhotoError(f"cannot open: {exc.strerror or exc}") from exc
    if size == 0:
        raise PhotoError("empty file")
    if size > MAX_FILE_BYTES:
        raise PhotoError(f"file too large ({size} bytes)")
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise PhotoError(f"cannot read: {exc.strerror or exc}") from exc
    return decode_photo(data)


def decode_photo(data: np.ndarray) -> np.ndarray:
    """Encoded image bytes -> 8-bit BGR; see `load_photo`."""
    try:
        # ANYDEPTH keeps 16-bit samples so they are scaled down rather than clipped; IMREAD_COLOR
        # applies the EXIF orientation and makes 3 channels of grey or alpha images.
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        raise PhotoError(f"not a decodable image ({exc.err})") from exc
    if image is None:
        raise PhotoError("not an image format OpenCV can decode, or the file is damaged")
    if image.ndim != 3 or image.shape[2] != 3:
        raise PhotoError(f"unexpected image layout {image.shape}")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise PhotoError(f"image too large ({image.shape[1]}x{image.shape[0]})")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        finite = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(finite.max()) or 1.0
        image = np.clip(finite * (255.0 / top), 0, 255).astype(np.uint8)
    image = np.ascontiguousarray(image)
    if min(image.shape[:2]) < MIN_SIDE_PX:
        raise PhotoTooSmall(
            f"image too small ({image.shape[1]}x{image.shape[0]}): at least {MIN_SIDE_PX} px on each side needed",
            image,
        )
    return image


def fit_within(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image scaled down (never up) so its longer side is at most `max_side`, and the factor."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def find_outline(image: np.ndarray, symbols: Sequence[np.ndarray] = ()) -> PhotoOutline | None:
    """The largest plausible unit outline in a BGR photograph, or None; see the module docstring.

    One exception to "largest": a plausible outline holding another one of at most half its area
    is a mat, a sheet of paper or a box lid with the unit on it, and the unit is the inner one. (A
    unit's own screen covers far more than half of it, so the body is kept over its screen.)
    Outlines of printed codes are no candidates: mostly code texture inside (`printed_code`), or
    within one of `symbols`, the corners (image px) of symbols a barcode reader found in it."""
    small, scale = fit_within(image, _WORK_SIDE_PX)
    height, width = small.shape[:2]
    picture_area = float(height * width)
    symbols = [np.asarray(quad, np.float64).reshape(-1, 2) for quad in symbols]
    judged: list[tuple[np.ndarray, bool]] = []  # outlines already found to be codes or not
    found: list[tuple[float, PhotoOutline]] = []
    for method, mask in _candidate_masks(small):
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            area = float(cv2.contourArea(contour))
            if not _MIN_AREA_FRACTION * picture_area <= area <= _MAX_AREA_FRACTION * picture_area:
                continue
            outline = _plausible(contour, area, width, height, method)
            if outline is not None and not _is_code(image, outline, scale, symbols, judged):
                found.append((area, outline))
    if not found:
        return None
    edges = _edge_strength(small)
    area, best = _one_object(max(found, key=lambda item: item[0])[1], found, edges)
    frame = best.corners.astype(np.float32).reshape(-1, 1, 2)
    inner = [
        (inner_area, outline) for inner_area, outline in found
        if inner_area <= _MAX_INNER_FRACTION * area
        and all(cv2.pointPolygonTest(frame, (float(x), float(y)), False) > 0 for x, y in outline.corners)
    ]
    if inner:
        _, best = _one_object(max(inner, key=lambda item: item[0])[1], found, edges)
    return PhotoOutline(
        best.corners / scale, best.long_side_px / scale, best.short_side_px / scale, best.rectangularity, best.method
    )


def _is_code(
    image: np.ndarray, outline: PhotoOutline, scale: float, symbols: list[np.ndarray],
    judged: list[tuple[np.ndarray, bool]],
) -> bool:
    """`within_symbol` or `printed_code` for an outline found at `scale` of `image`. The texture is
    looked at in `image` itself, not in the outline search's reduced copy: lines of text a code
    could be taken for show more of their letters there. Judged once for outlines whose corners
    lie within 2% of their short side of an outline already judged (the segmentations give most
    outlines several times)."""
    tolerance = 0.02 * outline.short_side_px
    for corners, verdict in judged:
        if np.abs(corners - outline.corners).max() <= tolerance:
            return verdict
    corners = outline.corners / scale
    verdict = within_symbol(corners, symbols) or printed_code(image, corners) is not None
    judged.append((outline.corners, verdict))
    return verdict


def printed_code(image: np.ndarray, corners: np.ndarray) -> str | None:
    """What printed code the inside of a four-sided outline (corners in order around it, px of
    the BGR `image`) mostly is, as a short description, or None when it is not mostly code texture.

    The inside is rectified and looked at along its two sides. A mark is a stretch darker (or
    brighter) than something within a quarter of the short side on both sides of it by a quarter of
    the contrast; a dense run is three dark marks or more within half the short side. A 1-D code
    is bars: marks across that are none along and run on along (a letter's stroke does not), in
    dense runs, a third or more of them ink (the dark core of a blurred line of text is far thinner
    than the gap to the next line), of several widths (stripes, a grille or ribs are all alike);
    with the bars' quiet zones (ten bar widths of paper either end). A 2-D code is dense runs
    about as much both ways, crisp (few pixels between ink and paper), about half ink, and grey
    (printed in one ink: app icons and pictures are coloured). Either must cover CODE_SHARE of the
    inside. Scales are the outline's, so a code is found whatever the picture's resolution."""
    inside = _rectified_inside(image, corners)
    if inside is None:
        return None
    gray = cv2.cvtColor(inside, cv2.COLOR_BGR2GRAY)
    low, high = _percentiles(gray, (2, 98))
    contrast = high - low
    if contrast < _CODE_MIN_CONTRAST:
        return None
    img = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 0.8)
    step = _CODE_STEP * contrast
    reach = max(3, round(min(img.shape) / 4))  # a quarter of the short side
    runs = []  # per direction (0: along rows, 1: along columns): dark marks, marks, dense runs
    for axis in (0, 1):
        dark, bright = _marks(img, reach, step, axis)
        runs.append((dark, dark | bright, _dense(dark, reach, axis)))
    bars = max(_bar_share(img, runs, axis, reach, (low + high) / 2) for axis in (0, 1))
    if bars >= CODE_SHARE:
        return f"1-D code: bars over {bars:.0%} of it"
    grid = _grid_share(gray, inside, runs)
    if grid >= CODE_SHARE:
        return f"2-D code: modules over {grid:.0%} of it"
    return None


def _rectified_inside(image: np.ndarray, corners: np.ndarray) -> np.ndarray | None:
    """The inside of a four-sided outline as an upright BGR image, at most _CODE_SIDE_PX long, less
    a margin all round; None for an outline too small or degenerate. The outline's box is halved
    (with smoothing) while it stays over 4/3 of that size: sampling a fine code sparsely would
    alias it into coarser bars."""
    quad = np.asarray(corners, np.float64).reshape(4, 2)
    if not np.isfinite(quad).all():
        return None
    across = (np.linalg.norm(quad[1] - quad[0]) + np.linalg.norm(quad[2] - quad[3])) / 2
    down = (np.linalg.norm(quad[3] - quad[0]) + np.linalg.norm(quad[2] - quad[1])) / 2
    if min(across, down) < 8:
        return None
    height, width = image.shape[:2]
    x0, y0 = (max(0, math.floor(v) - 1) for v in quad.min(axis=0))
    x1, y1 = (math.ceil(v) + 2 for v in quad.max(axis=0))
    box = image[y0:min(y1, height), x0:min(x1, width)]
    if box.shape[0] < 2 or box.shape[1] < 2:
        return None
    fit = min(1.0, _CODE_SIDE_PX / max(across, down))
    shrunk = 1.0
    while fit / shrunk < 0.75 and min(box.shape[:2]) >= 16:
        box, shrunk = cv2.pyrDown(box), shrunk / 2
    w, h = max(8, round(across * fit)), max(8, round(down * fit))
    source = ((quad - (x0, y0)) * shrunk).astype(np.float32)
    target = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    try:
        matrix = cv2.getPerspectiveTransform(source, target)
        if not np.isfinite(matrix).all():
            return None
        rectified = cv2.warpPerspective(box, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    except cv2.error:  # a degenerate (collinear) outline
        return None
    margin = max(1, round(_CODE_MARGIN * min(w, h)))
    inside = rectified[margin:h - margin, margin:w - margin]
    return inside if inside.size else None


def _marks(img: np.ndarray, reach: int, step: float, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels `step` darker (dark) or brighter (bright) than the extreme within `reach` px on both
    sides along `axis` (0: rows, 1: columns)."""
    kernel = np.ones((1, reach + 1), np.uint8) if axis == 0 else np.ones((reach + 1, 1), np.uint8)
    end = (reach, 0) if axis == 0 else (0, reach)
    # One-sided windows: the anchor at the kernel's end looks back, at its start ahead.
    darker = np.minimum(cv2.dilate(img, kernel, anchor=end), cv2.dilate(img, kernel, anchor=(0, 0))) - img
    brighter = img - np.maximum(cv2.erode(img, kernel, anchor=end), cv2.erode(img, kernel, anchor=(0, 0)))
    return darker >= step, brighter >= step


def _dense(dark: np.ndarray, reach: int, axis: int) -> np.ndarray:
    """Where _CODE_MIN_MARKS dark marks or more begin within 2 * `reach` px either way along `axis`."""
    starts = dark.copy()
    if axis == 0:
        starts[:, 1:] &= ~dark[:, :-1]
    else:
        starts[1:, :] &= ~dark[:-1, :]
    window = (4 * reach + 1, 1) if axis == 0 else (1, 4 * reach + 1)
    # Mirrored at the ends: a block cut out of a code has its run going on past its sides.
    count = cv2.boxFilter(starts.view(np.uint8), cv2.CV_32F, window, normalize=False, borderType=cv2.BORDER_REFLECT)
    return count >= _CODE_MIN_MARKS


def _bar_share(
    img: np.ndarray, runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], axis: int, reach: int, paper: float
) -> float:
    """Share of the inside that is bars across `axis` with their quiet zones: marks across that
    are no marks along and run on along for a twelfth of the short side (a letter's stroke does
    not), three or more close together, of several widths; 0 when there are none such."""
    dark, mark, _ = runs[axis]
    plain = ~runs[1 - axis][1]
    length = 2 * max(2, reach // 6) + 1
    along = np.ones((length, 1), np.uint8) if axis == 0 else np.ones((1, length), np.uint8)
    ink = cv2.morphologyEx((dark & plain).view(np.uint8), cv2.MORPH_OPEN, along).view(bool)
    paper_between = cv2.morphologyEx((mark & ~dark & plain).view(np.uint8), cv2.MORPH_OPEN, along).view(bool)
    dense = _dense(ink, reach, axis)
    ink &= dense
    bar = ink | (paper_between & dense)
    widths, spaces = _run_lengths(ink, axis), _run_lengths(bar & ~ink, axis)
    if widths.size < _CODE_MIN_MARKS or spaces.size < _CODE_MIN_MARKS:
        return 0.0
    if int(np.count_nonzero(ink)) < _CODE_BAR_INK * int(np.count_nonzero(bar)):
        return 0.0
    if max(_spread(widths), _spread(spaces)) < _CODE_WIDTHS_VARY:
        return 0.0
    quiet = round(_CODE_QUIET_ZONE * float(np.median(widths)))
    if quiet >= 1:
        line = np.ones((1, 2 * quiet + 1), np.uint8) if axis == 0 else np.ones((2 * quiet + 1, 1), np.uint8)
        bar |= cv2.dilate(bar.view(np.uint8), line).view(bool) & (img >= paper) & plain
    return float(bar.mean())


def _spread(lengths: np.ndarray) -> float:
    """How much run lengths vary: from the shortest tenth to the longest, less a pixel for the
    sampling, over the median. A unit's bezel, one wide run among the stripes on its screen, does
    not count; 2 and 3 px for one width do not either."""
    shortest, median, longest = np.percentile(lengths, (10, 50, 90))
    return float(max(0.0, longest - shortest - 1) / median)


def _grid_share(gray: np.ndarray, colour: np.ndarray, runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """Share of the inside that is a crisp, half-inked, grey grid of marks both ways; 0 if it is not."""
    each = [mark & dense for _, mark, dense in runs]
    ways = sorted(float(m.mean()) for m in each)
    # Square modules alternate about as much both ways; lines of text far more across the lines.
    if ways[0] < _CODE_BOTH_WAYS or ways[0] < _CODE_WAYS_BALANCE * ways[1]:
        return 0.0
    texture = each[0] | each[1]
    values = gray[texture]
    ink, paper = _percentiles(values, (5, 95))
    quarter = 0.25 * (paper - ink)
    grey = float(((values > ink + quarter) & (values < paper - quarter)).mean())
    inked = float((values < (ink + paper) / 2).mean())
    if grey > _CODE_MAX_GREY or not _CODE_INK[0] <= inked <= _CODE_INK[1]:
        return 0.0
    lab = cv2.cvtColor(colour, cv2.COLOR_BGR2LAB)[texture].astype(np.float32)
    if float(np.median(np.hypot(lab[:, 1] - 128, lab[:, 2] - 128))) > _CODE_MAX_CHROMA:
        return 0.0
    return float(texture.mean())


def _run_lengths(mask: np.ndarray, axis: int) -> np.ndarray:
    """Lengths of the runs of True along `axis` (0: rows, 1: columns)."""
    lines = mask if axis == 0 else mask.T
    steps = np.diff(np.pad(lines, ((0, 0), (1, 1))).view(np.int8), axis=1).ravel()
    return np.flatnonzero(steps == -1) - np.flatnonzero(steps == 1)


def _percentiles(values: np.ndarray, percents: tuple[float, float]) -> tuple[float, float]:
    """Two percentiles of 8-bit values, from their histogram."""
    cumulative = np.cumsum(np.bincount(values.ravel(), minlength=256))
    if cumulative[-1] == 0:
        return 0.0, 0.0
    low, high = (int(np.searchsorted(cumulative, p / 100 * cumulative[-1])) for p in percents)
    return float(low), float(high)


def within_symbol(corners: np.ndarray, symbols: Sequence[np.ndarray]) -> bool:
    """Whether an outline lies (_WITHIN_SYMBOL of its area) within one of `symbols` (corners of
    symbols a barcode reader found, same px), each widened by its quiet zones: a block of a
    symbol's bars, or the blank quiet zone at its end framed by bearer bars, is part of it."""
    outline = np.asarray(corners, np.float32).reshape(-1, 2)
    area = float(cv2.contourArea(outline))
    if area <= 0:
        return False
    for quad in symbols:
        points = np.asarray(quad, np.float32).reshape(-1, 2)
        if points.shape[0] < 3 or not np.isfinite(points).all():
            continue
        (cx, cy), (w, h), angle = cv2.minAreaRect(points)
        if min(w, h) < 0.05 * max(w, h):  # read along one line: its extent across is not known
            continue
        grown = cv2.boxPoints(((cx, cy), (w * (1 + 2 * _SYMBOL_QUIET_ZONE), h * (1 + 2 * _SYMBOL_QUIET_ZONE)), angle))
        try:
            shared, _ = cv2.intersectConvexConvex(outline, grown.astype(np.float32))
        except cv2.error:  # not a convex outline: no verdict from it
            continue
        if shared >= _WITHIN_SYMBOL * area:
            return True
    return False


def _one_object(
    seed: PhotoOutline, found: list[tuple[float, PhotoOutline]], edges: np.ndarray
) -> tuple[float, PhotoOutline]:
    """Of the outlines of the object `seed` outlines, the unit's own, and its area.

    The same unit comes out of several segmentations: as its crisp outline, with its drop shadow
    or a reflection merged in on a side or two, or as its screen alone. The crispest outline
    (strongest edge on its weakest side) is the core; a larger one around it is the unit's body
    when it surrounds the core on all four sides (a bezel), not when it extends it on some."""
    same = [(a, o, _weakest_side(edges, o.corners)) for a, o in found
            if _overlap(o.corners, seed.corners) >= _SAME_UNIT_OVERLAP]
    area, core, crisp = max(same, key=lambda item: item[2])
    around = [(a, o) for a, o, strength in same
              if a > area and strength >= _MIN_EDGE_SHARE * crisp and _surrounds(o.corners, core)]
    return max(around, key=lambda item: item[0]) if around else (area, core)


def _edge_strength(small: np.ndarray) -> np.ndarray:
    gray = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (3, 3), 0).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


def _weakest_side(edges: np.ndarray, corners: np.ndarray) -> float:
    """Mean edge strength along each side of a quadrilateral (best within a pixel either side: a
    mask's outline runs on its pixels, beside the edge), the weakest side's. An outline with a
    shadow merged in follows the shadow's soft edge on one or two sides."""
    height, width = edges.shape
    sides = []
    for start, end in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        # The middle of the side: the corners are extrapolated past a rounded outline.
        points = start + np.linspace(0.15, 0.85, 48)[:, None] * (end - start)
        best = np.zeros(points.shape[0], np.float32)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                x = np.clip(np.round(points[:, 0]).astype(np.int64) + dx, 0, width - 1)
                y = np.clip(np.round(points[:, 1]).astype(np.int64) + dy, 0, height - 1)
                best = np.maximum(best, edges[y, x])
        sides.append(float(best.mean()))
    return min(sides)


def _surrounds(outer: np.ndarray, core: PhotoOutline) -> bool:
    """Whether `outer` runs around the core outline on every side, as a body around its screen: the
    gap on its narrowest side is a bezel's (2% of the short side or more: an outline traced a pixel
    outside the same edge is no bezel) and at least a fifth of the widest (a shadow's side gaps are
    near zero)."""
    inner = core.corners
    gaps = []
    for start, end in zip(outer, np.roll(outer, -1, axis=0), strict=True):
        direction = (end - start) / max(float(np.linalg.norm(end - start)), 1e-9)
        normal = np.array([-direction[1], direction[0]])
        inward = (inner - start) @ normal
        if (outer.mean(axis=0) - start) @ normal < 0:
            inward = -inward
        gaps.append(float(inward.min()))
    return min(gaps) >= max(_MIN_BEZEL * core.short_side_px, 1.5, _MIN_GAP_SHARE * max(gaps))


def _overlap(first: np.ndarray, second: np.ndarray) -> float:
    """Intersection over union of two convex quadrilaterals."""
    a, b = first.astype(np.float32), second.astype(np.float32)
    shared, _ = cv2.intersectConvexConvex(a, b)
    union = cv2.contourArea(a) + cv2.contourArea(b) - shared
    return float(shared / union) if union > 0 else 0.0


def _candidate_masks(small: np.ndarray) -> list[tuple[str, np.ndarray]]:
    side = max(small.shape[:2])
    # Smoothing sized to the picture: wood grain, fabric weave and JPEG blocks are finer than a unit.
    blur = max(3, (side // 150) | 1)
    smooth = cv2.GaussianBlur(small, (blur, blur), 0)
    lab = cv2.cvtColor(smooth, cv2.COLOR_BGR2LAB)
    channels = {"lightness": lab[:, :, 0], "green-red": lab[:, :, 1], "blue-yellow": lab[:, :, 2]}
    border = np.concatenate([lab[:4].reshape(-1, 3), lab[-4:].reshape(-1, 3),
                             lab[:, :4].reshape(-1, 3), lab[:, -4:].reshape(-1, 3)]).astype(np.float32)
    distance = np.linalg.norm(lab.astype(np.float32) - np.median(border, axis=0), axis=2)
    channels["border distance"] = cv2.normalize(distance, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (blur, blur))
    masks = []
    for name, channel in channels.items():
        if int(channel.max()) - int(channel.min()) < 12:
            continue  # nothing to separate on this channel
        _, mask = cv2.threshold(channel, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        polarities = (("", mask),) if name == "border distance" else (("bright ", mask), ("dark ", 255 - mask))
        for polarity, candidate in polarities:
            candidate = cv2.morphologyEx(candidate, cv2.MORPH_OPEN, kernel)
            candidate = cv2.morphologyEx(candidate, cv2.MORPH_CLOSE, kernel)
            masks.append((f"{polarity}{name}", candidate))
    gray = cv2.cvtColor(smooth, cv2.COLOR_BGR2GRAY)
    median = float(np.median(gray))
    edges = cv2.Canny(gray, max(10.0, 0.5 * median), max(30.0, 1.2 * median))
    edges = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, kernel)
    # Regions enclosed by edges: the unit's outline is a closed edge loop, texture rarely is.
    masks.append(("edges", edges))
    return masks


def _plausible(contour: np.ndarray, area: float, width: int, height: int, method: str) -> PhotoOutline | None:
    x, y, w, h = cv2.boundingRect(contour)
    if x <= 1 or y <= 1 or x + w >= width - 1 or y + h >= height - 1:
        return None  # cut by the picture's edge: a part of something, or the background itself
    hull = cv2.convexHull(contour)
    hull_area = float(cv2.contourArea(hull))
    if hull_area <= 0 or area / hull_area < _MIN_SOLIDITY:
        return None
    (_, _), (rect_w, rect_h), _ = cv2.minAreaRect(contour)
    rectangularity = area / max(rect_w * rect_h, 1.0)
    if rectangularity < _MIN_RECTANGULARITY:
        return None
    corners = _quadrilateral(hull)
    if corners is None or not cv2.isContourConvex(corners.astype(np.float32).reshape(-1, 1, 2)):
        return None
    top, right = np.linalg.norm(corners[1] - corners[0]), np.linalg.norm(corners[2] - corners[1])
    bottom, left = np.linalg.norm(corners[2] - corners[3]), np.linalg.norm(corners[3] - corners[0])
    # Opposite sides of a unit seen at a slant differ by the keystone; by far more, not a rectangle.
    if min(top, bottom) < 0.75 * max(top, bottom) or min(left, right) < 0.75 * max(left, right):
        return None
    across, down = float(top + bottom) / 2, float(left + right) / 2
    long_side, short_side = max(across, down), min(across, down)
    if short_side <= 0 or not MIN_ASPECT <= long_side / short_side <= MAX_ASPECT:
        return None
    return PhotoOutline(corners, long_side, short_side, rectangularity, method)


def _quadrilateral(hull: np.ndarray) -> np.ndarray | None:
    """Four corners of a convex outline with rounded corners, ordered top-left, top-right,
    bottom-right, bottom-left; or None when it is not four-sided."""
    perimeter = cv2.arcLength(hull, True)
    for fraction in (0.02, 0.03, 0.045, 0.06):
        approx = cv2.approxPolyDP(hull, fraction * perimeter, True).reshape(-1, 2).astype(np.float64)
        if approx.shape[0] == 4:
            break
    else:
        return None
    # approxPolyDP keeps contour points, which on a rounded corner lie inside the true corner:
    # intersect lines through the sides' middles instead.
    quad = _order(approx)
    points = _densify(hull.reshape(-1, 2).astype(np.float64), step=2.0)
    lines = []
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        direction = b - a
        length = float(np.linalg.norm(direction))
        if length < 4:
            return None
        direction /= length
        normal = np.array([-direction[1], direction[0]])
        along = (points - a) @ direction
        offset = (points - a) @ normal
        # The chord between two rounded corners runs inside the true side by a few percent.
        near = (np.abs(offset) < max(3.0, 0.06 * length)) & (along > 0.2 * length) & (along < 0.8 * length)
        if np.count_nonzero(near) >= 2:
            vx, vy, x0, y0 = cv2.fitLine(points[near].astype(np.float32), cv2.DIST_L2, 0, 0.01, 0.01).ravel()
            lines.append((np.array([x0, y0], np.float64), np.array([vx, vy], np.float64)))
        else:
            lines.append((a, direction))
    corners = []
    for i in range(4):
        (p, d), (q, e) = lines[i - 1], lines[i]
        matrix = np.array([d, -e]).T
        if abs(float(np.linalg.det(matrix))) < 1e-3:
            return None
        t, _ = np.linalg.solve(matrix, q - p)
        corners.append(p + t * d)
    result = np.array(corners, np.float64)
    if not np.isfinite(result).all() or np.abs(result - quad).max() > 0.1 * cv2.arcLength(hull, True):
        return quad
    return result


def _densify(polygon: np.ndarray, step: float) -> np.ndarray:
    """Points every `step` px along a closed polygon: a hull keeps only the ends of a straight side."""
    pieces = []
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        count = max(1, math.ceil(float(np.linalg.norm(b - a)) / step))
        pieces.append(a + np.linspace(0.0, 1.0, count, endpoint=False)[:, None] * (b - a))
    return np.concatenate(pieces)


def _order(points: np.ndarray) -> np.ndarray:
    """Four points as top-left, top-right, bottom-right, bottom-left (clockwise on screen,
    starting with the one nearest the top-left)."""
    centre = points.mean(axis=0)
    angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
    clockwise = points[np.argsort(angles)]  # image y points down: increasing angle is clockwise
    start = int(np.argmin(clockwise.sum(axis=1)))
    return np.roll(clockwise, -start, axis=0)


def catalog_scale(
    long_side_px: float, short_side_px: float, sizes: list[tuple[str, float, float]], tolerance: float = 0.1
) -> tuple[str, float, float, float] | None:
    """The catalog entry (name, length mm, width mm) whose aspect ratio matches an outline of these
    sides best, within `tolerance` (relative), and the px per mm that makes the outline that size;
    None when nothing matches. Models of one class share an aspect ratio to a few percent, so the
    scale is an estimate to about that much, and the caller says so. The tolerance allows for a
    photo taken at a slant (foreshortening changes the ratio); phones (about 2:1) and tablets or
    laptops (about 1.4:1) stay far apart."""
    if not (math.isfinite(long_side_px) and math.isfinite(short_side_px)) or min(long_side_px, short_side_px) <= 0:
        return None
    aspect = max(long_side_px, short_side_px) / min(long_side_px, short_side_px)
    scored = []
    for name, length, width in sizes:
        if not (math.isfinite(length) and math.isfinite(width)) or min(length, width) <= 0:
            continue
        long_mm, short_mm = max(length, width), min(length, width)
        error = abs(aspect / (long_mm / short_mm) - 1.0)
        if error <= tolerance:
            scored.append((error, name, long_mm, short_mm))
    if not scored:
        return None
    error, name, long_mm, short_mm = min(scored)
    px_per_mm = (max(long_side_px, short_side_px) / long_mm + min(long_side_px, short_side_px) / short_mm) / 2
    return name, long_mm, short_mm, px_per_mm
