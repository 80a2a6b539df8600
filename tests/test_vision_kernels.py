"""Numba kernels against their NumPy references, on random and rendered images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simulator.render import generate_appearance, render_frame
from vision import kernels, ridge_kernels

POLARITIES = ("both", "bright", "dark")


def _rendered_gray(grade: str, category: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dims = {"phone": (71.5, 146.7), "tablet": (160.0, 230.0), "laptop": (304.0, 212.0)}[category]
    appearance, _ = generate_appearance(grade, category, *dims, rng)  # type: ignore[arg-type]
    return cv2.cvtColor(render_frame(appearance, rng), cv2.COLOR_BGR2GRAY)


def _components(gray: np.ndarray, threshold: float = 8.0) -> tuple[np.ndarray, ...]:
    response, orientation = kernels.line_response(gray)
    foreground = (response > threshold).view(np.uint8)
    n_labels, labels = cv2.connectedComponents(foreground, connectivity=8, ltype=cv2.CV_32S)
    return foreground, labels, response, orientation, n_labels


@pytest.mark.parametrize("polarity", POLARITIES)
@pytest.mark.parametrize("radius", [1, 2, 3, 5])
def test_line_response_matches_reference_on_random_image(polarity: str, radius: int) -> None:
    gray = np.random.default_rng(radius).integers(0, 256, (97, 131), dtype=np.uint8)
    response, orientation = kernels.line_response(gray, radius, polarity)  # type: ignore[arg-type]
    ref_response, ref_orientation = kernels.line_response_reference(gray, radius, polarity)  # type: ignore[arg-type]
    np.testing.assert_array_equal(response, ref_response)
    np.testing.assert_array_equal(orientation, ref_orientation)
    assert response.dtype == np.float32 and orientation.dtype == np.uint8
    assert response.max() > 0


@pytest.mark.parametrize(("grade", "category", "seed"), [("B", "phone", 1), ("D", "laptop", 2), ("C", "tablet", 3)])
def test_line_response_matches_reference_on_rendered_units(grade: str, category: str, seed: int) -> None:
    gray = _rendered_gray(grade, category, seed)
    for polarity in POLARITIES:
        response, orientation = kernels.line_response(gray, 3, polarity)  # type: ignore[arg-type]
        ref_response, ref_orientation = kernels.line_response_reference(gray, 3, polarity)  # type: ignore[arg-type]
        np.testing.assert_array_equal(response, ref_response)
        np.testing.assert_array_equal(orientation, ref_orientation)


def test_line_response_finds_a_drawn_line_and_its_orientation() -> None:
    gray = np.full((40, 40), 30, np.uint8)
    gray[20, 5:35] = 130  # horizontal bright line
    response, orientation = kernels.line_response(gray, 3, "bright")
    assert response[20, 20] == 100
    assert kernels.LINE_ANGLES_DEG[orientation[20, 20]] == 0.0
    # A step edge is not a line: one flank is as bright as the pixel.
    step = np.zeros((40, 40), np.uint8)
    step[:, 20:] = 200
    assert kernels.line_response(step, 3, "both")[0].max() == 0
    assert kernels.line_response(gray, 3, "dark")[0][20, 20] == 0


def test_line_response_zeroes_the_border() -> None:
    gray = np.random.default_rng(0).integers(0, 256, (30, 30), dtype=np.uint8)
    response, _ = kernels.line_response(gray, 4)
    assert not response[:4].any() and not response[-4:].any()
    assert not response[:, :4].any() and not response[:, -4:].any()


def test_line_response_accepts_non_contiguous_views() -> None:
    gray = np.random.default_rng(1).integers(0, 256, (60, 80), dtype=np.uint8)
    view = gray[5:50:2, ::3]
    np.testing.assert_array_equal(kernels.line_response(view)[0], kernels.line_response_reference(view)[0])


@settings(max_examples=60, deadline=None)
@given(
    gray=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40)),
    radius=st.integers(1, 6),
    polarity=st.sampled_from(POLARITIES),
)
def test_line_response_any_uint8_image(gray: np.ndarray, radius: int, polarity: str) -> None:
    response, orientation = kernels.line_response(gray, radius, polarity)  # type: ignore[arg-type]
    ref_response, ref_orientation = kernels.line_response_reference(gray, radius, polarity)  # type: ignore[arg-type]
    assert response.shape == gray.shape and orientation.shape == gray.shape
    np.testing.assert_array_equal(response, ref_response)
    np.testing.assert_array_equal(orientation, ref_orientation)
    assert (response >= 0).all() and (orientation < 4).all()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((10, 10), np.float32), "uint8"),
        (np.zeros((10, 10), np.uint16), "uint8"),
        (np.zeros((10, 10, 3), np.uint8), "2-D"),
        (np.zeros(10, np.uint8), "2-D"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_line_response_rejects_bad_input(bad: object, message: str) -> None:
    for fn in (kernels.line_response, kernels.line_response_reference):
        with pytest.raises(ValueError, match=message):
            fn(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("radius", "polarity"), [(0, "both"), (65, "both"), (2.5, "both"), (3, "sideways")])
def test_line_response_rejects_bad_parameters(radius: object, polarity: str) -> None:
    with pytest.raises(ValueError):
        kernels.line_response(np.zeros((9, 9), np.uint8), radius, polarity)  # type: ignore[arg-type]


@pytest.mark.parametrize(("grade", "category", "seed"), [("B", "phone", 4), ("D", "laptop", 5), ("C", "tablet", 6)])
def test_component_stats_matches_reference_on_rendered_units(grade: str, category: str, seed: int) -> None:
    parts = _components(_rendered_gray(grade, category, seed))
    stats = kernels.component_stats(*parts)
    reference = kernels.component_stats_reference(*parts)
    assert stats.shape == (parts[-1], kernels.N_STATS)
    np.testing.assert_allclose(stats, reference, rtol=1e-12)
    assert stats[1:, kernels.STAT_COUNT].sum() == parts[0].sum()
    np.testing.assert_array_equal(stats[0], 0.0)


def test_component_stats_on_random_labels_including_out_of_range() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(-3, 12, (50, 70), dtype=np.int32)
    foreground = (rng.random((50, 70)) < 0.7).astype(np.uint8)
    response = rng.random((50, 70), dtype=np.float32) * 50
    orientation = rng.integers(0, 4, (50, 70), dtype=np.uint8)
    for n_labels in (1, 5, 12, 20):
        stats = kernels.component_stats(foreground, labels, response, orientation, n_labels)
        np.testing.assert_allclose(
            stats, kernels.component_stats_reference(foreground, labels, response, orientation, n_labels), rtol=1e-12
        )


def test_component_stats_moments_of_a_known_rectangle() -> None:
    foreground = np.zeros((20, 30), np.uint8)
    foreground[5:8, 10:20] = 1  # 3 x 10 pixels
    labels = foreground.astype(np.int32)
    response = np.full((20, 30), 4.0, np.float32)
    response[6, 15] = 9.0
    orientation = np.zeros((20, 30), np.uint8)
    stats = kernels.component_stats(foreground, labels, response, orientation, 2)
    assert stats[1, kernels.STAT_COUNT] == 30
    assert stats[1, kernels.STAT_SUM_X] / 30 == pytest.approx(14.5)
    assert stats[1, kernels.STAT_SUM_Y] / 30 == pytest.approx(6.0)
    assert stats[1, kernels.STAT_MAX_RESPONSE] == 9.0
    assert stats[1, kernels.STAT_ORIENTATION_0] == 30


def test_component_stats_rejects_mismatched_inputs() -> None:
    labels = np.zeros((5, 5), np.int32)
    good = (np.zeros((5, 5), np.uint8), labels, np.zeros((5, 5), np.float32), np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="labels"):
        kernels.component_stats(good[0], labels.astype(np.int64), good[2], good[3], 2)
    with pytest.raises(ValueError, match="response"):
        kernels.component_stats(good[0], labels, np.zeros((5, 4), np.float32), good[3], 2)
    with pytest.raises(ValueError, match="n_labels"):
        kernels.component_stats(*good, 0)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 45)),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_component_stats_any_shape_matches_reference(shape: tuple[int, int], density: float, seed: int) -> None:
    # Odd widths put the kernel's 8-pixel skipping across row ends; any miss shows up as a count.
    rng = np.random.default_rng(seed)
    foreground = (rng.random(shape) < density).astype(np.uint8)
    n_labels, labels = cv2.connectedComponents(foreground, connectivity=8, ltype=cv2.CV_32S)
    response = (rng.random(shape, dtype=np.float32) * 40).astype(np.float32)
    orientation = rng.integers(0, 4, shape, dtype=np.uint8)
    args = (foreground, labels, response, orientation, n_labels)
    stats = kernels.component_stats(*args)
    np.testing.assert_allclose(stats, kernels.component_stats_reference(*args), rtol=1e-12)
    assert stats[:, kernels.STAT_COUNT].sum() == foreground.sum()


# --- per-tile statistics (more in test_vision_scene.py) -------------------------------------------


@pytest.mark.parametrize(("grade", "category", "seed"), [("D", "laptop", 9), ("B", "phone", 10)])
@pytest.mark.parametrize("tile", [16, 37, 181])
def test_tile_stats_matches_reference_on_a_unit_interior(grade: str, category: str, seed: int, tile: int) -> None:
    """The damage check's own call: the unit's box (any width, so partial tiles) and a rounded
    interior mask."""
    gray = _rendered_gray(grade, category, seed)
    _, mask = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    ys, xs = np.nonzero(mask)
    box = np.ascontiguousarray(gray[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    interior = cv2.erode(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], np.ones((13, 13), np.uint8))
    response, _ = kernels.line_response(box)
    got = kernels.tile_stats(box, response, interior, tile)
    want = kernels.tile_stats_reference(box, response, interior, tile)
    np.testing.assert_array_equal(got[..., :4], want[..., :4])
    np.testing.assert_allclose(got[..., 4], want[..., 4], rtol=1e-5)
    assert got[..., kernels.TILE_COUNT].sum() == np.count_nonzero(interior)
    assert got[..., kernels.TILE_LINE].sum() > 0


@settings(max_examples=100, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 70), st.integers(1, 140)),
    tile=st.sampled_from([16, 16, 5, 1]),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_tile_stats_any_shape_matches_reference(shape: tuple[int, int], tile: int, density: float, seed: int) -> None:
    """Whole and partial tiles on both axes, the default tile of 16 (its own fixed-width column
    sums) and others. The line response is whole grey levels, so every sum is exact in any order
    and the kernel must equal the reference to the bit; a fractional response to rounding."""
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, shape, dtype=np.uint8)
    response = rng.integers(0, 40, shape).astype(np.float32)
    mask = (rng.random(shape) < density).astype(np.uint8) * rng.integers(1, 256, dtype=np.uint8)
    got = kernels.tile_stats(gray, response, mask, tile)
    np.testing.assert_array_equal(got, kernels.tile_stats_reference(gray, response, mask, tile))
    assert got[..., kernels.TILE_COUNT].sum() == np.count_nonzero(mask)
    fractional = response + rng.random(shape, dtype=np.float32)
    got = kernels.tile_stats(gray, fractional, mask, tile)
    want = kernels.tile_stats_reference(gray, fractional, mask, tile)
    np.testing.assert_array_equal(got[..., :4], want[..., :4])
    np.testing.assert_allclose(got[..., 4], want[..., 4], rtol=1e-5)


def test_tile_stats_largest_tile_counts_do_not_overflow() -> None:
    """Per-column counts are 16-bit in the kernel: a full 1024-px column must still add up."""
    gray = np.full((1030, 1100), 40, np.uint8)
    response = np.full(gray.shape, 12.0, np.float32)
    stats = kernels.tile_stats(gray, response, np.ones_like(gray), 1024)
    assert stats.shape == (2, 2, kernels.N_TILE_STATS)
    assert stats[0, 0, kernels.TILE_COUNT] == stats[0, 0, kernels.TILE_DARK] == 1024 * 1024
    assert stats[0, 0, kernels.TILE_LINE] == 1024 * 1024 and stats[0, 0, kernels.TILE_BRIGHT] == 0
    assert stats[1, 1, kernels.TILE_COUNT] == 6 * 76
    assert stats[0, 0, kernels.TILE_SUM_RESPONSE] == pytest.approx(12.0 * 1024 * 1024, rel=1e-6)
    np.testing.assert_array_equal(stats, kernels.tile_stats_reference(gray, response, np.ones_like(gray), 1024))


# --- belt difference mask -----------------------------------------------------------------------


def _opencv_belt_mask(image: np.ndarray, belt: tuple[float, float, float], threshold: int) -> np.ndarray:
    """The OpenCV passes the kernel replaces: absdiff with the colour, the channels' max, a threshold.

    The colour goes in rounded half to even, as the kernel rounds it: OpenCV 4 rounds a fractional
    scalar that way itself, OpenCV 5 rounds half levels differently.
    """
    diff = cv2.absdiff(image, (*(float(np.rint(c)) for c in belt), 0.0))
    channels = cv2.split(diff)
    strongest = cv2.max(cv2.max(channels[0], channels[1]), channels[2])
    return cv2.threshold(strongest, threshold, 255, cv2.THRESH_BINARY)[1]


@pytest.mark.parametrize("belt", [(70.0, 70.0, 70.0), (40.5, 61.0, 80.5), (0.5, 254.5, 127.5), (3.25, 99.75, 255.0)])
@pytest.mark.parametrize("threshold", [0, 30, 254])
def test_belt_difference_mask_matches_opencv_and_reference(belt: tuple[float, float, float], threshold: int) -> None:
    # Half grey levels (a median of an even count) are where rounding the colour could differ.
    rng = np.random.default_rng(threshold)
    image = rng.integers(0, 256, (61, 97, 3), dtype=np.uint8)
    want = _opencv_belt_mask(image, belt, threshold)
    np.testing.assert_array_equal(kernels.belt_difference_mask(image, np.array(belt), threshold), want)
    np.testing.assert_array_equal(kernels.belt_difference_mask_reference(image, np.array(belt), threshold), want)


def test_belt_difference_mask_on_a_box_of_a_rendered_read_only_frame() -> None:
    rng = np.random.default_rng(4)
    appearance, _ = generate_appearance("C", "laptop", 304.0, 212.0, rng)
    frame = render_frame(appearance, rng)
    frame.setflags(write=False)  # camera buffers can be read-only
    belt = np.median(frame[:6].reshape(-1, 3), axis=0)
    box = (101, 37, 1003, 650)
    got = kernels.belt_difference_mask(frame, belt, 30, box)
    want = _opencv_belt_mask(frame[37:650, 101:1003], tuple(float(c) for c in belt), 30)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got, want)
    assert got.shape == (613, 902) and 0 < np.count_nonzero(got) < got.size


@settings(max_examples=60, deadline=None)
@given(
    image=hnp.arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 40), st.just(3))),
    belt=st.tuples(*[st.integers(0, 510).map(lambda v: v / 2)] * 3),
    threshold=st.integers(-5, 300),
    data=st.data(),
)
def test_belt_difference_mask_any_image_box_and_colour(
    image: np.ndarray, belt: tuple[float, float, float], threshold: int, data: st.DataObject
) -> None:
    height, width = image.shape[:2]
    x0 = data.draw(st.integers(0, width))
    y0 = data.draw(st.integers(0, height))
    box = (x0, y0, data.draw(st.integers(x0, width)), data.draw(st.integers(y0, height)))
    got = kernels.belt_difference_mask(image, np.array(belt), threshold, box)
    np.testing.assert_array_equal(got, kernels.belt_difference_mask_reference(image, np.array(belt), threshold, box))
    assert got.shape == (box[3] - box[1], box[2] - box[0])


@pytest.mark.parametrize(
    ("image", "belt", "box", "message"),
    [
        (np.zeros((4, 4), np.uint8), (0, 0, 0), None, "HxWx3"),
        (np.zeros((4, 4, 3), np.float32), (0, 0, 0), None, "HxWx3"),
        (np.zeros((4, 4, 3), np.uint8), (0, 0), None, "three finite"),
        (np.zeros((4, 4, 3), np.uint8), (0, np.nan, 0), None, "three finite"),
        (np.zeros((4, 4, 3), np.uint8), (0, 0, 0), (0, 0, 5, 4), "not inside"),
        (np.zeros((4, 4, 3), np.uint8), (0, 0, 0), (3, 0, 2, 4), "not inside"),
    ],
)
def test_belt_difference_mask_rejects_bad_input(
    image: np.ndarray, belt: tuple, box: tuple | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        kernels.belt_difference_mask(image, np.array(belt, np.float64), 30, box)


@settings(max_examples=80, deadline=None)
@given(
    image=hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 60), st.just(3))),
    belt=st.tuples(*[st.integers(0, 510).map(lambda v: v / 2)] * 3),
    threshold=st.integers(-5, 300),
    block=st.integers(1, 20),
    data=st.data(),
)
def test_belt_difference_mask_in_blocks_matches_reference(
    image: np.ndarray, belt: tuple[float, float, float], threshold: int, block: int, data: st.DataObject
) -> None:
    """Measured blocks equal the plain mask; the others are written 0 or 255 whatever the image."""
    height, width = image.shape[:2]
    x0 = data.draw(st.integers(0, width))
    y0 = data.draw(st.integers(0, height))
    box = (x0, y0, data.draw(st.integers(x0, width)), data.draw(st.integers(y0, height)))
    grid = (-(-(box[3] - y0) // block), -(-(box[2] - x0) // block))
    blocks = data.draw(hnp.arrays(np.uint8, grid, elements=st.integers(0, 2)))
    got = kernels.belt_difference_mask(image, np.array(belt), threshold, box, blocks, block)
    want = kernels.belt_difference_mask_reference(image, np.array(belt), threshold, box, blocks, block)
    np.testing.assert_array_equal(got, want)
    states = np.repeat(np.repeat(blocks, block, axis=0), block, axis=1)[: got.shape[0], : got.shape[1]]
    plain = kernels.belt_difference_mask(image, np.array(belt), threshold, box)
    np.testing.assert_array_equal(got[states == kernels.BLOCK_EDGE], plain[states == kernels.BLOCK_EDGE])
    assert (got[states == kernels.BLOCK_INSIDE] == 255).all()
    assert (got[states == kernels.BLOCK_OUTSIDE] == 0).all()


def test_belt_difference_mask_in_blocks_on_a_rendered_frame() -> None:
    rng = np.random.default_rng(5)
    appearance, _ = generate_appearance("D", "laptop", 304.0, 212.0, rng)
    frame = render_frame(appearance, rng)
    belt = np.median(frame[:6].reshape(-1, 3), axis=0)
    box = (100, 36, 1004, 650)
    plain = kernels.belt_difference_mask(frame, belt, 30, box)
    # A ring of measured blocks around a block of unit and a margin of belt.
    blocks = np.full((39, 57), kernels.BLOCK_EDGE, np.uint8)
    blocks[8:-8, 8:-8] = kernels.BLOCK_INSIDE
    blocks[:2] = kernels.BLOCK_OUTSIDE
    got = kernels.belt_difference_mask(frame, belt, 30, box, blocks, 16)
    np.testing.assert_array_equal(got, kernels.belt_difference_mask_reference(frame, belt, 30, box, blocks, 16))
    np.testing.assert_array_equal(got[32:128, 32:], plain[32:128, 32:])
    assert (got[128:-128, 128:-128] == 255).all() and not got[:32].any()
    assert 0 < np.count_nonzero(plain[32:128]) < plain[32:128].size


@pytest.mark.parametrize(
    ("blocks", "block", "message"),
    [
        (np.ones((3, 4), np.uint8), 4, "shape"),  # a 10x15 box in 4 px blocks is 3x4; 5 px: 2x3
        (np.ones((2, 3), np.int32), 5, "uint8"),
        (np.full((2, 3), 3, np.uint8), 5, "state"),
        (np.ones((2, 3), np.uint8), 0, "positive"),
        (np.ones((2, 3), np.uint8), True, "positive"),
    ],
)
def test_belt_difference_mask_rejects_bad_blocks(blocks: np.ndarray, block: int, message: str) -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    box = (2, 3, 17, 13)
    if message == "shape":
        kernels.belt_difference_mask(image, np.zeros(3), 30, box, blocks, block)  # the right shape passes
        blocks = np.ones((2, 3), np.uint8)
    with pytest.raises(ValueError, match=message):
        kernels.belt_difference_mask(image, np.zeros(3), 30, box, blocks, block)


# --- connected components -----------------------------------------------------------------------


def _assert_same_components(mask: np.ndarray) -> int:
    n_labels, labels = kernels.connected_components(mask)
    want_n, want_labels = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    assert n_labels == want_n
    np.testing.assert_array_equal(labels, want_labels)
    assert labels.dtype == np.int32
    return n_labels


@pytest.mark.parametrize(("grade", "category", "seed"), [("D", "laptop", 9), ("C", "tablet", 3), ("B", "phone", 10)])
def test_connected_components_match_opencv_on_rendered_units(grade: str, category: str, seed: int) -> None:
    foreground, *_ = _components(_rendered_gray(grade, category, seed))
    assert _assert_same_components(foreground) > 10


def test_connected_components_number_like_opencv_across_block_rows() -> None:
    """Labels follow each component's first 2x2 block: a component starting on row 1 far left
    comes before one starting on row 0 further right (pixel order would say the opposite)."""
    mask = np.zeros((6, 12), np.uint8)
    mask[0, 9] = mask[1, 2] = mask[5, 4] = mask[5, 0] = 1
    mask[2:4, 6:9] = 7  # any non-zero value is foreground
    n_labels, labels = kernels.connected_components(mask)
    assert n_labels == 6
    assert labels[1, 2] == 1 and labels[0, 9] == 2 and labels[3, 7] == 3 and labels[5, 0] == 4 and labels[5, 4] == 5
    _assert_same_components(mask)


@settings(max_examples=150, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 53)),
    density=st.floats(0.0, 1.0),
    blur=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_connected_components_any_mask_match_opencv(
    shape: tuple[int, int], density: float, blur: float, seed: int
) -> None:
    # Blurred noise gives snakes, rings and U shapes whose arms merge late; odd widths put the
    # 8-pixel skipping across row ends.
    rng = np.random.default_rng(seed)
    noise = rng.random(shape).astype(np.float32)
    if blur > 0.3:
        noise = cv2.GaussianBlur(noise, (0, 0), blur)
    _assert_same_components((noise < np.quantile(noise, density)).astype(np.uint8))


def test_connected_components_edge_cases_and_bad_input() -> None:
    assert _assert_same_components(np.zeros((5, 9), np.uint8)) == 1
    assert _assert_same_components(np.ones((5, 9), np.uint8)) == 2
    checker = (np.indices((9, 11)).sum(axis=0) % 2).astype(np.uint8)  # diagonals connect: one component
    assert _assert_same_components(checker) == 2
    spaced = np.zeros((9, 11), np.uint8)
    spaced[::2, ::2] = 1  # the most components a mask can hold: one per 2x2 block
    assert _assert_same_components(spaced) == 31
    n_labels, labels = kernels.connected_components(np.zeros((0, 4), np.uint8))
    assert n_labels == 1 and labels.shape == (0, 4)
    for bad in (np.zeros((3, 3), np.int32), np.zeros((3, 3, 1), np.uint8), [[0, 1]]):
        with pytest.raises(ValueError, match="2-D uint8"):
            kernels.connected_components(bad)  # type: ignore[arg-type]


# --- straight-stroke votes ----------------------------------------------------------------------


def _unit_normals(directions: int) -> np.ndarray:
    angle = np.linspace(0.0, np.pi, directions, endpoint=False)
    return np.stack([-np.sin(angle), np.cos(angle)], axis=1)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 60),
    directions=st.integers(1, 12),
    scale=st.sampled_from([0.01, 1.0, 50.0, 1e3]),
    band=st.floats(0.1, 20.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_densest_band_matches_reference_on_band_edges(
    n: int, directions: int, scale: float, band: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 2)) * scale
    # Points whose offset along the first normal (y) is a whole number of bands, where the
    # division rounds either way: kernel and reference must floor alike.
    on_edge = rng.random(n) < 0.3
    points[on_edge, 1] = rng.integers(-5, 6, int(on_edge.sum())) * band
    _assert_bands_match_reference(points, np.zeros(2), _unit_normals(directions), band)


def _assert_bands_match_reference(points: np.ndarray, centre: np.ndarray, normals: np.ndarray, band: float) -> None:
    offsets = points - centre
    bins, votes = kernels.band_votes_reference(offsets[:, :1] * normals[:, 0] + offsets[:, 1:] * normals[:, 1], band)
    assert bins.min() == 0 and (votes.sum(axis=1) == points.shape[0]).all() and (votes[:, -1] == 0).all()
    direction, in_band = ridge_kernels.densest_band(points, centre, normals, band)
    want_direction, want_in_band = ridge_kernels.densest_band_reference(points, centre, normals, band)
    assert direction == want_direction
    np.testing.assert_array_equal(in_band, want_in_band)


@pytest.mark.parametrize(
    "points",
    [
        [[-0.0, 0.0], [0.0, -0.0]],  # signed zeros: one band
        [[-7.5, -0.25], [-3.0, -1e-300]],  # all negative
        [[2.0, 1e-300], [5e-324, 9.0]],  # all positive, a subnormal
        [[-1e3, 3.0], [1e3, -2.5]],
    ],
)
def test_densest_band_across_signs(points: list[list[float]]) -> None:
    """The bins are sized from the points' reach about the centre: any mix of signs, and offsets
    at the reach itself (a normal along an axis), must land inside them as the reference bins them."""
    for band in (0.5, 3.0):
        for normals in (_unit_normals(4), np.array([[1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]])):
            _assert_bands_match_reference(np.array(points), np.zeros(2), normals, band)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_densest_band_refuses_a_value_that_is_not_finite(bad: float) -> None:
    points = np.zeros((50, 2))
    normals = _unit_normals(7)
    one_bad = points.copy()
    one_bad[37, 1] = bad
    with pytest.raises(ValueError, match="finite"):
        ridge_kernels.densest_band(one_bad, np.zeros(2), normals, 1.0)
    with pytest.raises(ValueError, match="finite"):
        ridge_kernels.densest_band(points, np.array([0.0, bad]), normals, 1.0)
    with pytest.raises(ValueError, match="finite"):
        ridge_kernels.densest_band(points, np.zeros(2), np.where(normals == normals[3, 1], bad, normals), 1.0)


def test_densest_band_refuses_bad_input() -> None:
    normals = _unit_normals(3)
    for bad_points in (np.zeros((0, 2)), np.zeros(4), np.zeros((3, 3))):
        with pytest.raises(ValueError, match="points"):
            ridge_kernels.densest_band(bad_points, np.zeros(2), normals, 1.0)
    for bad_normals in (np.zeros((0, 2)), np.zeros((3, 1))):
        with pytest.raises(ValueError, match="normals"):
            ridge_kernels.densest_band(np.zeros((2, 2)), np.zeros(2), bad_normals, 1.0)
    with pytest.raises(ValueError, match="normals"):  # the bins are sized for unit normals
        ridge_kernels.densest_band(np.zeros((2, 2)), np.zeros(2), normals * 1.5, 1.0)
    with pytest.raises(ValueError, match="centre"):
        ridge_kernels.densest_band(np.zeros((2, 2)), np.zeros(3), normals, 1.0)
    with pytest.raises(ValueError, match="too many bands"):  # a vote table of gigabytes
        ridge_kernels.densest_band(np.array([[0.0, 0.0], [1e9, 0.0]]), np.zeros(2), normals, 1.0)
    # Sizes that would overflow the kernel's integers (and write outside its table) are refused
    # before any integer is formed: a tiny band; a spread whose cell count wraps around 2**64.
    with pytest.raises(ValueError, match="too many bands"):
        ridge_kernels.densest_band(np.array([[0.0, 0.0], [3.0, 4.0]]), np.zeros(2), normals, 1e-300)
    with pytest.raises(ValueError, match="too many bands"):
        ridge_kernels.densest_band(np.array([[0.0, 0.0], [1.02e17, 0.0]]), np.zeros(2), _unit_normals(90), 1.0)
    with pytest.raises(ValueError, match="finite"):  # finite points whose difference from the centre is not
        ridge_kernels.densest_band(np.array([[1.5e308, 0.0], [-1.5e308, 0.0]]), np.array([-1.5e308, 0.0]), normals,
                                   1.0)
    for band in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="band"):
            ridge_kernels.densest_band(np.zeros((2, 2)), np.zeros(2), normals, band)


@settings(max_examples=80, deadline=None)
@given(
    image=hnp.arrays(np.uint8, st.tuples(st.integers(1, 30), st.integers(1, 40), st.just(3))),
    belt=st.tuples(*[st.integers(0, 510).map(lambda v: v / 2)] * 3),
    threshold=st.integers(-5, 300),
    step=st.integers(1, 5),
)
def test_belt_difference_mask_sampled_matches_reference_and_the_full_mask(
    image: np.ndarray, belt: tuple[float, float, float], threshold: int, step: int
) -> None:
    got = kernels.belt_difference_mask_sampled(image, np.array(belt), threshold, step)
    np.testing.assert_array_equal(
        got, kernels.belt_difference_mask_sampled_reference(image, np.array(belt), threshold, step)
    )
    assert got.shape == (image.shape[0] // step, image.shape[1] // step)
    # The top-left pixel of each step x step block, as the full-resolution mask has it.
    full = kernels.belt_difference_mask(image, np.array(belt), threshold)
    np.testing.assert_array_equal(got, full[: got.shape[0] * step : step, : got.shape[1] * step : step])


def test_belt_difference_mask_sampled_on_a_rendered_frame_and_bad_input() -> None:
    rng = np.random.default_rng(6)
    appearance, _ = generate_appearance("C", "tablet", 160.0, 230.0, rng)
    frame = render_frame(appearance, rng)
    frame.flags.writeable = False
    belt = np.median(frame[:6].reshape(-1, 3), axis=0)
    got = kernels.belt_difference_mask_sampled(frame, belt, 30, 2)
    np.testing.assert_array_equal(got, kernels.belt_difference_mask_sampled_reference(frame, belt, 30, 2))
    np.testing.assert_array_equal(got, kernels.belt_difference_mask(frame, belt, 30)[::2, ::2])
    assert 0.05 < np.count_nonzero(got) / got.size < 0.9  # the unit and the belt both there
    for step in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="step"):
            kernels.belt_difference_mask_sampled(frame, belt, 30, step)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="HxWx3"):
        kernels.belt_difference_mask_sampled(frame[:, :, 0], belt, 30, 2)


@settings(max_examples=150, deadline=None)
@given(
    grid=hnp.arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.sampled_from([0, 1, 1, 2])),
    block=st.integers(1, 20),
    reach=st.integers(0, 12),
    data=st.data(),
)
def test_measured_around_matches_reference(grid: np.ndarray, block: int, reach: int, data: st.DataObject) -> None:
    n_y, n_x = grid.shape
    coordinate = st.tuples(st.integers(-20, n_x * block + 20), st.integers(-20, n_y * block + 20))
    points = np.array(data.draw(st.lists(coordinate, min_size=0, max_size=8)), np.int32).reshape(-1, 2)
    got = kernels.measured_around(points, grid, block, reach)
    assert got == kernels.measured_around_reference(points, grid, block, reach)
    # Also as OpenCV's contour layout, (N, 1, 2).
    assert kernels.measured_around(points.reshape(-1, 1, 2), grid, block, reach) == got


def test_measured_around_on_known_blocks_and_bad_input() -> None:
    blocks = np.full((3, 3), kernels.BLOCK_EDGE, np.uint8)
    blocks[1, 1] = kernels.BLOCK_INSIDE  # pixels 16..31 both ways
    assert kernels.measured_around(np.array([[10, 10], [40, 5]]), blocks, 16, 5)
    assert kernels.measured_around(np.array([[10, 11]]), blocks, 16, 5)  # x reaches 15: beside the block
    assert not kernels.measured_around(np.array([[11, 11]]), blocks, 16, 5)  # reaches (16, 16): in it
    assert not kernels.measured_around(np.array([[36, 24]]), blocks, 16, 5)  # reaches x 31 from the right
    assert kernels.measured_around(np.array([[37, 24]]), blocks, 16, 5)  # x 32 and beyond: beside it
    assert kernels.measured_around(np.array([[-30, -30], [100, 100]]), blocks, 16, 5)  # beyond the map
    assert kernels.measured_around(np.zeros((0, 2), np.int32), blocks, 16, 5)
    for bad_blocks, block, reach, message in (
        (blocks.astype(np.int32), 16, 5, "uint8"),
        (blocks[0], 16, 5, "2-D"),
        (blocks, 0, 5, "block"),
        (blocks, 16, -1, "reach"),
    ):
        with pytest.raises(ValueError, match=message):
            kernels.measured_around(np.zeros((1, 2), np.int32), bad_blocks, block, reach)


@settings(max_examples=100, deadline=None)
@given(
    n_points=st.integers(0, 300),
    width=st.floats(10.0, 400.0),
    height=st.floats(10.0, 400.0),
    corner=st.floats(0.0, 40.0),
    bin_px=st.sampled_from([1.0, 1.5, 2.5]),
    seed=st.integers(0, 2**32 - 1),
)
def test_outline_depths_match_reference(
    n_points: int, width: float, height: float, corner: float, bin_px: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    points = np.stack([rng.uniform(-5, width + 5, n_points), rng.uniform(-5, height + 5, n_points)], axis=1)
    # Points on bin edges and on the band and corner limits, where a comparison decides; some NaN.
    if n_points:
        points[rng.random(n_points) < 0.2, 0] = corner + bin_px * rng.integers(0, 20)
        points[rng.random(n_points) < 0.1, 1] = 36.0
        points[rng.random(n_points) < 0.05] = np.nan
    got = kernels.outline_depths(points, width, height, 36.0, corner, bin_px)
    want = kernels.outline_depths_reference(points, width, height, 36.0, corner, bin_px)
    for side, (a, b) in enumerate(zip(got, want, strict=True)):
        length = width if side % 2 == 0 else height
        assert (a is None) == (b is None) == (length <= 2 * corner + 4 * bin_px)
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_outline_depths_of_a_notched_rectangle() -> None:
    # The outline of a 200 x 100 rectangle with a notch 6 deep, x 100..110, in the top side.
    top = np.stack([np.arange(0.0, 200.0), np.where((np.arange(200) >= 100) & (np.arange(200) < 110), 6.0, 0.0)], 1)
    right = np.stack([np.full(100, 200.0), np.arange(0.0, 100.0)], 1)
    bottom = np.stack([np.arange(0.0, 200.0), np.full(200, 100.0)], 1)
    left = np.stack([np.zeros(100), np.arange(0.0, 100.0)], 1)
    points = np.concatenate([top, right, bottom, left])
    profiles = kernels.outline_depths(points, 200.0, 100.0, 36.0, 20.0, 2.0)
    assert all(p is not None for p in profiles)
    top_depth = profiles[0]
    assert top_depth is not None and top_depth.size == 81  # (200 - 40) / 2 + 1
    np.testing.assert_array_equal(top_depth[40:45], 6.0)  # x 100..109, 2 px a bin from x 20
    assert np.nanmax(np.delete(top_depth, range(40, 45))) == 0.0
    assert np.isnan(top_depth[-1])  # x 180 is the corner limit, never inside
    for side, profile in enumerate(kernels.outline_depths_reference(points, 200.0, 100.0, 36.0, 20.0, 2.0)):
        np.testing.assert_array_equal(profile, profiles[side])
    assert kernels.outline_depths(points, 200.0, 100.0, 36.0, 47.0, 2.0)[1] is None  # 100 <= 94 + 8
    with pytest.raises(ValueError, match="bin_px"):
        kernels.outline_depths(points, 200.0, 100.0, 36.0, 20.0, 0.0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        kernels.outline_depths(points[:, :1], 200.0, 100.0, 36.0, 20.0, 2.0)
