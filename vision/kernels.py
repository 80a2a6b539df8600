"""Numba kernels for the damage check, numbagg style.

Each kernel is a plain loop with an explicit signature (compiled, or loaded from the cache under
NUMBA_CACHE_DIR, when this module is imported), `nogil` so worker threads run it in parallel, and
`cache=True` so a warm start skips the JIT. Kernels never validate: the public wrapper next to
each one checks dtype and shape, allocates the outputs and hands C-contiguous arrays down. Each
kernel has a vectorised NumPy reference (`*_reference`) with the same output, which the tests
compare against and the benchmark times; the connected-component labelling, which NumPy has no
vectorised form of, is compared with OpenCV's instead.
"""

from __future__ import annotations

import math
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
    # Polarity as two offsets instead of a branch keeps the inner loop straight-line code that
    # LLVM vectorises; a disabled polarity contributes a large negative instead of its value.
    # The arithmetic is float32, exact for grey-level differences: Numba widens int32
    # arithmetic to int64, which halves the lanes per vector, and the output is float32 anyway.
    off_bright = np.float32(0.0 if polarity != 2 else -100000.0)
    off_dark = np.float32(0.0 if polarity != 1 else -100000.0)
    zero = np.float32(0.0)
    # Every access goes through a slice of the row taken at its flank's offset, so the loop index
    # starts at 0 and never goes negative: with `row[x - r]` Numba must allow for negative indices
    # (wrap-around), and that check per load kept LLVM from vectorising the loop (2.8x slower).
    n = width - 2 * r
    for y in range(r, height - r):
        up = gray[y - r]
        row = gray[y]
        down = gray[y + r]
        centre = row[r : width - r]
        left = row[0:n]
        right = row[2 * r : width]
        up_mid = up[r : width - r]
        up_left = up[0:n]
        up_right = up[2 * r : width]
        down_mid = down[r : width - r]
        down_left = down[0:n]
        down_right = down[2 * r : width]
        out = response[y, r : width - r]
        out_o = orientation[y, r : width - r]
        for i in range(n):
            c = np.float32(centre[i])
            # Flank pairs: horizontal neighbours (vertical line), vertical, and both diagonals.
            a0 = np.float32(left[i])
            b0 = np.float32(right[i])
            a1 = np.float32(up_mid[i])
            b1 = np.float32(down_mid[i])
            a2 = np.float32(up_left[i])
            b2 = np.float32(down_right[i])
            a3 = np.float32(up_right[i])
            b3 = np.float32(down_left[i])
            # A ridge must stand out against both flanks; a step edge beats only one of them.
            v0 = max(min(c - a0, c - b0) + off_bright, min(a0 - c, b0 - c) + off_dark)
            v1 = max(min(c - a1, c - b1) + off_bright, min(a1 - c, b1 - c) + off_dark)
            v2 = max(min(c - a2, c - b2) + off_bright, min(a2 - c, b2 - c) + off_dark)
            v3 = max(min(c - a3, c - b3) + off_bright, min(a3 - c, b3 - c) + off_dark)
            # Selects, not branches, so the loop stays vectorisable. A strict ">" keeps ties on
            # the lowest orientation index; max() then equals "take it if greater" (no NaN here).
            best = max(v0, zero)
            best_o = np.uint8(0)
            best_o = np.uint8(1) if v1 > best else best_o
            best = max(best, v1)
            best_o = np.uint8(2) if v2 > best else best_o
            best = max(best, v2)
            best_o = np.uint8(3) if v3 > best else best_o
            best = max(best, v3)
            out[i] = best
            out_o[i] = best_o


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


# --- belt difference mask ----------------------------------------------------------------------

_READONLY_BGR = numba.types.Array(numba.uint8, 3, "C", readonly=True)


# States of the blocks of `belt_difference_mask`'s optional block map.
BLOCK_OUTSIDE = 0  # belt: every pixel of the block is written 0 without reading the image
BLOCK_EDGE = 1  # measured pixel by pixel
BLOCK_INSIDE = 2  # the unit: every pixel is written 255 without reading the image


