"""Numba kernels for the ridge measurements of the damage check's classification (`vision.damage`:
`ridge_profiles`, `ridge_widths`, their polyline forms and `local_ridge_width`).

Each measurement samples a few grey values across a stroke at each of a few dozen points along
it. In NumPy that is thirty-odd array operations per call, whose fixed cost, not the sampling,
made the measurement of a long or bent component cost a millisecond; one pass in a kernel costs
a few microseconds. As in `vision.kernels`: plain loops with explicit signatures, `nogil`,
`cache=True`, no validation inside (the wrapper checks dtype, shape and index ranges and hands
C-contiguous arrays down), and a vectorised NumPy reference (`*_reference`) with the same output,
which the tests compare against. The two differ only in the order some sums are added in, so a
stroke whose total contrast is zero to the last bit may take the other polarity.

Also here, for the straight-stroke search (`vision.damage.straight_strokes`) and the pixels it
reads: `label_pixels` (a component's pixels from the label image), `point_mean` and
`densest_band` (the Hough vote's best band). These match their references to the bit.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from vision import kernels

# Five points across a stroke within 1 px of its centre line: the darkest (or brightest) of them
# is the stroke's value, which forgives a centre line a pixel off.
ACROSS_PX = (-1.0, -0.5, 0.0, 0.5, 1.0)
# A profile peak below this (grey levels) is rounding noise on a flat profile: no ridge.
_FLAT_PEAK = 1e-6

_GRAY_TYPES = (numba.uint8, numba.float32, numba.float64)
# The most vote cells (directions x bands) `densest_band` will count in: 256 MiB of int32. A
# frame's pixels need a few hundred thousand; int32 cell indices need fewer than 2**31.
_MAX_BAND_CELLS = 1 << 26


@numba.njit(inline="always")
def _sample(gray: np.ndarray, x: float, y: float) -> float:
    # Bilinear, clamped to the image; NaN fails the comparison and reads column (row) 0.
    height, width = gray.shape
    x = min(x, width - 1.0) if x > 0.0 else 0.0
    y = min(y, height - 1.0) if y > 0.0 else 0.0
    x0, y0 = int(x), int(y)  # truncation is the floor here: x, y >= 0
    fx, fy = x - x0, y - y0
    x1 = x0 + 1 if x0 < width - 1 else x0
    y1 = y0 + 1 if y0 < height - 1 else y0
    top = gray[y0, x0] * (1 - fx) + gray[y0, x1] * fx
    bottom = gray[y1, x0] * (1 - fx) + gray[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@numba.njit(
    [
        numba.void(
            gray[:, ::1], numba.float64[:, ::1], numba.float64[:, ::1], numba.int64[::1], numba.float64[::1],
            numba.float64[:, ::1], numba.float64[:, ::1],
        )
        for gray in _GRAY_TYPES
    ],
    cache=True,
    nogil=True,
)
def _profile_figures_kernel(
    gray: np.ndarray, points: np.ndarray, normals: np.ndarray, owner: np.ndarray, offsets: np.ndarray,
    contrasts: np.ndarray, out: np.ndarray,
) -> None:
    # contrasts (N, 4): per sample dark two-sided, dark one-sided, bright two-sided, bright one-sided.
    # out (S, 6): per stroke sum dark two, sum bright two, samples, then mean, gap ratio, two-sided.
    n_across = offsets.size - 2
    out[:, :] = 0.0
    for i in range(points.shape[0]):
        px, py, nx, ny = points[i, 0], points[i, 1], normals[i, 0], normals[i, 1]
        darkest, brightest = math.inf, -math.inf
        for k in range(n_across):
            value = _sample(gray, px + offsets[k] * nx, py + offsets[k] * ny)
            darkest = min(darkest, value)
            brightest = max(brightest, value)
        flank_a = _sample(gray, px + offsets[n_across] * nx, py + offsets[n_across] * ny)
        flank_b = _sample(gray, px + offsets[n_across + 1] * nx, py + offsets[n_across + 1] * ny)
        near_flank, far_flank = min(flank_a, flank_b), max(flank_a, flank_b)
        contrasts[i, 0] = near_flank - darkest
        contrasts[i, 1] = far_flank - darkest
        contrasts[i, 2] = brightest - far_flank
        contrasts[i, 3] = brightest - near_flank
        stroke = owner[i]
        out[stroke, 0] += contrasts[i, 0]
        out[stroke, 1] += contrasts[i, 2]
        out[stroke, 2] += 1.0
    totals = np.zeros((out.shape[0], 2))  # two-sided, one-sided
    weakest = np.full(out.shape[0], math.inf)
    for i in range(points.shape[0]):
        stroke = owner[i]
        column = 0 if out[stroke, 0] >= out[stroke, 1] else 2  # dark groove or bright ridge
        two = contrasts[i, column]
        totals[stroke, 0] += two
        totals[stroke, 1] += contrasts[i, column + 1]
        weakest[stroke] = min(weakest[stroke], two)
    for stroke in range(out.shape[0]):
        if out[stroke, 2] == 0:
            out[stroke, 3:] = -math.inf
            continue
        mean = totals[stroke, 0] / out[stroke, 2]
        out[stroke, 3] = mean
        out[stroke, 4] = weakest[stroke] / mean if mean > 0 else -math.inf
        out[stroke, 5] = totals[stroke, 0] / totals[stroke, 1] if totals[stroke, 1] > 0 else -math.inf


@numba.njit(inline="always")
def _half_crossing(profile: np.ndarray, outer: int, inner: int, half: float, direction: float) -> float:
    # Between the last sample above half height (inner) and the first below it (outer), by linear
    # interpolation; `direction` -1 for the left end, 1 for the right one.
    if outer == inner:
        return float(outer)
    drop = profile[inner] - profile[outer]
    fraction = (profile[inner] - half) / drop if drop > 0 else 0.0
    return inner + direction * min(max(fraction, 0.0), 1.0)


@numba.njit(
    [
        numba.void(
            gray[:, ::1], numba.float64[:, ::1], numba.float64[:, ::1], numba.int64[::1], numba.float64[::1],
            numba.float64[::1], numba.float64[:, ::1], numba.float64[::1], numba.float64[::1],
        )
        for gray in _GRAY_TYPES
    ],
    cache=True,
    nogil=True,
)
def _widths_kernel(
    gray: np.ndarray, points: np.ndarray, normals: np.ndarray, owner: np.ndarray, offsets: np.ndarray,
    ramp: np.ndarray, profiles: np.ndarray, totals: np.ndarray, widths: np.ndarray,
) -> None:
    size = offsets.size
    totals[:] = 0.0
    for i in range(points.shape[0]):
        px, py, nx, ny = points[i, 0], points[i, 1], normals[i, 0], normals[i, 1]
        profile = profiles[i]
        for k in range(size):
            profile[k] = _sample(gray, px + offsets[k] * nx, py + offsets[k] * ny)
        # Against the line between the ends: a gently sloping surface adds nothing.
        first, rise = profile[0], profile[size - 1] - profile[0]
        for k in range(size):
            profile[k] = profile[k] - (first + rise * ramp[k])
            totals[owner[i]] += profile[k]
    for i in range(points.shape[0]):
        profile = profiles[i]
        if totals[owner[i]] < 0:  # a dark groove: measured as a ridge
            for k in range(size):
                profile[k] = -profile[k]
        top = 0
        for k in range(1, size):
            if profile[k] > profile[top]:
                top = k
        peak = profile[top]
        half = 0.5 * peak
        left = -1
        for k in range(top - 1, -1, -1):
            if profile[k] < half:
                left = k
                break
        right = size
        for k in range(top + 1, size):
            if profile[k] < half:
                right = k
                break
        # Where the main lobe crosses half height on either side; a lobe that runs out of the
        # profile ends at its last sample.
        start = _half_crossing(profile, max(left, 0), min(left + 1, top), half, -1.0)
        end = _half_crossing(profile, min(right, size - 1), max(right - 1, top), half, 1.0)
        widths[i] = (end - start) * 0.5 if peak > _FLAT_PEAK else math.inf


_PIECE_POINTS = numba.types.UniTuple(numba.float64[:, ::1], 2)


@numba.njit([_PIECE_POINTS(numba.float64[:, ::1], numba.float64)], cache=True, nogil=True)
def _path_samples_kernel(path: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    # Counts, allocates and fills in one call: the NumPy bound the wrapper used to work out
    # (diff, hypot, ceil, sum, two allocations) cost five times the sampling on a short path.
    empty = np.zeros((0, 2), np.float64)
    for j in range(path.shape[0]):
        if not (math.isfinite(path[j, 0]) and math.isfinite(path[j, 1])):
            return empty, empty.copy()
    total = 0
    for j in range(path.shape[0] - 1):
        length = math.hypot(path[j + 1, 0] - path[j, 0], path[j + 1, 1] - path[j, 1])
        if length > 1e-9:  # a shorter piece (a repeated point) gives no samples
            total += max(1, math.ceil(length / step))
    if total == 0:
        return empty, empty.copy()
    points = np.empty((total + 1, 2), np.float64)
    tangents = np.empty((total + 1, 2), np.float64)
    n = 0
    for j in range(path.shape[0] - 1):
        sx, sy = path[j, 0], path[j, 1]
        dx, dy = path[j + 1, 0] - sx, path[j + 1, 1] - sy
        length = math.hypot(dx, dy)
        if not length > 1e-9:
            continue
        count = max(1, math.ceil(length / step))
        ux, uy = dx / length, dy / length
        for k in range(count):
            fraction = k / count
            points[n, 0] = sx + fraction * dx
            points[n, 1] = sy + fraction * dy
            tangents[n, 0] = ux
            tangents[n, 1] = uy
            n += 1
    # The path's last point, on the last piece's direction.
    points[n, 0] = path[path.shape[0] - 1, 0]
    points[n, 1] = path[path.shape[0] - 1, 1]
    tangents[n, 0] = tangents[n - 1, 0]
    tangents[n, 1] = tangents[n - 1, 1]
    return points, tangents


@numba.njit(
    [numba.void(numba.uint8[:, ::1], numba.int64[:, ::1], numba.int64[:, ::1], numba.float64[:, ::1])],
    cache=True,
    nogil=True,
)
def _neighbourhood_normals_kernel(mask: np.ndarray, centres: np.ndarray, disc: np.ndarray, normals: np.ndarray) -> None:
    for i in range(centres.shape[0]):
        cx, cy = centres[i, 0], centres[i, 1]
        count = 0
        sx = sy = sxx = syy = sxy = 0.0
        for k in range(disc.shape[0]):
            dx, dy = disc[k, 0], disc[k, 1]
            if mask[cy + dy, cx + dx]:
                count += 1
                sx += dx
                sy += dy
                sxx += dx * dx
                syy += dy * dy
                sxy += dx * dy
        if count == 0:  # not possible for a centre on the mask; a defined answer all the same
            count = 1
        mx, my = sx / count, sy / count
        theta = 0.5 * math.atan2(2 * (sxy / count - mx * my), (sxx / count - mx * mx) - (syy / count - my * my))
        normals[i, 0] = -math.sin(theta)
        normals[i, 1] = math.cos(theta)


@numba.njit(
    [numba.int64(numba.float64[:, ::1], numba.float64[::1], numba.float64[:, ::1], numba.float64, numba.boolean[::1])],
    cache=True,
    nogil=True,
)
def _densest_band_kernel(
    points: np.ndarray, centre: np.ndarray, normals: np.ndarray, band: float, in_band: np.ndarray
) -> int:
    # Projection, vote and the best band fused: where NumPy writes (N, A) offsets, then (N, A)
    # bins, then reads them again for the votes, this computes a point's offsets on all
    # directions (a loop LLVM vectorises) into a row that stays in L1, then adds its votes, one
    # to each direction's row: consecutive increments hit different counters, so they do not wait
    # on each other as they would going direction by direction (a line's points share a bin).
    # Each offset is (dx * nx) + (dy * ny), both products rounded, and its bin floor(offset *
    # (1 / band)), as the NumPy reference computes them, so the two agree to the bit (a division
    # per offset cost more than the rest of the vote).
    n_points = points.shape[0]
    n_directions = normals.shape[0]
    nx = np.ascontiguousarray(normals[:, 0])
    ny = np.ascontiguousarray(normals[:, 1])
    reach = 0.0
    for i in range(n_points):
        dx = points[i, 0] - centre[0]
        dy = points[i, 1] - centre[1]
        if not (math.isfinite(dx) and math.isfinite(dy)):
            return -2  # finite points and centre whose difference is not (beyond 1.8e308)
        reach = max(reach, abs(dx) + abs(dy))
    # With |nx|, |ny| <= 1 (the wrapper's check) and rounding monotonic, every offset lies within
    # +-reach, so these bins hold every point; the extra empty bins at the ends change no answer
    # (a pair with an empty bin holds the same points as its neighbour pair).
    per_band = 1.0 / band
    # Sized in floating point first: a reach of many bands would overflow the integers below.
    if not (2.0 * reach * per_band + 3.0) * n_directions <= _MAX_BAND_CELLS:
        return -1
    lowest = np.int64(math.floor(-reach * per_band))
    row_width = np.int64(math.floor(reach * per_band)) - lowest + 2  # one empty bin of padding per row
    votes = np.zeros(n_directions * row_width, np.int32)
    cells = np.empty(n_directions, np.uint32)
    # int32 bins: double -> int64 conversion has no vector instruction before AVX-512.
    row_starts = (np.arange(n_directions) * row_width - lowest).astype(np.int32)
    for i in range(n_points):
        dx = points[i, 0] - centre[0]
        dy = points[i, 1] - centre[1]
        for k in range(n_directions):
            cells[k] = np.uint32(np.int32(np.floor((dx * nx[k] + dy * ny[k]) * per_band)) + row_starts[k])
        for k in range(n_directions):
            votes[cells[k]] += 1  # unsigned: no negative-index wraparound test
    # Two adjacent bins of one direction; ties keep the first direction, then the first bin:
    # each row's best pair first (a max that vectorises), then the first pair that reaches it
    # in the first row that holds the best of all.
    best_pair = np.int32(-1)
    best_direction = 0
    for k in range(n_directions):
        row = k * row_width
        row_best = np.int32(0)
        for b in range(row_width - 1):
            row_best = max(row_best, votes[row + b] + votes[row + b + 1])
        if row_best > best_pair:
            best_pair, best_direction = row_best, k
    row = best_direction * row_width
    best_bin = np.int64(0)
    while votes[row + best_bin] + votes[row + best_bin + 1] != best_pair:
        best_bin += 1
    for i in range(n_points):
        dx = points[i, 0] - centre[0]
        dy = points[i, 1] - centre[1]
        point_bin = np.int64(math.floor((dx * nx[best_direction] + dy * ny[best_direction]) * per_band)) - lowest
        in_band[i] = best_bin <= point_bin <= best_bin + 1
    return best_direction


@numba.njit([numba.void(numba.float64[:, ::1], numba.float64[::1])], cache=True, nogil=True)
def _point_mean_kernel(points: np.ndarray, mean: np.ndarray) -> None:
    # Row after row, as NumPy's mean over axis 0 of a C-contiguous (N, 2) array adds them, so the
    # result is the same to the bit. That reduction, not the adding, cost tens of microseconds.
    sum_x = 0.0
    sum_y = 0.0
    for i in range(points.shape[0]):
        sum_x += points[i, 0]
        sum_y += points[i, 1]
    mean[0] = sum_x / points.shape[0]
    mean[1] = sum_y / points.shape[0]


@numba.njit(
    [numba.int64(numba.int32[:, :], numba.int32, numba.int64, numba.int64, numba.float64[:, ::1])],
    cache=True,
    nogil=True,
)
def _label_pixels_kernel(labels: np.ndarray, label: int, x0: int, y0: int, pixels: np.ndarray) -> int:
    # Row by row, as np.nonzero lists them; a pixel past the buffer is only counted, so the
    # caller can retry with room for all. One pass, no (H, W) bool temporary.
    found = 0
    for y in range(labels.shape[0]):
        for x in range(labels.shape[1]):
            if labels[y, x] == label:
                if found < pixels.shape[0]:
                    pixels[found, 0] = x + x0
                    pixels[found, 1] = y + y0
                found += 1
    return found


def _gray_for_kernel(gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError("gray must be a non-empty 2-D image")
    if gray.dtype not in (np.uint8, np.float32, np.float64):
        gray = gray.astype(np.float64)
    return np.ascontiguousarray(gray)


def _samples_for_kernel(
    points: np.ndarray, normals: np.ndarray, owner: np.ndarray, n_strokes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points = np.ascontiguousarray(points, np.float64).reshape(-1, 2)
    normals = np.ascontiguousarray(normals, np.float64).reshape(-1, 2)
    owner = np.ascontiguousarray(owner, np.int64).reshape(-1)
    if not (points.shape[0] == normals.shape[0] == owner.shape[0]):
        raise ValueError("points, normals and owner must have one row per sample")
    if owner.size and (int(owner.min()) < 0 or int(owner.max()) >= n_strokes):
        raise ValueError(f"owner must lie in [0, {n_strokes})")
    return points, normals, owner


def profile_figures(
    gray: np.ndarray, points: np.ndarray, normals: np.ndarray, owner: np.ndarray, n_strokes: int, flank_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stroke, `vision.damage.ridge_profiles`' three figures from its samples: `points` (N, 2,
    x, y px in `gray`), the unit `normals` (N, 2) across the stroke there and `owner` (N,) the
    stroke (0 .. `n_strokes` - 1) each sample belongs to. At each sample the stroke's value is the
    darkest (brightest) of the points `ACROSS_PX` across it, its flanks the points `flank_px` away
    on either side; the polarity per stroke is the one with the larger total two-sided contrast.

    Returns (mean two-sided contrast, weakest sample's over the mean, two-sided over one-sided
    contrast), float64 (S,) each; a stroke without contrast, or without samples, gets -inf."""
    gray = _gray_for_kernel(gray)
    points, normals, owner = _samples_for_kernel(points, normals, owner, n_strokes)
    offsets = np.array([*ACROSS_PX, flank_px, -flank_px], np.float64)
    contrasts = np.empty((points.shape[0], 4), np.float64)
    out = np.empty((n_strokes, 6), np.float64)
    _profile_figures_kernel(gray, points, normals, owner, offsets, contrasts, out)
    return out[:, 3].copy(), out[:, 4].copy(), out[:, 5].copy()


