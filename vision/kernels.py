"""Numba kernels for the damage check, numbagg style.

Each kernel is a plain loop with an explicit signature (compiled, or loaded from the cache under
NUMBA_CACHE_DIR, when this module is imported), `nogil` so worker threads run it in parallel, and
`cache=True` so a warm start skips the JIT. Kernels never validate: the public wrapper next to
each one checks dtype and shape, allocates the outputs and hands C-contiguous arrays down. Each
kernel has a vectorised NumPy reference (`*_reference`) with the same output, which the tests
compare against and the benchmark times.
"""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np

Polarity = Literal["both", "bright", "dark"]
_POLARITY_CODES: dict[str, int] = {"both": 0, "bright": 1, "dark": 2}

# Offsets (dy, dx) of the two flanking samples for each orientation; the line direction is
# perpendicular to the offset. LINE_ANGLES_DEG gives that direction in image convention.
ORIENTATION_OFFSETS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (1, -1))
LINE_ANGLES_DEG: tuple[float, ...] = (90.0, 0.0, 135.0, 45.0)
MAX_RADIUS = 64

# Columns of the per-component statistics table.
STAT_COUNT = 0
STAT_SUM_X = 1
STAT_SUM_Y = 2
STAT_SUM_XX = 3
STAT_SUM_YY = 4
STAT_SUM_XY = 5
STAT_SUM_RESPONSE = 6
STAT_MAX_RESPONSE = 7
STAT_ORIENTATION_0 = 8  # 8..11: pixel counts per orientation index
N_STATS = 12


# --- line (ridge) response ---------------------------------------------------------------------


@numba.njit(
    [numba.void(numba.uint8[:, ::1], numba.int64, numba.int64, numba.float32[:, ::1], numba.uint8[:, ::1])],
    cache=True,
    nogil=True,
)
def _line_response_kernel(
    gray: np.ndarray, radius: int, polarity: int, response: np.ndarray, orientation: np.ndarray
) -> None:
    height, width = gray.shape
    response[:, :] = 0.0
    orientation[:, :] = 0
    r = radius
    # Polarity as two 0/1 weights instead of a branch keeps the inner loop straight-line code
    # that LLVM vectorises; a disabled polarity contributes a large negative instead of its value.
    use_bright = polarity != 2
    use_dark = polarity != 1
    off_bright = np.int32(0 if use_bright else -100000)
    off_dark = np.int32(0 if use_dark else -100000)
    for y in range(r, height - r):
        up = gray[y - r]
        row = gray[y]
        down = gray[y + r]
        out = response[y]
        out_o = orientation[y]
        for x in range(r, width - r):
            c = np.int32(row[x])
            # Flank pairs: horizontal neighbours (vertical line), vertical, and both diagonals.
            a0 = np.int32(row[x - r])
            b0 = np.int32(row[x + r])
            a1 = np.int32(up[x])
            b1 = np.int32(down[x])
            a2 = np.int32(up[x - r])
            b2 = np.int32(down[x + r])
            a3 = np.int32(up[x + r])
            b3 = np.int32(down[x - r])
            # A ridge must stand out against both flanks; a step edge beats only one of them.
            v0 = max(min(c - a0, c - b0) + off_bright, min(a0 - c, b0 - c) + off_dark)
            v1 = max(min(c - a1, c - b1) + off_bright, min(a1 - c, b1 - c) + off_dark)
            v2 = max(min(c - a2, c - b2) + off_bright, min(a2 - c, b2 - c) + off_dark)
            v3 = max(min(c - a3, c - b3) + off_bright, min(a3 - c, b3 - c) + off_dark)
            best = np.int32(0)
            best_o = np.uint8(0)
            if v0 > best:
                best = v0
            if v1 > best:
                best = v1
                best_o = np.uint8(1)
            if v2 > best:
                best = v2
                best_o = np.uint8(2)
            if v3 > best:
                best = v3
                best_o = np.uint8(3)
            out[x] = np.float32(best)
            out_o[x] = best_o


def _check_gray(gray: np.ndarray) -> None:
    if not isinstance(gray, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(gray).__name__}")
    if gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 grayscale image, got dtype {gray.dtype}")
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got {gray.ndim} dimensions")


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, int | np.integer):
        raise ValueError(f"radius must be an integer, got {radius!r}")
    if not 1 <= int(radius) <= MAX_RADIUS:
        raise ValueError(f"radius must be in 1..{MAX_RADIUS}, got {radius}")
    return int(radius)


