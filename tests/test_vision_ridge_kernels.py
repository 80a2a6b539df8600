"""Ridge measurement kernels (vision.ridge_kernels) against their NumPy references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.render import generate_appearance, render_frame
from vision import ridge_kernels

GRAY_TYPES = (np.uint8, np.float32, np.float64)


def _samples(rng: np.random.Generator, shape: tuple[int, int], n: int, strokes: int) -> tuple[np.ndarray, ...]:
    # Points inside, on and beyond the image (sampling clamps), normals of any direction.
    points = rng.uniform(-4.0, max(shape) + 4.0, (n, 2))
    angle = rng.uniform(0.0, 2 * np.pi, n)
    normals = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    owner = np.sort(rng.integers(0, strokes, n))
    return points, normals, owner


@settings(max_examples=150, deadline=None)
@given(
    height=st.integers(1, 50),
    width=st.integers(1, 50),
    n=st.integers(0, 60),
    strokes=st.integers(1, 5),
    dtype=st.sampled_from(GRAY_TYPES),
    flat=st.booleans(),
    reach=st.sampled_from([0.5, 1.0, 3.0, 6.0, 6.7]),
    seed=st.integers(0, 2**32 - 1),
)
def test_widths_at_matches_reference(
    height: int, width: int, n: int, strokes: int, dtype: type, flat: bool, reach: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    gray = np.full((height, width), 90, dtype) if flat else (rng.random((height, width)) * 255).astype(dtype)
    points, normals, owner = _samples(rng, (height, width), n, strokes)
    got = ridge_kernels.widths_at(gray, points, normals, owner, strokes, reach)
    want = ridge_kernels.widths_at_reference(gray, points, normals, owner, strokes, reach)
    np.testing.assert_array_equal(got, want)
    if flat:
        assert np.isinf(got).all()  # no peak, no ridge


@settings(max_examples=150, deadline=None)
@given(
    height=st.integers(1, 50),
    width=st.integers(1, 50),
    n=st.integers(0, 60),
    strokes=st.integers(1, 5),
    dtype=st.sampled_from(GRAY_TYPES),
    flank=st.sampled_from([2.0, 4.0, 6.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_profile_figures_match_reference(
    height: int, width: int, n: int, strokes: int, dtype: type, flank: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    gray = (rng.random((height, width)) * 255).astype(dtype)
    points, normals, owner = _samples(rng, (height, width), n, strokes)
    got = ridge_kernels.profile_figures(gray, points, normals, owner, strokes, flank)
    want = ridge_kernels.profile_figures_reference(gray, points, normals, owner, strokes, flank)
    for g, w in zip(got, want, strict=True):
        # Sums are added in another order: equal to rounding, and -inf (no contrast) alike.
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-9)
    empty = np.bincount(owner, minlength=strokes) == 0
    assert all(np.isneginf(figure[empty]).all() for figure in got)


def test_ridge_kernels_on_a_rendered_unit() -> None:
    """Samples along and across real strokes (a rendered grade-C phone), as the checker takes them."""
    rng = np.random.default_rng(3)
    appearance, _ = generate_appearance("C", "phone", 71.5, 146.7, rng)
    gray = cv2.cvtColor(render_frame(appearance, rng), cv2.COLOR_BGR2GRAY)
    points, normals, owner = _samples(np.random.default_rng(4), gray.shape, 3000, 40)
    np.testing.assert_array_equal(
        ridge_kernels.widths_at(gray, points, normals, owner, 40, 6.0),
        ridge_kernels.widths_at_reference(gray, points, normals, owner, 40, 6.0),
    )
    for g, w in zip(
        ridge_kernels.profile_figures(gray, points, normals, owner, 40, 4.0),
        ridge_kernels.profile_figures_reference(gray, points, normals, owner, 40, 4.0),
        strict=True,
    ):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-9)


def test_widths_at_measures_a_blurred_line() -> None:
    """A bright 1 px line blurred by the optics is about 2 px wide at half height, a 7 px band about
    7; a dark groove measures like a bright ridge."""
    gray = np.full((60, 80), 50.0)
    gray[:, 20] = 200.0
    gray[:, 50:57] = 200.0
    gray = cv2.GaussianBlur(gray, (0, 0), 0.8)
    points = np.array([[20.0, 30.0], [53.0, 30.0]])
    normals = np.array([[1.0, 0.0], [1.0, 0.0]])
    widths = ridge_kernels.widths_at(gray, points, normals, np.array([0, 1]), 2, 7.0)
    assert widths[0] == pytest.approx(2.0, abs=0.5) and widths[1] == pytest.approx(7.0, abs=0.6)
    assert ridge_kernels.widths_at(255.0 - gray, points, normals, np.array([0, 1]), 2, 7.0) == pytest.approx(widths)


@settings(max_examples=150, deadline=None)
@given(
    path=st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), min_size=0, max_size=12),
    repeat=st.booleans(),
    step=st.sampled_from([0.3, 1.0, 2.0, 7.5]),
)
def test_path_samples_match_reference(path: list[tuple[float, float]], repeat: bool, step: float) -> None:
    points = np.array(path, np.float64).reshape(-1, 2)
    if repeat and points.shape[0]:
        points = np.repeat(points, 2, axis=0)  # pieces without length are skipped
    got = ridge_kernels.path_samples(points, step)
    want = ridge_kernels.path_samples_reference(points, step)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_path_samples_bad_input() -> None:
    assert ridge_kernels.path_samples(np.array([[0.0, 0.0], [np.nan, 1.0]]), 1.0)[0].shape == (0, 2)
    points, tangents = ridge_kernels.path_samples(np.array([[0.0, 0.0], [4.0, 0.0]]), 1.0)
    np.testing.assert_array_equal(points[:, 0], [0, 1, 2, 3, 4])
    assert (tangents == [1.0, 0.0]).all()
    with pytest.raises(ValueError, match="step"):
        ridge_kernels.path_samples(np.zeros((2, 2)), 0.0)


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(12, 40),
    density=st.floats(0.05, 0.9),
    samples=st.integers(1, 30),
    radius=st.sampled_from([1.5, 3.0, 5.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_neighbourhood_normals_match_reference(size: int, density: float, samples: int, radius: float, seed: int
                                               ) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    inner = int(radius)
    mask[inner : size - inner, inner : size - inner] = rng.random((size - 2 * inner, size - 2 * inner)) < density
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return
    pick = rng.integers(0, xs.size, samples)
    centres = np.stack([xs[pick], ys[pick]], axis=1)
    got = ridge_kernels.neighbourhood_normals(mask, centres, radius)
    want = ridge_kernels.neighbourhood_normals_reference(mask, centres, radius)
    np.testing.assert_allclose(np.hypot(*got.T), 1.0)
    # Where the neighbourhood has a principal axis, the same one; where it is round (equal second
    # moments) the axis is any, and the order of the sums decides.
    offsets = np.stack([xs, ys], axis=1)[None, :, :] - centres[:, None, :]
    near = (offsets**2).sum(axis=2) <= radius**2
    mean = (offsets * near[..., None]).sum(axis=1, keepdims=True) / near.sum(axis=1)[:, None, None]
    d = np.where(near[..., None], offsets - mean, 0.0)
    sxx, syy, sxy = (d[..., 0] ** 2).sum(1), (d[..., 1] ** 2).sum(1), (d[..., 0] * d[..., 1]).sum(1)
    has_axis = np.hypot(sxx - syy, 2 * sxy) > 1e-6 * (sxx + syy + 1)
    # A normal and its opposite are the same axis (atan2 may land on either side of +-90 degrees).
    np.testing.assert_allclose(np.abs((got * want).sum(axis=1))[has_axis], 1.0, atol=1e-9)


def test_neighbourhood_normals_of_a_line_and_bad_centres() -> None:
    mask = np.zeros((20, 40), np.uint8)
    mask[10, 5:35] = 1
    normals = ridge_kernels.neighbourhood_normals(mask, np.array([[10, 10], [20, 10]]), 5.0)
    np.testing.assert_allclose(np.abs(normals), [[0.0, 1.0], [0.0, 1.0]], atol=1e-12)
    with pytest.raises(ValueError, match="inside"):
        ridge_kernels.neighbourhood_normals(mask, np.array([[2, 10]]), 5.0)


def test_bad_samples_are_refused() -> None:
    gray = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError, match="owner"):
        ridge_kernels.widths_at(gray, np.zeros((2, 2)), np.ones((2, 2)), np.array([0, 2]), 2, 6.0)
    with pytest.raises(ValueError, match="one row per sample"):
        ridge_kernels.profile_figures(gray, np.zeros((2, 2)), np.ones((3, 2)), np.array([0, 0]), 1, 4.0)
    with pytest.raises(ValueError, match="2-D"):
        ridge_kernels.widths_at(np.zeros(5), np.zeros((1, 2)), np.ones((1, 2)), np.array([0]), 1, 6.0)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 400),
    directions=st.integers(1, 90),
    scale=st.sampled_from([0.5, 4.0, 60.0]),
    band=st.sampled_from([0.7, 1.0, 3.0]),
    whole_pixels=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_densest_band_matches_reference(
    n: int, directions: int, scale: float, band: float, whole_pixels: bool, seed: int
) -> None:
    # Pixel-centre offsets (many exactly on a bin edge, many ties) and arbitrary ones.
    rng = np.random.default_rng(seed)
    points = rng.normal(0.0, scale, (n, 2))
    if whole_pixels:
        points = np.round(points)
    angle = np.linspace(0.0, np.pi, directions, endpoint=False)
    normals = np.stack([-np.sin(angle), np.cos(angle)], axis=1)
    centre = ridge_kernels.point_mean(points)
    direction, in_band = ridge_kernels.densest_band(points, centre, normals, band)
    want_direction, want_in_band = ridge_kernels.densest_band_reference(points, centre, normals, band)
    assert direction == want_direction
    assert in_band.dtype == np.bool_
    np.testing.assert_array_equal(in_band, want_in_band)
    assert in_band.any()


def test_densest_band_finds_a_line() -> None:
    # 60 points on the line y = 2 at x = 0..59 and 10 scattered ones: direction 0 (normal along
    # y), and the band holds exactly the line's points.
    rng = np.random.default_rng(5)
    line = np.stack([np.arange(60.0), np.full(60, 2.0)], axis=1)
    stray = rng.uniform(20.0, 40.0, (10, 2))
    points = np.concatenate([line, stray])
    angle = np.linspace(0.0, np.pi, 90, endpoint=False)
    normals = np.stack([-np.sin(angle), np.cos(angle)], axis=1)
    direction, in_band = ridge_kernels.densest_band(points, np.zeros(2), normals, 1.0)
    assert direction == 0
    assert in_band[:60].all()
    assert in_band.sum() == 60  # the stray points lie 18 px or more off the line
    # The same line about the points' mean: the band does not depend on where the bins start.
    direction, in_band = ridge_kernels.densest_band(points, points.mean(axis=0), normals, 1.0)
    assert direction == 0 and in_band.sum() == 60 and in_band[:60].all()


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 3000),
    scale=st.sampled_from([1.0, 300.0, 1e6]),
    whole_pixels=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_point_mean_matches_reference_to_the_bit(n: int, scale: float, whole_pixels: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.normal(scale, scale, (n, 2))
    if whole_pixels:
        points = np.round(points)
    np.testing.assert_array_equal(ridge_kernels.point_mean(points), ridge_kernels.point_mean_reference(points))


def test_point_mean_of_a_column_view_and_bad_input() -> None:
    block = np.arange(30.0).reshape(5, 6)
    np.testing.assert_array_equal(ridge_kernels.point_mean(block[:, 2:4]), [14.0, 15.0])
    for bad in (np.zeros((0, 2)), np.zeros((3, 3)), np.zeros(2)):
        with pytest.raises(ValueError):
            ridge_kernels.point_mean(bad)


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 60),
    width=st.integers(1, 60),
    labels_in_use=st.integers(1, 4),
    window=st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(1, 60), st.integers(1, 60)),
    expected=st.integers(0, 400),
    seed=st.integers(0, 2**31 - 1),
)
def test_label_pixels_match_reference(
    height: int, width: int, labels_in_use: int, window: tuple[int, int, int, int], expected: int, seed: int
) -> None:
    # A window (a strided view) of a label image, with room for too few, exactly or too many.
    labels = np.random.default_rng(seed).integers(0, labels_in_use + 1, (height, width)).astype(np.int32)
    x0, y0, w, h = window
    view = labels[y0 : y0 + h, x0 : x0 + w]
    for label in range(labels_in_use + 2):
        got = ridge_kernels.label_pixels(view, label, x0, y0, expected)
        want = ridge_kernels.label_pixels_reference(view, label, x0, y0)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want.reshape(-1, 2))


def test_label_pixels_refuses_other_label_types() -> None:
    with pytest.raises(ValueError):
        ridge_kernels.label_pixels(np.zeros((3, 3), np.int64), 1)
    with pytest.raises(ValueError):
        ridge_kernels.label_pixels(np.zeros(3, np.int32), 1)