def profile_offsets(reach_px: float) -> np.ndarray:
    """The offsets across a stroke (px) at which `widths_at` samples its profile: every half pixel
    out to `reach_px` (at least 1) either side."""
    half_steps = math.floor(2 * max(reach_px, 1.0))
    return np.arange(-half_steps, half_steps + 1) * 0.5


def widths_at(
    gray: np.ndarray, points: np.ndarray, normals: np.ndarray, owner: np.ndarray, n_strokes: int, reach_px: float
) -> np.ndarray:
    """The width (px) of the ridge across `normals` at each sample (as `profile_figures` takes
    them): the grey profile across the stroke at `profile_offsets(reach_px)`, taken against the
    straight line between its two ends, flipped for a dark groove (the sign of its stroke's total
    contrast), is as wide as its main lobe, the run of offsets around its peak that stay above half
    of it, with the half-height crossings interpolated. inf where the profile has no peak.
    float64 (N,)."""
    gray = _gray_for_kernel(gray)
    points, normals, owner = _samples_for_kernel(points, normals, owner, n_strokes)
    offsets = profile_offsets(reach_px)
    ramp = np.linspace(0.0, 1.0, offsets.size)
    profiles = np.empty((points.shape[0], offsets.size), np.float64)
    totals = np.empty(max(n_strokes, 1), np.float64)
    widths = np.empty(points.shape[0], np.float64)
    _widths_kernel(gray, points, normals, owner, offsets, ramp, profiles, totals, widths)
    return widths