@numba.njit(
    [
        numba.void(
            _READONLY_BGR,
            numba.int64,
            numba.int64,
            numba.int64,
            numba.int64,
            numba.uint8[::1],
            numba.int64,
            numba.uint8[:, ::1],
            numba.int64,
            numba.uint8[:, ::1],
        )
    ],
    cache=True,
    nogil=True,
)
def _belt_difference_kernel(
    image: np.ndarray,
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    belt: np.ndarray,
    threshold: int,
    blocks: np.ndarray,
    block: int,
    out: np.ndarray,
) -> None:
    # One pass instead of OpenCV's absdiff, split, two max and a threshold (five passes and four
    # temporary planes). Channels are read from the interleaved row as flat bytes: a 3-D index
    # per channel kept LLVM from vectorising the loop.
    b0 = np.int16(belt[0])
    b1 = np.int16(belt[1])
    b2 = np.int16(belt[2])
    limit = np.int16(min(max(threshold, -1), 255))
    flat = image.reshape(image.shape[0], image.shape[1] * 3)
    n_block_columns = blocks.shape[1]
    for y in range(y0, y1):
        states = blocks[(y - y0) // block]
        out_row = out[y - y0]
        # Runs of blocks in the same state: a measured run is one long loop that LLVM vectorises.
        first = 0
        while first < n_block_columns:
            state = states[first]
            last = first + 1
            while last < n_block_columns and states[last] == state:
                last += 1
            start = first * block
            stop = min(last * block, x1 - x0)
            if state == 0:
                out_row[start:stop] = 0
            elif state == 2:
                out_row[start:stop] = 255
            else:
                row = flat[y, 3 * (x0 + start) : 3 * (x0 + stop)]
                run = out_row[start:stop]
                for i in range(stop - start):
                    d0 = abs(np.int16(row[3 * i]) - b0)
                    d1 = abs(np.int16(row[3 * i + 1]) - b1)
                    d2 = abs(np.int16(row[3 * i + 2]) - b2)
                    run[i] = np.uint8(255) if max(d0, max(d1, d2)) > limit else np.uint8(0)
            first = last


def _belt_inputs(
    image: np.ndarray,
    belt_bgr: np.ndarray,
    box: tuple[int, int, int, int] | None,
    blocks: np.ndarray | None,
    block: int,
) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray, int]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("image must be a uint8 HxWx3 array")
    colour = np.asarray(belt_bgr, np.float64).reshape(-1)
    if colour.size != 3 or not np.isfinite(colour).all():
        raise ValueError("belt colour must be three finite numbers")
    # As OpenCV converts a scalar to the image's depth: rounded half to even, saturated.
    belt = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (0, 0, width, height) if box is None else (int(v) for v in box)
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {box} is not inside the {width}x{height} image")
    if blocks is None:
        # One block over the whole box, measured.
        return belt, (x0, y0, x1, y1), np.full((1, 1), BLOCK_EDGE, np.uint8), max(x1 - x0, y1 - y0, 1)
    if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    block = int(block)
    grid = (-(-(y1 - y0) // block), -(-(x1 - x0) // block))
    if not isinstance(blocks, np.ndarray) or blocks.dtype != np.uint8 or blocks.shape != grid:
        raise ValueError(f"blocks must be a uint8 array of shape {grid} (the box in blocks of {block} px)")
    if blocks.size and int(blocks.max()) > BLOCK_INSIDE:
        raise ValueError("blocks holds a state other than BLOCK_OUTSIDE, BLOCK_EDGE, BLOCK_INSIDE")
    return belt, (x0, y0, x1, y1), np.ascontiguousarray(blocks), block


def belt_difference_mask(
    image: np.ndarray,
    belt_bgr: np.ndarray,
    threshold: int,
    box: tuple[int, int, int, int] | None = None,
    blocks: np.ndarray | None = None,
    block: int = 16,
) -> np.ndarray:
    """255 where a pixel of the BGR `image` differs from the belt colour by more than `threshold`
    grey levels in its most different channel, else 0; over `box` (x0, y0, x1, y1, frame px) only
    when given, shaped like the box. The colour is rounded half to even to whole grey levels (as
    OpenCV 4's `absdiff` with a scalar does), so this equals absdiff with the rounded colour, the
    channels' max and a binary threshold.

    `blocks` (uint8, the box cut into `block` x `block` px blocks, the last row and column partial)
    says per block whether to measure it (BLOCK_EDGE) or to write it as belt (BLOCK_OUTSIDE, 0) or
    unit (BLOCK_INSIDE, 255) unread: the outline at full resolution needs measuring only where a
    coarser look found the unit's edge.
    """
    belt, (x0, y0, x1, y1), grid, size = _belt_inputs(image, belt_bgr, box, blocks, block)
    out = np.empty((y1 - y0, x1 - x0), np.uint8)
    if out.size:
        _belt_difference_kernel(np.ascontiguousarray(image), x0, y0, x1, y1, belt, int(threshold), grid, size, out)
    return out


def belt_difference_mask_reference(
    image: np.ndarray,
    belt_bgr: np.ndarray,
    threshold: int,
    box: tuple[int, int, int, int] | None = None,
    blocks: np.ndarray | None = None,
    block: int = 16,
) -> np.ndarray:
    """Vectorised NumPy twin of `belt_difference_mask` (same output, bit for bit)."""
    belt, (x0, y0, x1, y1), grid, size = _belt_inputs(image, belt_bgr, box, blocks, block)
    difference = np.abs(image[y0:y1, x0:x1].astype(np.int16) - belt.astype(np.int16)).max(axis=2)
    out = np.where(difference > int(threshold), 255, 0).astype(np.uint8)
    states = np.repeat(np.repeat(grid, size, axis=0), size, axis=1)[: y1 - y0, : x1 - x0]
    out[states == BLOCK_OUTSIDE] = 0
    out[states == BLOCK_INSIDE] = 255
    return out


@numba.njit(
    [numba.void(_READONLY_BGR, numba.int64, numba.uint8[::1], numba.int64, numba.uint8[:, ::1])],
    cache=True,
    nogil=True,
)
def _belt_difference_sampled_kernel(
    image: np.ndarray, step: int, belt: np.ndarray, threshold: int, out: np.ndarray
) -> None:
    flat = image.reshape(image.shape[0], image.shape[1] * 3)
    limit = min(max(threshold, -1), 255)
    if step == 2:
        # The localisation's step. With the stride known when compiling (6 bytes), LLVM loads the
        # sampled pixels' channels as one interleaved group of vectors, and plain arithmetic, as in
        # `_belt_difference_kernel`, then beats the tables below: 1.3x on a frame fresh from
        # memory, 1.7x on one in the cache.
        b0 = np.int16(belt[0])
        b1 = np.int16(belt[1])
        b2 = np.int16(belt[2])
        limit_16 = np.int16(limit)
        for y in range(out.shape[0]):
            row = flat[2 * y]
            out_row = out[y]
            for i in range(out.shape[1]):
                d0 = abs(np.int16(row[6 * i]) - b0)
                d1 = abs(np.int16(row[6 * i + 1]) - b1)
                d2 = abs(np.int16(row[6 * i + 2]) - b2)
                out_row[i] = np.uint8(255) if max(d0, max(d1, d2)) > limit_16 else np.uint8(0)
        return
    # Any other step: a stride known only at run time does not vectorise; a table per channel
    # (255 where that channel alone differs by more than the threshold) leaves three loads and
    # two ORs per pixel, with unsigned indices that need no wrap-around check.
    table = np.zeros((3, 256), np.uint8)
    for channel in range(3):
        for value in range(256):
            if abs(value - np.int64(belt[channel])) > limit:
                table[channel, value] = 255
    table0 = table[0]
    table1 = table[1]
    table2 = table[2]
    stride = np.uint64(3 * step)
    one = np.uint64(1)
    two = np.uint64(2)
    for y in range(out.shape[0]):
        row = flat[y * step]
        out_row = out[y]
        at = np.uint64(0)
        for i in range(out.shape[1]):
            out_row[i] = table0[row[at]] | table1[row[at + one]] | table2[row[at + two]]
            at += stride


@numba.njit([numba.boolean(numba.int32[:, ::1], numba.uint8[:, ::1], numba.int64, numba.int64)], cache=True, nogil=True)
def _measured_around_kernel(points: np.ndarray, blocks: np.ndarray, block: int, reach: int) -> bool:
    n_y, n_x = blocks.shape
    for i in range(points.shape[0]):
        x = np.int64(points[i, 0])
        y = np.int64(points[i, 1])
        # Every block the square of side 2 * reach + 1 around the point touches; blocks beyond
        # the grid count as measured. Floor division, also left of and above the grid.
        for by in range(max((y - reach) // block, 0), min((y + reach) // block, n_y - 1) + 1):
            for bx in range(max((x - reach) // block, 0), min((x + reach) // block, n_x - 1) + 1):
                if blocks[by, bx] != BLOCK_EDGE:
                    return False
    return True


def _measured_around_inputs(
    points: np.ndarray, blocks: np.ndarray, block: int, reach: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    points = np.ascontiguousarray(np.asarray(points).reshape(-1, 2), np.int32)
    if not isinstance(blocks, np.ndarray) or blocks.dtype != np.uint8 or blocks.ndim != 2:
        raise ValueError("blocks must be a 2-D uint8 array")
    if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    if isinstance(reach, bool) or not isinstance(reach, int | np.integer) or reach < 0:
        raise ValueError(f"reach must be a non-negative integer, got {reach!r}")
    return points, np.ascontiguousarray(blocks), int(block), int(reach)


def measured_around(points: np.ndarray, blocks: np.ndarray, block: int, reach: int) -> bool:
    """Whether every pixel within `reach` px (a square) of each of `points` (N x 2 or N x 1 x 2,
    x, y in px of the block map's box) lies in a BLOCK_EDGE block of `blocks` (`block` px
    square), or beyond the map: there a mask measured in blocks (`belt_difference_mask`) equals
    the fully measured one, and so does whatever depends on the mask no further than `reach`."""
    points, blocks, block, reach = _measured_around_inputs(points, blocks, block, reach)
    return bool(_measured_around_kernel(points, blocks, block, reach))


def measured_around_reference(points: np.ndarray, blocks: np.ndarray, block: int, reach: int) -> bool:
    """Vectorised NumPy twin of `measured_around` (same answer), pixel by pixel: the unmeasured
    pixels' summed-area table, summed over each point's square."""
    points, blocks, block, reach = _measured_around_inputs(points, blocks, block, reach)
    if points.shape[0] == 0:
        return True
    unmeasured = np.repeat(np.repeat(blocks != BLOCK_EDGE, block, axis=0), block, axis=1)
    # Room for every square: `reach` beyond the map and as far as the farthest point.
    low = np.minimum(points.min(axis=0) - reach, 0)
    high = np.maximum(points.max(axis=0) + reach + 1, unmeasured.shape[::-1])
    padded = np.zeros((int(high[1] - low[1]), int(high[0] - low[0])), np.int64)
    padded[-low[1] : -low[1] + unmeasured.shape[0], -low[0] : -low[0] + unmeasured.shape[1]] = unmeasured
    table = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), np.int64)
    table[1:, 1:] = padded.cumsum(axis=0).cumsum(axis=1)
    x0, y0 = points[:, 0] - reach - low[0], points[:, 1] - reach - low[1]
    x1, y1 = x0 + 2 * reach + 1, y0 + 2 * reach + 1
    counts = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return bool((counts == 0).all())


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    return int(step)


def belt_difference_mask_sampled(image: np.ndarray, belt_bgr: np.ndarray, threshold: int, step: int) -> np.ndarray:
    """`belt_difference_mask` of every `step`-th pixel of every `step`-th row (the top-left one
    of each `step` x `step` block), shaped (height // step, width // step): a coarse mask without
    first making a downscaled copy of the frame, which costs more than the mask itself."""
    belt, _, _, _ = _belt_inputs(image, belt_bgr, None, None, 1)
    step = _check_step(step)
    out = np.empty((image.shape[0] // step, image.shape[1] // step), np.uint8)
    if out.size:
        _belt_difference_sampled_kernel(np.ascontiguousarray(image), step, belt, int(threshold), out)
    return out


def belt_difference_mask_sampled_reference(
    image: np.ndarray, belt_bgr: np.ndarray, threshold: int, step: int
) -> np.ndarray:
    """Vectorised NumPy twin of `belt_difference_mask_sampled` (same output, bit for bit)."""
    _belt_inputs(image, belt_bgr, None, None, 1)
    step = _check_step(step)
    rows, columns = image.shape[0] // step, image.shape[1] // step
    sampled = image[: rows * step : step, : columns * step : step]
    return belt_difference_mask_reference(sampled, belt_bgr, threshold)


# --- connected components ----------------------------------------------------------------------


@numba.njit(numba.int32(numba.int32[::1], numba.int32), cache=True, nogil=True)
def _find_root(parent: np.ndarray, label: int) -> int:
    while parent[label] != label:
        parent[label] = parent[parent[label]]  # path halving keeps the trees flat
        label = parent[label]
    return label


@numba.njit(numba.int32(numba.int32[::1], numba.int32, numba.int32), cache=True, nogil=True)
def _merge_labels(parent: np.ndarray, first: int, second: int) -> int:
    # The smaller label stays the root, as in OpenCV's union-find, so a component keeps the
    # label it was first given.
    root_first = _find_root(parent, first)
    root_second = _find_root(parent, second)
    if root_first < root_second:
        parent[root_second] = root_first
        return root_first
    parent[root_first] = root_second
    return root_second


@numba.njit(numba.boolean(numba.uint64[::1], numba.int64, numba.int64), cache=True, nogil=True)
def _empty_run(words: np.ndarray, first: int, n_words: int) -> bool:
    # Four words (32 mask pixels) at once: on a sparse mask most of a row is such runs, and one
    # test per 32 pixels instead of per 8 takes most of the scanning out of every pass.
    return first + 4 <= n_words and (words[first] | words[first + 1] | words[first + 2] | words[first + 3]) == 0


@numba.njit([numba.int64(numba.uint8[:, ::1], numba.int32[:, ::1], numba.int32[::1])], cache=True, nogil=True)
def _connected_components_kernel(mask: np.ndarray, labels: np.ndarray, parent: np.ndarray) -> int:
    height, width = mask.shape
    # The foreground is a fraction of a percent of the surface: like the statistics kernel, skip
    # background eight pixels at a time through a uint64 view of the mask, in every pass.
    # `labels` arrives zeroed, so skipped pixels need no write.
    flat = mask.reshape(-1)
    n_words = flat.size // 8
    words = flat[: n_words * 8].view(np.uint64)
    next_label = 1
    for y in range(height):
        row = mask[y]
        out = labels[y]
        above = labels[y - 1] if y > 0 else labels[y]
        row_start = y * width
        x = 0
        while x < width:
            flat_index = row_start + x
            if flat_index % 32 == 0 and x + 32 <= width and _empty_run(words, flat_index // 8, n_words):
                x += 32
                continue
            if flat_index % 8 == 0 and x + 8 <= width and flat_index // 8 < n_words and words[flat_index // 8] == 0:
                x += 8
                continue
            if row[x] == 0:
                x += 1
                continue
            # 8-connectivity: the left neighbour and the three above are already labelled.
            label = np.int32(0)
            if x > 0 and row[x - 1] != 0:
                label = out[x - 1]
            if y > 0:
                for neighbour_x in range(max(x - 1, 0), min(x + 2, width)):
                    other = above[neighbour_x]
                    if other != 0:
                        if label == 0:
                            label = other
                        elif other != label:
                            label = _merge_labels(parent, label, other)
            if label == 0:
                label = np.int32(next_label)
                parent[next_label] = next_label
                next_label += 1
            out[x] = label
            x += 1
    # Final labels are numbered in the order of each component's first 2x2 block (blocks in rows
    # of two pixel rows, left to right), which is how OpenCV's block-based labelling numbers them.
    n_blocks_x = (width + 1) // 2
    first_block = np.full(next_label, np.iinfo(np.int64).max, np.int64)
    for y in range(height):
        out = labels[y]
        row_start = y * width
        x = 0
        while x < width:
            flat_index = row_start + x
            if flat_index % 32 == 0 and x + 32 <= width and _empty_run(words, flat_index // 8, n_words):
                x += 32
                continue
            if flat_index % 8 == 0 and x + 8 <= width and flat_index // 8 < n_words and words[flat_index // 8] == 0:
                x += 8
                continue
            label = out[x]
            if label != 0:
                root = _find_root(parent, label)
                block = (y // 2) * n_blocks_x + x // 2
                if block < first_block[root]:
                    first_block[root] = block
            x += 1
    n_roots = 0
    for label in range(1, next_label):
        if parent[label] == label:
            n_roots += 1
    root_blocks = np.empty(n_roots, np.int64)
    roots = np.empty(n_roots, np.int32)
    k = 0
    for label in range(1, next_label):
        if parent[label] == label:
            root_blocks[k] = first_block[label]
            roots[k] = label
            k += 1
    order = np.argsort(root_blocks)
    final = np.zeros(next_label, np.int32)
    for rank in range(n_roots):
        final[roots[order[rank]]] = rank + 1
    for label in range(1, next_label):
        final[label] = final[_find_root(parent, label)]
    for y in range(height):
        out = labels[y]
        row_start = y * width
        x = 0
        while x < width:
            flat_index = row_start + x
            if flat_index % 32 == 0 and x + 32 <= width and _empty_run(words, flat_index // 8, n_words):
                x += 32
                continue
            if flat_index % 8 == 0 and x + 8 <= width and flat_index // 8 < n_words and words[flat_index // 8] == 0:
                x += 8
                continue
            label = out[x]
            if label != 0:
                out[x] = final[label]
            x += 1
    return n_roots + 1


def connected_components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """8-connected components of the non-zero pixels of a 2-D uint8 `mask`: (number of labels
    including the background 0, int32 labels shaped like `mask`), the same labels, numbered the
    same way, as `cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)`, which is its
    reference. Twice as fast on a sparse mask: background is skipped eight pixels at a time."""
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError("mask must be a 2-D uint8 array")
    height, width = mask.shape
    labels = np.zeros((height, width), np.int32)
    # A component is 8-connected within each 2x2 block, so a scan starts at most one new label
    # per block.
    parent = np.empty(((height + 1) // 2) * ((width + 1) // 2) + 1, np.int32)
    if mask.size == 0:
        return 1, labels
    n_labels = _connected_components_kernel(np.ascontiguousarray(mask), labels, parent)
    return int(n_labels), labels


# --- straight-stroke votes ---------------------------------------------------------------------


def band_votes_reference(projected: np.ndarray, band: float) -> tuple[np.ndarray, np.ndarray]:
    """A Hough vote of points over directions, vectorised (the reference for
    `ridge_kernels.densest_band`): `projected` (N points, A directions) holds each point's offset
    along each direction's normal, binned into bands `band` wide (floor(offset * (1 / band))).
    Returns (bins int64 (N, A): each point's band per direction, counted from the lowest band of
    all; votes int64 (A, B + 2): points per band per direction, with one empty band of padding at
    the end of each row, so adjacent pairs never span two directions)."""
    bins = np.floor(np.asarray(projected, np.float64) * (1.0 / band)).astype(np.int64)
    bins -= bins.min()
    row_width = int(bins.max()) + 2
    rows = np.arange(bins.shape[1]) * row_width
    votes = np.bincount((bins + rows).ravel(), minlength=rows.size * row_width).reshape(rows.size, row_width)
    return bins, votes


# --- outline depth profiles --------------------------------------------------------------------


@numba.njit(
    [
        numba.void(
            numba.float64[:, ::1],
            numba.float64,
            numba.float64,
            numba.float64,
            numba.float64,
            numba.float64,
            numba.int64,
            numba.int64,
            numba.float64[:, ::1],
        )
    ],
    cache=True,
    nogil=True,
)
def _outline_depths_kernel(
    points: np.ndarray,
    width: float,
    height: float,
    band: float,
    corner: float,
    bin_px: float,
    bins_along_width: int,
    bins_along_height: int,
    depths: np.ndarray,
) -> None:
    depths[:, :] = np.nan
    for i in range(points.shape[0]):
        x = points[i, 0]
        y = points[i, 1]
        # A loop over the sides, which LLVM unrolls and turns into selects: the four sides
        # written out as four branches each took 1.4x as long.
        for side in range(4):
            count = bins_along_width if side % 2 == 0 else bins_along_height
            if count <= 0:
                continue
            # (along, inward, side length), as `damage._side_coordinates`.
            if side == 0:
                along, inward, length = x, y, width
            elif side == 1:
                along, inward, length = y, width - x, height
            elif side == 2:
                along, inward, length = x, height - y, width
            else:
                along, inward, length = y, x, height
            # NaN coordinates fail every comparison, as in the reference.
            if not (inward < band and along > corner and along < length - corner):
                continue
            # Truncation, as NumPy's cast to int64; then clipped into the profile.
            index = min(max(np.int64((along - corner) / bin_px), 0), count - 1)
            current = depths[side, index]
            # fmax: NaN (no point yet) gives way to any value.
            if not (current >= inward):
                depths[side, index] = inward


def _outline_depth_inputs(
    points: np.ndarray, width: float, height: float, band: float, corner: float, bin_px: float
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    points = np.ascontiguousarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError("points must be an (N, 2) array")
    values = (width, height, band, corner, bin_px)
    if not all(math.isfinite(v) for v in values) or not bin_px > 0:
        raise ValueError("width, height, band, corner and bin_px must be finite, bin_px positive")
    # Sides 0 and 2 run along the width, 1 and 3 along the height; a side too short to hold a
    # profile outside both corners gets none. Plain ints: this runs once per unit, where a small
    # array and a loop over it cost as much as the kernel's work.
    along_width = int((width - 2 * corner) / bin_px) + 1 if width > 2 * corner + 4 * bin_px else 0
    along_height = int((height - 2 * corner) / bin_px) + 1 if height > 2 * corner + 4 * bin_px else 0
    return points, (along_width, along_height, along_width, along_height)


def outline_depths(
    points: np.ndarray, width: float, height: float, band: float, corner: float, bin_px: float
) -> list[np.ndarray | None]:
    """Depth profiles of an outline against the sides of its `width` x `height` rectangle.

    `points` (N, 2) are the outline in the rectangle's coordinates. Per side (0 top, 1 right,
    2 bottom, 3 left), the points less than `band` inward from it and more than `corner` from
    both its ends fall into bins `bin_px` long along it; a bin holds the deepest such point's
    inward distance, NaN where none fell. A side no longer than 2 * corner + 4 * bin_px has no
    profile (None). One pass over the points for all four sides instead of a mask per side."""
    points, n_bins = _outline_depth_inputs(points, width, height, band, corner, bin_px)
    depths = np.empty((4, max(*n_bins, 1)), np.float64)
    _outline_depths_kernel(
        points, float(width), float(height), float(band), float(corner), float(bin_px), n_bins[0], n_bins[1], depths
    )
    return [depths[side, :count] if count else None for side, count in enumerate(n_bins)]


def outline_depths_reference(
    points: np.ndarray, width: float, height: float, band: float, corner: float, bin_px: float
) -> list[np.ndarray | None]:
    """Vectorised NumPy twin of `outline_depths` (same output, bit for bit): a mask and an
    `np.fmax.at` per side."""
    points, n_bins = _outline_depth_inputs(points, width, height, band, corner, bin_px)
    x, y = points[:, 0], points[:, 1]
    sides = ((x, y, width), (y, width - x, height), (x, height - y, width), (y, x, height))
    profiles: list[np.ndarray | None] = []
    for (along, inward, length), count in zip(sides, n_bins, strict=True):
        if not count:
            profiles.append(None)
            continue
        near = (inward < band) & (along > corner) & (along < length - corner)
        bins = ((along[near] - corner) / bin_px).astype(np.int64)
        depth = np.full(count, np.nan)
        np.fmax.at(depth, np.clip(bins, 0, count - 1), inward[near])
        profiles.append(depth)
    return profiles


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
            if flat_index % 32 == 0 and x + 32 <= width and _empty_run(words, flat_index // 8, n_words):
                x += 32
                continue
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
            numba.uint8[:, ::1],
            numba.float32[:, ::1],
            numba.uint8[:, ::1],
            numba.int64,
            numba.int64,
            numba.int64,
            numba.float64,
            numba.float64[:, :, ::1],
        )
    ],
    cache=True,
    nogil=True,
    # Reassociation lets LLVM vectorise the float sums; the reference then agrees to rounding only.
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
    # Thresholds in the pixels' own types: mixed-type compares stop the vectorisation.
    dark_u8 = np.uint8(min(max(dark_level, 0), 255))
    bright_u8 = np.uint8(min(max(bright_level, 0), 255))
    line_f32 = np.float32(line_threshold)
    # One band of `tile` rows at a time: every row is first added into per-column sums by long
    # branch-free loops over the whole width, which LLVM vectorises; the band's columns are then
    # summed per tile. (Looping tile by tile gives inner loops of only `tile` pixels, shorter than
    # one unrolled vector step at 16, so they ran scalar, and a float total carried from pixel to
    # pixel waits on the add latency.) The byte-sized tests count in byte lanes, 32 pixels per
    # instruction, emptied into 32-bit sums every 255 rows before they could wrap; the float
    # tests stay in float lanes, their count included, so no lane ever changes width.
    rows_per_flush = 255
    count_u8 = np.empty(width, np.uint8)
    dark_count_u8 = np.empty(width, np.uint8)
    bright_count_u8 = np.empty(width, np.uint8)
    column_count = np.empty(width, np.int32)
    column_dark = np.empty(width, np.int32)
    column_bright = np.empty(width, np.int32)
    column_line = np.empty(width, np.float32)
    column_total = np.empty(width, np.float32)
    for ty in range(out.shape[0]):
        y0 = ty * tile
        y1 = min(y0 + tile, height)
        column_count[:] = 0
        column_dark[:] = 0
        column_bright[:] = 0
        column_line[:] = 0.0
        column_total[:] = 0.0
        chunk_start = y0
        while chunk_start < y1:
            chunk_stop = min(chunk_start + rows_per_flush, y1)
            count_u8[:] = 0
            dark_count_u8[:] = 0
            bright_count_u8[:] = 0
            for y in range(chunk_start, chunk_stop):
                g_row = gray[y]
                r_row = response[y]
                m_row = mask[y]
                for x in range(width):
                    inside = np.uint8(m_row[x] != 0)
                    g = g_row[x]
                    count_u8[x] += inside
                    dark_count_u8[x] += inside & np.uint8(g < dark_u8)
                    bright_count_u8[x] += inside & np.uint8(g > bright_u8)
                for x in range(width):
                    v = r_row[x]
                    inside_f = m_row[x] != 0
                    column_line[x] += np.float32(1.0) if (inside_f and v > line_f32) else np.float32(0.0)
                    column_total[x] += v if inside_f else np.float32(0.0)
            for x in range(width):
                column_count[x] += count_u8[x]
                column_dark[x] += dark_count_u8[x]
                column_bright[x] += bright_count_u8[x]
            chunk_start = chunk_stop
        # Then each tile's columns. The default tile of 16 gets a loop of a fixed 16 steps, which
        # LLVM unrolls into a few vector adds per tile; with the tile's width known only at run
        # time, each tile's short loop ran scalar and cost as much as all the rows' passes.
        whole_16 = width // 16 if tile == 16 else 0
        for tx in range(whole_16):
            x0 = tx * 16
            count = 0
            dark = 0
            bright = 0
            line = 0.0
            total = 0.0
            for k in range(16):
                count += column_count[x0 + k]
                dark += column_dark[x0 + k]
                bright += column_bright[x0 + k]
                line += column_line[x0 + k]
                total += column_total[x0 + k]
            cell = out[ty, tx]
            cell[0] = count
            cell[1] = dark
            cell[2] = bright
            cell[3] = line
            cell[4] = total
        for tx in range(whole_16, out.shape[1]):
            x0 = tx * tile
            x1 = min(x0 + tile, width)
            count = 0
            dark = 0
            bright = 0
            line = 0.0
            total = 0.0
            for x in range(x0, x1):
                count += column_count[x]
                dark += column_dark[x]
                bright += column_bright[x]
                line += column_line[x]
                total += column_total[x]
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
            np.ascontiguousarray(gray),
            np.ascontiguousarray(response),
            np.ascontiguousarray(mask),
            t,
            int(dark_level),
            int(bright_level),
            float(line_threshold),
            out,
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
    """Vectorised NumPy twin of `tile_stats` (equal up to float summation order).

    The fastest NumPy way found: each indicator plane stays one byte per pixel and is summed by
    reshaping into tiles (the partial last tile row and column apart), rows of a tile in 16-bit
    counts and float32, then the tile's columns in 32-bit counts and float64. Float64 planes with
    `np.add.reduceat`, `np.bincount` over tile ids or padding to whole tiles all took 2-4x longer.
    """
    t = _check_tile_inputs(gray, response, mask, tile)
    height, width = gray.shape
    out = np.zeros((-(-height // t), -(-width // t), N_TILE_STATS), np.float64)
    if not gray.size:
        return out
    inside = mask != 0
    planes = (
        (inside.view(np.uint8), np.int16, np.int32),
        ((inside & (gray < dark_level)).view(np.uint8), np.int16, np.int32),
        ((inside & (gray > bright_level)).view(np.uint8), np.int16, np.int32),
        ((inside & (response > line_threshold)).view(np.uint8), np.int16, np.int32),
        (np.where(inside, response, np.float32(0.0)), np.float32, np.float64),
    )
    for k, (plane, row_dtype, tile_dtype) in enumerate(planes):
        out[:, :, k] = _tile_sums(plane, t, row_dtype, tile_dtype)
    return out


def _tile_sums(plane: np.ndarray, tile: int, row_dtype: type, tile_dtype: type) -> np.ndarray:
    """Sums of `plane` over `tile` x `tile` blocks, the last row and column of blocks partial."""
    height, width = plane.shape
    whole_y, whole_x = height // tile, width // tile
    n_y, n_x = -(-height // tile), -(-width // tile)
    band_sums = np.empty((n_y, width), row_dtype)
    band_sums[:whole_y] = plane[: whole_y * tile].reshape(whole_y, tile, width).sum(axis=1, dtype=row_dtype)
    if n_y > whole_y:
        band_sums[whole_y] = plane[whole_y * tile :].sum(axis=0, dtype=row_dtype)
    sums = np.empty((n_y, n_x), tile_dtype)
    sums[:, :whole_x] = band_sums[:, : whole_x * tile].reshape(n_y, whole_x, tile).sum(axis=2, dtype=tile_dtype)
    if n_x > whole_x:
        sums[:, whole_x] = band_sums[:, whole_x * tile :].sum(axis=1, dtype=tile_dtype)
    return sums