def _polarity_code(polarity: str) -> int:
    try:
        return _POLARITY_CODES[polarity]
    except KeyError:
        raise ValueError(f"polarity must be one of {sorted(_POLARITY_CODES)}, got {polarity!r}") from None


def line_response(gray: np.ndarray, radius: int = 3, polarity: Polarity = "both") -> tuple[np.ndarray, np.ndarray]:
    """Thin-line strength per pixel: over 4 orientations, by how many grey levels the pixel beats
    both samples `radius` px away on either side (brighter for "bright", darker for "dark").

    Returns (response float32 >= 0, orientation uint8 index into LINE_ANGLES_DEG), both shaped like
    `gray`; pixels within `radius` of the border get 0. Ties go to the lowest orientation index.
    """
    _check_gray(gray)
    r = _check_radius(radius)
    code = _polarity_code(polarity)
    response = np.empty(gray.shape, np.float32)
    orientation = np.empty(gray.shape, np.uint8)
    if gray.size:
        _line_response_kernel(np.ascontiguousarray(gray), r, code, response, orientation)
    return response, orientation


def line_response_reference(
    gray: np.ndarray, radius: int = 3, polarity: Polarity = "both"
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised NumPy twin of `line_response` (same outputs, bit for bit)."""
    _check_gray(gray)
    r = _check_radius(radius)
    code = _polarity_code(polarity)
    height, width = gray.shape
    response = np.zeros(gray.shape, np.float32)
    orientation = np.zeros(gray.shape, np.uint8)
    if height <= 2 * r or width <= 2 * r:
        return response, orientation
    g = gray.astype(np.int32)
    c = g[r : height - r, r : width - r]
    per_orientation = []
    for dy, dx in ORIENTATION_OFFSETS:
        a = g[r - dy * r : height - r - dy * r, r - dx * r : width - r - dx * r]
        b = g[r + dy * r : height - r + dy * r, r + dx * r : width - r + dx * r]
        bright = np.minimum(c - a, c - b)
        dark = np.minimum(a - c, b - c)
        per_orientation.append(bright if code == 1 else dark if code == 2 else np.maximum(bright, dark))
    stacked = np.stack(per_orientation)
    best = stacked.max(axis=0)
    positive = best > 0
    response[r : height - r, r : width - r] = np.where(positive, best, 0)
    orientation[r : height - r, r : width - r] = np.where(positive, stacked.argmax(axis=0), 0)
    return response, orientation


# --- per-component statistics ------------------------------------------------------------------


@numba.njit(
    [
        numba.void(
            numba.uint8[:, ::1], numba.int32[:, ::1], numba.float32[:, ::1], numba.uint8[:, ::1], numba.float64[:, ::1]
        )
    ],
    cache=True,
    nogil=True,
)
def _component_stats_kernel(
    foreground: np.ndarray, labels: np.ndarray, response: np.ndarray, orientation: np.ndarray, stats: np.ndarray
) -> None:
    height, width = labels.shape
    n_labels = stats.shape[0]
    stats[:, :] = 0.0
    # Defects cover a few percent of the surface, so most of the time goes into skipping
    # background: test the 1-byte mask eight pixels at a time through a uint64 view, and read the
    # 4-byte labels only under the mask.
    flat = foreground.reshape(-1)
    n_words = flat.size // 8
    words = flat[: n_words * 8].view(np.uint64)
    for y in range(height):
        mask_row = foreground[y]
        label_row = labels[y]
        response_row = response[y]
        orientation_row = orientation[y]
        fy = np.float64(y)
        row_start = y * width
        x = 0
        while x < width:
            flat_index = row_start + x
            aligned_word_in_row = flat_index % 8 == 0 and flat_index // 8 < n_words and x + 8 <= width
            if aligned_word_in_row and words[flat_index // 8] == 0:
                x += 8
                continue
            if mask_row[x] == 0:
                x += 1
                continue
            label = label_row[x]
            # Label 0 is background and out-of-range labels are not trusted.
            if label <= 0 or label >= n_labels:
                x += 1
                continue
            # Accumulate a whole run of this label in registers, then write the table once:
            # a read-modify-write of the table per pixel is what makes the naive loop slow.
            count = 0.0
            sum_x = 0.0
            sum_xx = 0.0
            sum_v = 0.0
            max_v = 0.0
            o0 = 0.0
            o1 = 0.0
            o2 = 0.0
            o3 = 0.0
            while x < width and mask_row[x] != 0 and label_row[x] == label:
                v = np.float64(response_row[x])
                fx = np.float64(x)
                count += 1.0
                sum_x += fx
                sum_xx += fx * fx
                sum_v += v
                max_v = max(max_v, v)
                o = orientation_row[x]
                o0 += o == 0
                o1 += o == 1
                o2 += o == 2
                o3 += o == 3
                x += 1
            s = stats[label]
            s[0] += count
            s[1] += sum_x
            s[2] += count * fy
            s[3] += sum_xx
            s[4] += count * fy * fy
            s[5] += sum_x * fy
            s[6] += sum_v
            s[7] = max(s[7], max_v)
            s[8] += o0
            s[9] += o1
            s[10] += o2
            s[11] += o3


def _check_component_inputs(
    foreground: np.ndarray, labels: np.ndarray, response: np.ndarray, orientation: np.ndarray, n_labels: int
) -> None:
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.ndim != 2:
        raise ValueError("labels must be a 2-D int32 array")
    for name, array, dtype in (
        ("foreground", foreground, np.uint8),
        ("response", response, np.float32),
        ("orientation", orientation, np.uint8),
    ):
        if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != labels.shape:
            raise ValueError(f"{name} must be a {np.dtype(dtype).name} array shaped like labels")
    if isinstance(n_labels, bool) or not isinstance(n_labels, int | np.integer) or n_labels < 1:
        raise ValueError(f"n_labels must be a positive integer, got {n_labels!r}")


def component_stats(
    foreground: np.ndarray, labels: np.ndarray, response: np.ndarray, orientation: np.ndarray, n_labels: int
) -> np.ndarray:
    """Per-component statistics for `n_labels, labels = cv2.connectedComponents(foreground)`.

    Only pixels where `foreground` is non-zero are visited (cv2 labels everything else 0). For each
    label 1..n_labels-1: pixel count; sums of x, y, x*x, y*y, x*y (centroid and second moments);
    sum and max of `response` (expected >= 0); and a histogram of the pixels' orientation indices
    (a scratch has one dominant orientation, a branching crack several). Labels outside
    1..n_labels-1 are ignored. Returns float64 (n_labels, N_STATS), columns STAT_*; row 0 is zeros.
    """
    _check_component_inputs(foreground, labels, response, orientation, n_labels)
    stats = np.empty((int(n_labels), N_STATS), np.float64)
    _component_stats_kernel(
        np.ascontiguousarray(foreground),
        np.ascontiguousarray(labels),
        np.ascontiguousarray(response),
        np.ascontiguousarray(orientation),
        stats,
    )
    return stats


def component_stats_reference(
    foreground: np.ndarray, labels: np.ndarray, response: np.ndarray, orientation: np.ndarray, n_labels: int
) -> np.ndarray:
    """Vectorised NumPy twin of `component_stats` (equal up to float summation order)."""
    _check_component_inputs(foreground, labels, response, orientation, n_labels)
    n = int(n_labels)
    ys, xs = np.nonzero((foreground != 0) & (labels > 0) & (labels < n))
    lab = labels[ys, xs]
    v = response[ys, xs].astype(np.float64)
    fx, fy = xs.astype(np.float64), ys.astype(np.float64)
    o = orientation[ys, xs]
    stats = np.zeros((n, N_STATS), np.float64)
    columns: list[tuple[int, np.ndarray | None]] = [
        (STAT_COUNT, None),
        (STAT_SUM_X, fx),
        (STAT_SUM_Y, fy),
        (STAT_SUM_XX, fx * fx),
        (STAT_SUM_YY, fy * fy),
        (STAT_SUM_XY, fx * fy),
        (STAT_SUM_RESPONSE, v),
    ]
    columns += [(STAT_ORIENTATION_0 + k, (o == k).astype(np.float64)) for k in range(4)]
    for column, weights in columns:
        stats[:, column] = np.bincount(lab, weights=weights, minlength=n)[:n]
    np.maximum.at(stats[:, STAT_MAX_RESPONSE], lab, v)
    stats[0] = 0.0
    return stats


# --- per-tile statistics -----------------------------------------------------------------------

TILE_COUNT = 0  # pixels of the tile inside the mask
TILE_DARK = 1  # of those, how many are darker than `dark_level`
TILE_BRIGHT = 2  # ... brighter than `bright_level`
TILE_LINE = 3  # ... with a line response above `line_threshold`
TILE_SUM_RESPONSE = 4
N_TILE_STATS = 5


@numba.njit(
    [
        numba.void(
            numba.uint8[:, ::1], numba.float32[:, ::1], numba.uint8[:, ::1], numba.int64, numba.int64, numba.int64,
            numba.float64, numba.float64[:, :, ::1],
        )
    ],
    cache=True,
    nogil=True,
    # Reassociation lets LLVM vectorise the float sum; the reference then agrees to rounding only.
    fastmath={"reassoc", "nsz", "contract"},
)
def _tile_stats_kernel(
    gray: np.ndarray,
    response: np.ndarray,
    mask: np.ndarray,
    tile: int,
    dark_level: int,
    bright_level: int,
    line_threshold: float,
    out: np.ndarray,
) -> None:
    height, width = gray.shape
    out[:, :, :] = 0.0
    # Thresholds in the pixels' own types: mixed-type compares stop the vectorisation.
    dark_u8 = np.uint8(min(max(dark_level, 0), 255))
    bright_u8 = np.uint8(min(max(bright_level, 0), 255))
    line_f32 = np.float32(line_threshold)
    # Tile by tile, with the five sums in registers for the whole block and the mask as a 0/1
    # weight instead of a branch; the table is written once per tile.
    for ty in range(out.shape[0]):
        y0 = ty * tile
        y1 = min(y0 + tile, height)
        for tx in range(out.shape[1]):
            x0 = tx * tile
            x1 = min(x0 + tile, width)
            count = np.int32(0)
            dark = np.int32(0)
            bright = np.int32(0)
            line = np.int32(0)
            total = np.float32(0.0)
            for y in range(y0, y1):
                g_row = gray[y]
                r_row = response[y]
                m_row = mask[y]
                for x in range(x0, x1):
                    m = np.int32(m_row[x] != 0)
                    v = r_row[x]
                    count += m
                    dark += m & np.int32(g_row[x] < dark_u8)
                    bright += m & np.int32(g_row[x] > bright_u8)
                    line += m & np.int32(v > line_f32)
                    total += np.float32(m) * v
            cell = out[ty, tx]
            cell[0] = count
            cell[1] = dark
            cell[2] = bright
            cell[3] = line
            cell[4] = total


def _check_tile_inputs(gray: np.ndarray, response: np.ndarray, mask: np.ndarray, tile: int) -> int:
    _check_gray(gray)
    for name, array, dtype in (("response", response, np.float32), ("mask", mask, np.uint8)):
        if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != gray.shape:
            raise ValueError(f"{name} must be a {np.dtype(dtype).name} array shaped like gray")
    if isinstance(tile, bool) or not isinstance(tile, int | np.integer) or not 1 <= int(tile) <= 1024:
        raise ValueError(f"tile must be an integer in 1..1024, got {tile!r}")
    return int(tile)


def tile_stats(
    gray: np.ndarray,
    response: np.ndarray,
    mask: np.ndarray,
    tile: int = 16,
    dark_level: int = 70,
    bright_level: int = 190,
    line_threshold: float = 10.0,
) -> np.ndarray:
    """Per `tile` x `tile` block (the last row/column of tiles may be partial), over the pixels where
    `mask` is non-zero: count, dark count, bright count, line-pixel count, sum of response.

    Returns float64 (ceil(h/tile), ceil(w/tile), N_TILE_STATS), columns TILE_*. A printed label is
    a block of tiles that are dark and bright at once; the median tile response is the noise floor.
    """
    t = _check_tile_inputs(gray, response, mask, tile)
    height, width = gray.shape
    out = np.empty((-(-height // t), -(-width // t), N_TILE_STATS), np.float64)
    if gray.size:
        _tile_stats_kernel(
            np.ascontiguousarray(gray), np.ascontiguousarray(response), np.ascontiguousarray(mask),
            t, int(dark_level), int(bright_level), float(line_threshold), out,
        )
    return out


def tile_stats_reference(
    gray: np.ndarray,
    response: np.ndarray,
    mask: np.ndarray,
    tile: int = 16,
    dark_level: int = 70,
    bright_level: int = 190,
    line_threshold: float = 10.0,
) -> np.ndarray:
    """Vectorised NumPy twin of `tile_stats` (equal up to float summation order)."""
    t = _check_tile_inputs(gray, response, mask, tile)
    height, width = gray.shape
    out = np.zeros((-(-height // t), -(-width // t), N_TILE_STATS), np.float64)
    if not gray.size:
        return out
    inside = mask != 0
    planes = (
        inside,
        inside & (gray < dark_level),
        inside & (gray > bright_level),
        inside & (response > line_threshold),
        np.where(inside, response.astype(np.float64), 0.0),
    )
    rows, cols = np.arange(0, height, t), np.arange(0, width, t)
    for k, plane in enumerate(planes):
        summed = np.add.reduceat(np.add.reduceat(plane.astype(np.float64), rows, axis=0), cols, axis=1)
        out[:, :, k] = summed
    return out