def path_samples(path: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every `step` px along the open polyline `path` (M, 2; x, y) and the unit direction of
    the piece each lies on: each piece from its start in ceil(length / step) equal parts, then the
    path's last point on the last piece's direction. Pieces shorter than 1e-9 px are skipped; a
    path without length, or with a point that is not finite, gives none. float64 (K, 2) each."""
    path = np.ascontiguousarray(path, np.float64).reshape(-1, 2)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be positive, got {step!r}")
    return _path_samples_kernel(path, float(step))


def disc_offsets(radius_px: float) -> np.ndarray:
    """Integer offsets (K, 2; x, y) within `radius_px` of the origin, the origin included, row by row."""
    return _disc(radius_px).copy()


@functools.lru_cache(maxsize=8)
def _disc(radius_px: float) -> np.ndarray:
    # One array per radius, shared by the kernel's calls (which only read it).
    r = math.floor(max(radius_px, 0.0))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = dx**2 + dy**2 <= radius_px**2
    return np.ascontiguousarray(np.stack([dx[inside], dy[inside]], axis=1), np.int64)


def neighbourhood_normals(mask: np.ndarray, centres: np.ndarray, radius_px: float) -> np.ndarray:
    """At each of `centres` (K, 2; integer x, y into `mask`), the unit normal to the principal axis
    of the mask's pixels within `radius_px` (the direction a line of pixels runs in there): with
    the second moments of those pixels' offsets about their mean, theta = atan2(2 sxy, sxx - syy)
    / 2, normal (-sin theta, cos theta). `mask` (2-D, nonzero = pixel) must reach `radius_px`
    beyond every centre. float64 (K, 2)."""
    mask = np.ascontiguousarray(mask).view(np.uint8) if np.asarray(mask).dtype == np.bool_ else (
        np.ascontiguousarray(mask, np.uint8)
    )
    centres = np.ascontiguousarray(centres, np.int64).reshape(-1, 2)
    disc = _disc(float(radius_px))
    r = math.floor(max(radius_px, 0.0))
    if mask.ndim != 2:
        raise ValueError("mask must be 2-D")
    if centres.size and (
        int(centres[:, 0].min()) < r or int(centres[:, 1].min()) < r
        or int(centres[:, 0].max()) >= mask.shape[1] - r or int(centres[:, 1].max()) >= mask.shape[0] - r
    ):
        raise ValueError(f"every centre must lie at least {r} px inside the mask")
    normals = np.empty((centres.shape[0], 2), np.float64)
    _neighbourhood_normals_kernel(mask, centres, disc, normals)
    return normals


# --- NumPy references ---------------------------------------------------------------------------


def label_pixels(labels: np.ndarray, label: int, x0: int = 0, y0: int = 0, expected: int = 0) -> np.ndarray:
    """Pixel centres (N, 2, float64 x, y) of the pixels of `labels` (a 2-D int32 array, any
    strides: a window of a larger label image) equal to `label`, row by row, offset by (x0, y0):
    the window's corner in the larger image. `expected`: the number of such pixels when known
    (room for them is made up front; a wrong guess costs a second pass, not a wrong answer)."""
    if labels.dtype != np.int32 or labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D int32 array, got {labels.dtype} with shape {labels.shape}")
    pixels = np.empty((max(int(expected), 0), 2), np.float64)
    found = _label_pixels_kernel(labels, np.int32(label), int(x0), int(y0), pixels)
    if found > pixels.shape[0]:
        pixels = np.empty((found, 2), np.float64)
        _label_pixels_kernel(labels, np.int32(label), int(x0), int(y0), pixels)
    return pixels[:found]


def point_mean(points: np.ndarray) -> np.ndarray:
    """The mean (2,) of points (N, 2), N >= 1: `points.mean(axis=0)`, without NumPy's reduction
    overhead."""
    points = np.ascontiguousarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (N, 2) array, got shape {points.shape}")
    mean = np.empty(2, np.float64)
    _point_mean_kernel(points, mean)
    return mean


def densest_band(points: np.ndarray, centre: np.ndarray, normals: np.ndarray, band: float) -> tuple[int, np.ndarray]:
    """The densest straight band of `points` (N, 2; x, y) over the directions whose unit normals
    are `normals` (A, 2): each point's offset from `centre` (2,) along each normal, binned into
    bands `band` wide (floor(offset * (1 / band))); the band is two adjacent bins of one direction with
    the most points (ties: the first direction, then the first bin).

    Returns (direction index, in_band bool (N,): the points in that band). Refuses no points or
    directions, a band that is not positive, and points, centre or normals that are not finite
    or normals with a component beyond +-1."""
    points = np.ascontiguousarray(points, np.float64)
    centre = np.ascontiguousarray(centre, np.float64)
    normals = np.ascontiguousarray(normals, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (N, 2) array, got shape {points.shape}")
    if normals.ndim != 2 or normals.shape[1] != 2 or normals.shape[0] == 0:
        raise ValueError(f"normals must be a non-empty (A, 2) array, got shape {normals.shape}")
    if centre.shape != (2,):
        raise ValueError(f"centre must have shape (2,), got {centre.shape}")
    if not (math.isfinite(band) and band > 0):
        raise ValueError(f"band must be positive, got {band!r}")
    if not (np.isfinite(points).all() and np.isfinite(centre).all()):
        raise ValueError("points and centre must be finite")
    # Not finite fails the comparison too. The kernel sizes its bins on |component| <= 1.
    if not (np.abs(normals) <= 1.0).all():
        raise ValueError("normals must be finite, each component within +-1")
    in_band = np.empty(points.shape[0], np.bool_)
    direction = _densest_band_kernel(points, centre, normals, float(band), in_band)
    if direction == -2:
        raise ValueError("points and centre must be finite, and so their differences")
    if direction < 0:
        raise ValueError(
            f"points spread over too many bands of {band!r} px: more than {_MAX_BAND_CELLS} vote cells"
        )
    return int(direction), in_band


def bilinear_reference(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`image` (2-D, any real dtype) at sub-pixel points (..., 2) as (x, y), in float64, clamped to
    the image; a point that is not a number reads the top-left pixel."""
    height, width = image.shape
    # Comparisons are false for NaN, which so lands on 0.
    x = np.where(points[..., 0] > 0.0, np.minimum(points[..., 0], width - 1.0), 0.0)
    y = np.where(points[..., 1] > 0.0, np.minimum(points[..., 1], height - 1.0), 0.0)
    x0, y0 = x.astype(np.intp), y.astype(np.intp)  # truncation is the floor here: x, y >= 0
    fx, fy = x - x0, y - y0
    right = (x0 < width - 1).astype(np.intp)  # no right (lower) neighbour on the last column (row)
    down = (y0 < height - 1) * width
    flat = image.ravel()
    at = y0 * width + x0
    top = flat[at] * (1 - fx) + flat[at + right] * fx
    bottom = flat[at + down] * (1 - fx) + flat[at + down + right] * fx
    return top * (1 - fy) + bottom * fy


def profile_figures_reference(
    gray: np.ndarray, points: np.ndarray, normals: np.ndarray, owner: np.ndarray, n_strokes: int, flank_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised NumPy twin of `profile_figures` (same output)."""
    points, normals = np.asarray(points, np.float64).reshape(-1, 2), np.asarray(normals, np.float64).reshape(-1, 2)
    owner = np.asarray(owner, np.int64).reshape(-1)
    offsets = np.array([*ACROSS_PX, flank_px, -flank_px])
    values = bilinear_reference(gray, points[:, None, :] + offsets[None, :, None] * normals[:, None, :])
    across, flank_a, flank_b = values[:, : len(ACROSS_PX)], values[:, -2], values[:, -1]
    near_flank, far_flank = np.minimum(flank_a, flank_b), np.maximum(flank_a, flank_b)
    darkest, brightest = across.min(axis=1), across.max(axis=1)
    dark_two, dark_one = near_flank - darkest, far_flank - darkest
    bright_two, bright_one = brightest - far_flank, brightest - near_flank
    counts = np.bincount(owner, minlength=n_strokes)
    dark = np.bincount(owner, dark_two, n_strokes) >= np.bincount(owner, bright_two, n_strokes)
    two = np.where(dark[owner], dark_two, bright_two)
    one = np.where(dark[owner], dark_one, bright_one)
    total_two = np.bincount(owner, two, n_strokes)
    weakest = np.full(n_strokes, np.inf)
    np.minimum.at(weakest, owner, two)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(counts > 0, total_two / counts, -np.inf)
        gap_ratio = np.where(mean > 0, weakest / mean, -np.inf)
        total_one = np.bincount(owner, one, n_strokes)
        two_sided = np.where((total_one > 0) & (counts > 0), total_two / total_one, -np.inf)
    return mean, gap_ratio, two_sided


def widths_at_reference(
    gray: np.ndarray, points: np.ndarray, normals: np.ndarray, owner: np.ndarray, n_strokes: int, reach_px: float
) -> np.ndarray:
    """Vectorised NumPy twin of `widths_at` (same output)."""
    points, normals = np.asarray(points, np.float64).reshape(-1, 2), np.asarray(normals, np.float64).reshape(-1, 2)
    owner = np.asarray(owner, np.int64).reshape(-1)
    offsets = profile_offsets(reach_px)
    values = bilinear_reference(gray, points[:, None, :] + offsets[None, :, None] * normals[:, None, :])
    ramp = np.linspace(0.0, 1.0, offsets.size)
    profile = values - (values[:, :1] + (values[:, -1:] - values[:, :1]) * ramp[None, :])
    sign = np.where(np.bincount(owner, profile.sum(axis=1), n_strokes) >= 0, 1.0, -1.0)
    profile *= sign[owner][:, None]
    top = profile.argmax(axis=1)
    peak = profile[np.arange(top.size), top]
    below = profile < 0.5 * peak[:, None]
    index = np.arange(offsets.size)[None, :]
    left = np.where(below & (index < top[:, None]), index, -1).max(axis=1)
    right = np.where(below & (index > top[:, None]), index, offsets.size).min(axis=1)
    # Column 0 the left half-height crossing, column 1 the right one.
    outer = np.stack([np.maximum(left, 0), np.minimum(right, offsets.size - 1)], axis=1)
    inner = np.stack([np.minimum(left + 1, top), np.maximum(right - 1, top)], axis=1)
    inner_value = np.take_along_axis(profile, inner, axis=1)
    drop = inner_value - np.take_along_axis(profile, outer, axis=1)
    fraction = np.clip((inner_value - 0.5 * peak[:, None]) / np.where(drop > 0, drop, np.inf), 0.0, 1.0)
    ends = np.where(outer == inner, outer, inner + fraction * np.array([-1.0, 1.0]))
    return np.where(peak > _FLAT_PEAK, (ends[:, 1] - ends[:, 0]) * 0.5, np.inf)


def path_samples_reference(path: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised NumPy twin of `path_samples` (same output)."""
    path = np.asarray(path, np.float64).reshape(-1, 2)
    if path.shape[0] < 2 or not np.isfinite(path).all():
        return np.zeros((0, 2)), np.zeros((0, 2))
    pieces = np.diff(path, axis=0)
    lengths = np.hypot(pieces[:, 0], pieces[:, 1])
    keep = lengths > 1e-9
    if not keep.any():
        return np.zeros((0, 2)), np.zeros((0, 2))
    starts, pieces, lengths = path[:-1][keep], pieces[keep], lengths[keep]
    counts = np.maximum(1, np.ceil(lengths / step)).astype(np.int64)
    owner = np.repeat(np.arange(lengths.size), counts)
    first = np.cumsum(counts) - counts
    fraction = (np.arange(owner.size) - first[owner]) / counts[owner]
    points = starts[owner] + fraction[:, None] * pieces[owner]
    directions = pieces / lengths[:, None]
    return np.concatenate([points, path[-1:]]), np.concatenate([directions[owner], directions[-1:]])


def neighbourhood_normals_reference(mask: np.ndarray, centres: np.ndarray, radius_px: float) -> np.ndarray:
    """Vectorised NumPy twin of `neighbourhood_normals` (same output up to rounding): all centres'
    neighbours at once, by distance to every pixel of the mask."""
    ys, xs = np.nonzero(np.asarray(mask))
    pixels = np.stack([xs, ys], axis=1).astype(np.float64)
    offsets = pixels[None, :, :] - np.asarray(centres, np.float64).reshape(-1, 1, 2)
    near = (offsets**2).sum(axis=2) <= radius_px**2
    weight = near / np.maximum(near.sum(axis=1, keepdims=True), 1)
    mean = np.einsum("kn,knc->kc", weight, offsets)
    centred = offsets - mean[:, None, :]
    sxx = np.einsum("kn,kn->k", weight, centred[..., 0] ** 2)
    syy = np.einsum("kn,kn->k", weight, centred[..., 1] ** 2)
    sxy = np.einsum("kn,kn->k", weight, centred[..., 0] * centred[..., 1])
    theta = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    return np.stack([-np.sin(theta), np.cos(theta)], axis=1)


def densest_band_reference(
    points: np.ndarray, centre: np.ndarray, normals: np.ndarray, band: float
) -> tuple[int, np.ndarray]:
    """NumPy twin of `densest_band` (same output): the offsets as an (N, A) array, then
    `kernels.band_votes_reference`."""
    offsets = np.asarray(points, np.float64) - np.asarray(centre, np.float64)
    normals = np.asarray(normals, np.float64)
    projected = offsets[:, :1] * normals[:, 0] + offsets[:, 1:] * normals[:, 1]
    bins, votes = kernels.band_votes_reference(projected, band)
    paired = votes[:, :-1] + votes[:, 1:]
    direction = int(np.argmax(paired.max(axis=1)))
    first_bin = int(np.argmax(paired[direction]))
    return direction, (bins[:, direction] >= first_bin) & (bins[:, direction] <= first_bin + 1)


def point_mean_reference(points: np.ndarray) -> np.ndarray:
    """NumPy twin of `point_mean` (same output)."""
    return np.asarray(points, np.float64).mean(axis=0)


def label_pixels_reference(labels: np.ndarray, label: int, x0: int = 0, y0: int = 0) -> np.ndarray:
    """NumPy twin of `label_pixels` (same output)."""
    ys, xs = np.nonzero(labels == label)
    return np.stack([xs + x0, ys + y0], axis=1).astype(np.float64)
