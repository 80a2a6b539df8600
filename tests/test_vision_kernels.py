"""Numba kernels against their NumPy references, on random and rendered images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simulator.render import generate_appearance, render_frame
from vision import kernels

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
