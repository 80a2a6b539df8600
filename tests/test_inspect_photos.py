"""`edge inspect` on photograph-like pictures: units on wood, fabric and gradient backgrounds at
any resolution and orientation, pictures without a unit, and files that are not usable images.

The photographs are drawn with OpenCV and NumPy (a rounded phone body with its screen on a
textured background, saved as JPEG or PNG): the project has no photographs of its own, and drawn
ones carry their ground truth (where the corners are, how long the unit is).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.cli import main as edge_main
from edge.config import CameraCalibration
from vision.damage import DamageChecker, pose_from_quad, warm_up
from vision.photo import PhotoError, catalog_scale, decode_photo, find_outline, load_photo

IPHONE_MM = (146.7, 71.5)  # PH-IP13-128-MID in config/catalog.csv


# --- drawing photographs ---------------------------------------------------------------------------


def background(height: int, width: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "gradient":  # a studio sweep, bright to dark across the picture
        base = 90 + 72 * (x / width) + 60 * (y / height)
        image = np.stack([base * 0.9, base, base * 1.05], axis=2)
    elif kind == "wood":
        grain = 25 * np.sin(x / width * 60 + 3 * np.sin(y / height * 7)) + 10 * np.sin(x / width * 300)
        base = 120 + grain + 30 * (y / height)
        image = np.stack([base * 0.55, base * 0.8, base * 1.1], axis=2)
    else:  # fabric: blotchy noise under a light falling off to one side
        noise = cv2.GaussianBlur(rng.normal(0, 40, (height, width)).astype(np.float32), (0, 0), 3)
        base = 140 + noise + 40 * (x / width)
        image = np.stack([base, base * 0.95, base * 0.85], axis=2)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_unit(
    image: np.ndarray, centre: tuple[float, float], size_px: tuple[float, float], angle_deg: float,
    body: tuple[int, int, int] = (25, 25, 28), screen: tuple[int, int, int] = (12, 12, 14),
) -> tuple[np.ndarray, Any]:
    """A rounded unit with a screen inset 5% of its short side; returns its true corners (frame
    px) and the map from unit coordinates (px from its centre, long side along x) to the frame."""
    length, width = size_px
    radius = 0.12 * width
    points = []
    for cx, cy, start in ((length / 2 - radius, width / 2 - radius, 0), (-length / 2 + radius, width / 2 - radius, 90),
                          (-length / 2 + radius, -width / 2 + radius, 180),
                          (length / 2 - radius, -width / 2 + radius, 270)):
        for a in np.deg2rad(np.linspace(start, start + 90, 16)):
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    outline = np.array(points)
    turn = math.radians(angle_deg)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])

    def to_frame(p: np.ndarray) -> np.ndarray:
        return np.asarray(p, np.float64) @ rotation.T + np.asarray(centre)

    cv2.fillPoly(image, [np.round(to_frame(outline) * 16).astype(np.int32)], body, cv2.LINE_AA, shift=4)
    inset = outline * np.array([(length - 0.1 * width) / length, 0.9])
    cv2.fillPoly(image, [np.round(to_frame(inset) * 16).astype(np.int32)], screen, cv2.LINE_AA, shift=4)
    corners = to_frame(np.array([[-length, -width], [length, -width], [length, width], [-length, width]]) / 2)
    return corners, to_frame


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def corner_error(found: np.ndarray, truth: np.ndarray) -> float:
    """Largest corner distance, over the four ways to start the corner order."""
    return min(float(np.abs(np.roll(found, k, axis=0) - truth).max()) for k in range(4))


def with_exif_orientation(jpeg_bytes: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 Exif segment (big-endian TIFF, one IFD entry: Orientation) after SOI,
    as a camera writes it for a picture taken with the phone held sideways."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    assert jpeg_bytes[:2] == b"\xff\xd8"
    return jpeg_bytes[:2] + segment + jpeg_bytes[2:]


def run_inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = edge_main(["inspect", *args])
    out = capsys.readouterr().out
    return code, (json.loads(out) if "--json" in args else out)


@pytest.fixture(scope="module", autouse=True)
def _kernels() -> None:
    warm_up()


# --- finding the unit in a photograph ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["gradient", "wood", "fabric"])
@pytest.mark.parametrize(("angle", "length_px"), [(0.0, 600.0), (17.0, 420.0), (63.0, 560.0), (-80.0, 300.0)])
def test_unit_is_found_on_textured_backgrounds(kind: str, angle: float, length_px: float) -> None:
    rng = np.random.default_rng(int(angle) + 100)
    image = background(720, 1280, kind, rng)
    size = (length_px, length_px * IPHONE_MM[1] / IPHONE_MM[0])
    truth, _ = draw_unit(image, (660, 370), size, angle)
    outline = find_outline(jpeg(image))
    assert outline is not None
    # Within 1.5% of the unit's length: corners of a rounded outline are extrapolated from its sides.
    assert corner_error(outline.corners, truth) < 0.015 * length_px + 2
    assert outline.aspect == pytest.approx(IPHONE_MM[0] / IPHONE_MM[1], rel=0.04)


@pytest.mark.parametrize(("body", "screen", "kind"), [
    ((200, 200, 205), (20, 20, 24), "fabric"),  # silver unit, light background
    ((40, 60, 150), (15, 15, 18), "gradient"),  # red unit
    ((225, 228, 230), (235, 238, 240), "wood"),  # white unit, screen off and white
])
def test_units_of_other_colours_and_sizes_are_found(body: tuple[int, int, int], screen: tuple[int, int, int],
                                                    kind: str) -> None:
    rng = np.random.default_rng(5)
    image = background(900, 1200, kind, rng)
    tablet = (620.0, 620.0 * 174.1 / 247.6)  # a tablet's 1.42:1
    truth, _ = draw_unit(image, (580, 470), tablet, 8.0, body=body, screen=screen)
    outline = find_outline(jpeg(image))
    assert outline is not None and corner_error(outline.corners, truth) < 12
    assert outline.aspect == pytest.approx(247.6 / 174.1, rel=0.04)


@pytest.mark.parametrize("kind", ["gradient", "wood", "fabric"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_background_alone_is_no_unit(kind: str, seed: int) -> None:
    assert find_outline(jpeg(background(720, 1280, kind, np.random.default_rng(seed)))) is None


def test_unit_on_a_sheet_of_paper_is_the_unit_not_the_sheet() -> None:
    rng = np.random.default_rng(4)
    image = background(720, 1280, "wood", rng)
    draw_unit(image, (640, 360), (880, 880 / 1.414), 3.0, body=(235, 238, 240), screen=(235, 238, 240))  # A4 sheet
    truth, _ = draw_unit(image, (600, 380), (330, 330 * IPHONE_MM[1] / IPHONE_MM[0]), -12.0)
    outline = find_outline(jpeg(image))
    assert outline is not None and corner_error(outline.corners, truth) < 8, outline


@pytest.mark.parametrize("kind", ["gradient", "wood", "fabric"])
def test_drop_shadow_is_not_part_of_the_unit(kind: str) -> None:
    """Lit from one side, the unit casts a soft shadow that joins it in a brightness threshold;
    the outline on the strongest edge is the unit's own."""
    rng = np.random.default_rng(7)
    image = background(1000, 1400, kind, rng)
    size = (640.0, 640.0 * IPHONE_MM[1] / IPHONE_MM[0])
    truth, _ = draw_unit(image.copy(), (700, 500), size, 12.0)
    shadow = np.zeros(image.shape[:2], np.float32)
    cv2.fillPoly(shadow, [np.round(truth + np.array([30.0, 36.0])).astype(np.int32)], 1.0)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 18)
    image = (image.astype(np.float32) * (1 - 0.45 * shadow[..., None])).astype(np.uint8)
    draw_unit(image, (700, 500), size, 12.0)
    outline = find_outline(jpeg(image))
    assert outline is not None and corner_error(outline.corners, truth) < 8, outline


def test_squares_and_units_cut_by_the_edge_are_no_unit() -> None:
    rng = np.random.default_rng(9)
    square = background(720, 1280, "wood", rng)
    cv2.rectangle(square, (400, 150), (800, 550), (20, 20, 20), -1)  # a box or a coaster, 1:1
    assert find_outline(square) is None
    cut = background(720, 1280, "wood", rng)
    draw_unit(cut, (1150, 360), (600, 292), 0.0)  # half of it beyond the right edge
    assert find_outline(cut) is None


def test_photo_pose_inspects_the_surface_only() -> None:
    """A unit found as a photo outline: the surface is inspected (a scratch is found and measured),
    the wood grain around the rounded corners is not, and no outline damage is invented."""
    rng = np.random.default_rng(12)
    image = background(720, 1280, "wood", rng)
    px_per_mm = 4.0
    _, to_unit = draw_unit(image, (640, 360), (IPHONE_MM[0] * px_per_mm, IPHONE_MM[1] * px_per_mm), 21.0)
    ends = to_unit(np.array([[-20.0, -5.0], [0.0, 3.0]]) * px_per_mm)  # 21.5 mm
    cv2.line(image, tuple(np.round(ends[0]).astype(int)), tuple(np.round(ends[1]).astype(int)), (110, 110, 110), 1,
             cv2.LINE_AA)
    image = jpeg(image, 90)
    outline = find_outline(image)
    assert outline is not None
    report = DamageChecker(px_per_mm=px_per_mm).check(image, pose=pose_from_quad(outline.corners, image.shape))
    assert report.device_found and report.error is None
    assert max(report.device_width_mm, report.device_height_mm) == pytest.approx(IPHONE_MM[0], rel=0.02)
    assert [d.kind for d in report.defects] == ["scratch"], report.defects
    assert report.defects[0].length_mm == pytest.approx(21.5, abs=2.5)


def test_catalog_scale_matches_by_aspect_ratio() -> None:
    sizes = [("phone", 146.7, 71.5), ("tablet", 247.6, 174.1), ("laptop", 304.1, 215.0)]
    name, long_mm, short_mm, px_per_mm = catalog_scale(600.0, 600.0 * 71.5 / 146.7, sizes)  # type: ignore[misc]
    assert (name, long_mm, short_mm) == ("phone", 146.7, 71.5) and px_per_mm == pytest.approx(600 / 146.7)
    assert catalog_scale(500.0, 500.0, sizes) is None  # square: nothing in the catalog
    assert catalog_scale(float("nan"), 3.0, sizes) is None and catalog_scale(10.0, 0.0, sizes) is None
    assert catalog_scale(600.0, 300.0, [("broken", float("inf"), 0.0)]) is None


# --- decoding files --------------------------------------------------------------------------------


def test_decoding_converts_what_cameras_and_editors_write(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    colour = background(200, 300, "wood", rng)
    gray = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    deep = colour.astype(np.uint16) * 257  # 16 bits per sample
    rgba = cv2.cvtColor(colour, cv2.COLOR_BGR2BGRA)
    for name, image in (("gray.png", gray), ("deep.png", deep), ("rgba.png", rgba), ("deep.tiff", deep)):
        cv2.imwrite(str(tmp_path / name), image)
        loaded = load_photo(tmp_path / name)
        assert loaded.dtype == np.uint8 and loaded.shape == (200, 300, 3), name
        # The same picture, not a rescaled or clipped one.
        assert np.abs(cv2.cvtColor(loaded, cv2.COLOR_BGR2GRAY).astype(int) - gray.astype(int)).max() <= 2, name
    encoded, data = cv2.imencode(".jpg", colour)
    assert encoded
    (tmp_path / "sideways.jpg").write_bytes(with_exif_orientation(data.tobytes(), 6))
    assert load_photo(tmp_path / "sideways.jpg").shape == (300, 200, 3)  # turned upright


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty file"),
    (b"\xff\xd8\xff\xe0 this is not really a JPEG", "decode"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "decode"),
    ("tiny", "too small"),
])
def test_unusable_files_give_a_reason(tmp_path: Path, content: bytes | str, reason: str) -> None:
    path = tmp_path / "picture.png"
    if content == "tiny":
        cv2.imwrite(str(path), np.zeros((40, 30, 3), np.uint8))
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(PhotoError, match=reason):
        load_photo(path)
    with pytest.raises(PhotoError, match="cannot open"):
        load_photo(tmp_path / "missing.jpg")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4096))
def test_decoding_hostile_bytes_fails_cleanly(data: bytes) -> None:
    try:
        image = decode_photo(np.frombuffer(data, np.uint8))
    except PhotoError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3


@settings(max_examples=40, deadline=None)
@given(st.integers(64, 400), st.integers(64, 400), st.integers(0, 2**32 - 1))
def test_outline_search_never_raises(height: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if seed % 3 == 0:
        image[:] = image[0, 0]  # flat
    outline = find_outline(image)
    assert outline is None or (np.isfinite(outline.corners).all() and outline.aspect >= 1.0)


# --- edge inspect end to end ----------------------------------------------------------------------


def test_edge_inspect_on_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(30)
    big = background(3000, 4000, "wood", rng)  # a 12 MP phone photo
    px_per_mm = 16.0
    _, to_unit = draw_unit(big, (2100, 1400), (IPHONE_MM[0] * px_per_mm, IPHONE_MM[1] * px_per_mm), -14.0)
    ends = to_unit(np.array([[-30.0, -8.0], [-12.0, 4.0]]) * px_per_mm)  # 21.6 mm
    cv2.line(big, tuple(np.round(ends[0]).astype(int)), tuple(np.round(ends[1]).astype(int)), (120, 120, 120), 4,
             cv2.LINE_AA)
    cv2.imwrite(str(tmp_path / "big.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    small = background(600, 800, "gradient", rng)
    draw_unit(small, (400, 300), (260, 260 * IPHONE_MM[1] / IPHONE_MM[0]), 0.0)  # long side across
    encoded, data = cv2.imencode(".jpg", small)
    assert encoded
    (tmp_path / "sideways.jpg").write_bytes(with_exif_orientation(data.tobytes(), 6))
    cv2.imwrite(str(tmp_path / "gray.png"), cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "deep.png"), small.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(small, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "table.jpg"), background(720, 1280, "fabric", rng))
    names = ["big.jpg", "sideways.jpg", "gray.png", "deep.png", "rgba.png", "table.jpg"]

    code, reports = run_inspect(capsys, *(str(tmp_path / n) for n in names), "--json", "--evidence",
                                str(tmp_path / "ev"))
    assert code == 3  # every image read, no unit in one of them
    by_name = {Path(r["image"]).name: r for r in reports}
    assert list(by_name) == names
    unit = by_name["big.jpg"]
    assert unit["image_size_px"] == [4000, 3000] and unit["device_found"]
    assert unit["mode"].startswith("photo outline") and unit["scale_source"] == "catalog"
    assert unit["px_per_mm"] == pytest.approx(px_per_mm, rel=0.04)
    vision = unit["vision"]
    assert sorted((vision["device_width_mm"], vision["device_height_mm"])) == [
        pytest.approx(IPHONE_MM[1], rel=0.03), pytest.approx(IPHONE_MM[0], rel=0.03)]
    assert vision["scratch_count"] == 1 and vision["crack_count"] == 0, vision["defects"]
    assert vision["defects"][0]["length_mm"] == pytest.approx(21.6, abs=3.0)
    assert unit["grade"] in ("B", "C")
    assert cv2.imread(unit["evidence"]).shape == (960, 1280, 3)
    assert by_name["sideways.jpg"]["image_size_px"] == [600, 800]  # the EXIF turn applied
    for name in ("sideways.jpg", "gray.png", "deep.png", "rgba.png"):
        report = by_name[name]
        assert report["device_found"] and report["scale_source"] == "catalog", (name, report)
        assert report["grade"] == "A" and report["vision"]["defects"] == [], (name, report)
    table = by_name["table.jpg"]
    assert table["device_found"] is False and table["grade"] is None and table["mode"] == "no device found"
    assert "no device found" in table["grade_reason"] and table["vision"]["defects"] == []
    assert Path(table["evidence"]).exists()


def test_edge_inspect_reports_unusable_files_and_keeps_going(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) * 4)
    cv2.imwrite(str(tmp_path / "tiny.png"), np.full((20, 30, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "table.jpg"), background(300, 400, "wood", np.random.default_rng(1)))
    code, reports = run_inspect(capsys, str(tmp_path / "corrupt.jpg"), str(tmp_path / "tiny.png"),
                                str(tmp_path / "nothing-here.jpg"), str(tmp_path / "table.jpg"), "--json")
    assert code == 1
    corrupt, tiny, absent, table = reports
    assert "cannot read image" in corrupt["error"] and "too small" in tiny["error"]
    assert "cannot open" in absent["error"]
    assert table["device_found"] is False
    code, text = run_inspect(capsys, str(tmp_path / "table.jpg"))
    assert code == 3 and "NO DEVICE FOUND" in text


def test_close_up_needs_whole_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    close = np.full((600, 900, 3), 28, np.uint8)
    cv2.line(close, (100, 100), (160, 112), (160, 160, 160), 2, cv2.LINE_AA)  # about 20 mm at 3 px/mm
    cv2.imwrite(str(tmp_path / "close.png"), close)
    code, reports = run_inspect(capsys, str(tmp_path / "close.png"), "--json", "--px-per-mm", "3")
    assert code == 3 and reports[0]["grade"] is None  # never graded as if the picture were a pristine unit
    code, reports = run_inspect(capsys, str(tmp_path / "close.png"), "--json", "--px-per-mm", "3", "--whole-image")
    assert code == 0 and reports[0]["mode"] == "whole image" and reports[0]["vision"]["scratch_count"] == 1


# --- calibration -----------------------------------------------------------------------------------


def test_inspect_takes_a_calibration_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A camera frame with a tilted view: the calibration file's homography (belt plane -> frame)
    makes the measured size true, as in the station's vision section."""
    from simulator.render import Appearance, Imaging, render_scene

    appearance = Appearance("phone", *IPHONE_MM, (130, 130, 135), False, corner_radius_mm=8.0,  # type: ignore[arg-type]
                            imaging=Imaging(angle_deg=25.0, perspective_x=1.2e-4))
    frame, scene = render_scene(appearance, np.random.default_rng(3))
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    calibration = tmp_path / "calibration.yaml"
    calibration.write_text(json.dumps({"px_per_mm": 3.0, "camera_homography": scene.camera.tolist()}))
    code, reports = run_inspect(capsys, str(tmp_path / "frame.png"), "--json", "--calibration", str(calibration))
    assert code == 0, reports
    report = reports[0]
    assert report["scale_source"] == "given" and report["mode"] == "uniform background"
    size = sorted((report["vision"]["device_width_mm"], report["vision"]["device_height_mm"]))
    assert size == [pytest.approx(IPHONE_MM[1], abs=0.8), pytest.approx(IPHONE_MM[0], abs=0.8)]

    code, reports = run_inspect(capsys, str(tmp_path / "frame.png"), "--json", "--px-per-mm", "3")
    assert code == 0 and reports[0]["px_per_mm"] == 3.0 and reports[0]["scale_source"] == "given"


@pytest.mark.parametrize(("content", "problem"), [
    ("px_per_mm: -1\n", "px_per_mm"),
    ("px_per_mm: 3\ncamera_homography: [[1, 0, 0], [0, 1, 0]]\n", "camera_homography"),
    ("px_per_mm: 3\ncamera_homography: [[1, 2, 3], [2, 4, 6], [0, 0, 1]]\n", "not invertible"),
    ("px_per_mm: 3\nlens: wide\n", "lens"),
    ("px_per_mm: [3\n", "not valid YAML"),
])
def test_bad_calibration_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, problem: str
) -> None:
    calibration = tmp_path / "calibration.yaml"
    calibration.write_text(content)
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((100, 100, 3), np.uint8))
    assert edge_main(["inspect", str(tmp_path / "x.png"), "--calibration", str(calibration)]) == 2
    assert problem in capsys.readouterr().err


def test_px_per_mm_and_calibration_file_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        edge_main(["inspect", "x.png", "--px-per-mm", "3", "--calibration", "c.yaml"])
    assert stopped.value.code == 2


def test_calibration_model_rejects_hostile_matrices() -> None:
    identity = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert CameraCalibration(px_per_mm=3, camera_homography=identity).camera_homography is not None
    # A real calibration: belt origin 2000 px into a 12 MP frame, slight tilt. Its determinant
    # is tiny at unit scale; it is still perfectly invertible.
    shifted = [[1.1, 0.02, 2000.0], [-0.01, 1.1, 1500.0], [1e-5, 2e-5, 1.0]]
    accepted = CameraCalibration(px_per_mm=3, camera_homography=shifted).camera_homography
    checker = DamageChecker(px_per_mm=3.0, camera_homography=accepted)
    assert np.allclose(checker.camera_homography / checker.camera_homography[2, 2], shifted)  # type: ignore[index]
    for bad in ([[float("nan"), 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 0]] * 3, [[1, 0], [0, 1]], "eye"):
        with pytest.raises(ValueError):
            CameraCalibration(px_per_mm=3, camera_homography=bad)  # type: ignore[arg-type]


def test_station_file_carries_the_camera_calibration_to_the_checker(tmp_path: Path) -> None:
    """The daemon builds its checker from `vision.px_per_mm` and `vision.camera_homography`."""
    from edge.config import load_station
    from edge.yamlconf import ConfigError

    root = Path(__file__).resolve().parents[1]
    text = (root / "config" / "station.sim.yaml").read_text()
    tilt = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.2e-4, 0.0, 1.0]]
    station = tmp_path / "station.yaml"
    station.write_text(text.replace("vision:\n", f"vision:\n  camera_homography: {json.dumps(tilt)}\n", 1))
    for name in ("catalog.csv", "grading.yaml"):
        (tmp_path / name).write_bytes((root / "config" / name).read_bytes())
    config = load_station(station)
    assert config.vision.camera_homography == tuple(tuple(row) for row in tilt)
    checker = DamageChecker(px_per_mm=config.vision.px_per_mm, camera_homography=config.vision.camera_homography)
    assert checker.camera_homography is not None and np.allclose(checker.camera_homography, tilt)
    station.write_text(text.replace("vision:\n", "vision:\n  camera_homography: [[1, 0, 0], [0, 1, 0]]\n", 1))
    with pytest.raises(ConfigError, match="camera_homography"):
        load_station(station)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=3, max_size=3),
                min_size=3, max_size=3))
def test_any_calibration_matrix_is_accepted_whole_or_refused(matrix: list[list[float]]) -> None:
    try:
        calibration = CameraCalibration(px_per_mm=3.0, camera_homography=matrix)  # type: ignore[arg-type]
    except ValueError:
        return
    # Whatever the model accepts, the checker takes too (same finiteness and invertibility rules).
    DamageChecker(px_per_mm=3.0, camera_homography=calibration.camera_homography)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-200, 600), st.floats(-200, 400)), min_size=4, max_size=4))
def test_check_with_any_outline_never_raises(corners: list[tuple[float, float]]) -> None:
    frame = np.full((240, 320, 3), 90, np.uint8)
    try:
        pose = pose_from_quad(np.array(corners), frame.shape)
    except ValueError:
        return
    report = DamageChecker(px_per_mm=2.0).check(frame, pose=pose)
    assert report.device_found or report.error


def test_station_file_gives_inspect_its_vision_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--config`: the station's vision: section sets the rules (and, where it sets px_per_mm, the
    calibration) as the daemon would: a glare band a width rule of 12 px lets through is a finding."""
    from simulator.render import Appearance, BlemishSpec, Imaging, render_scene

    appearance = Appearance("phone", *IPHONE_MM, (24, 24, 27), False, [],  # type: ignore[arg-type]
                            [BlemishSpec("glare", 70, 35, 3.0, 30.0, 50.0)], corner_radius_mm=8.0,
                            imaging=Imaging(angle_deg=0.0))
    frame, _ = render_scene(appearance, np.random.default_rng(0))
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    station = tmp_path / "station.yaml"
    wide = "  ridge_max_width_px: 12.0\n  crack_max_width_px: 12.0\n  bent_scratch_max_width_px: 12.0\n"
    station.write_text("controller_id: c1\nvision:\n  px_per_mm: 3.0\n" + wide)
    code, reports = run_inspect(capsys, str(tmp_path / "frame.png"), "--json", "--config", str(station))
    assert code == 0, reports
    assert reports[0]["scale_source"] == "given" and "vision: section" in reports[0]["calibration"]
    assert reports[0]["vision"]["defects"]  # the glare band, let through by the loosened rule
    code, reports = run_inspect(capsys, str(tmp_path / "frame.png"), "--json", "--px-per-mm", "3")
    assert code == 0 and reports[0]["vision"]["defects"] == []  # the default rules: no finding
    # Without px_per_mm in the section the rules apply, the scale is estimated as without a file.
    station.write_text("vision:\n" + wide)
    code, reports = run_inspect(capsys, str(tmp_path / "frame.png"), "--json", "--config", str(station))
    assert code == 0 and reports[0]["scale_source"] == "catalog" and reports[0]["vision"]["defects"]


def test_bad_vision_section_is_a_usage_error_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    station = tmp_path / "station.yaml"
    station.write_text("site: s1\nvision:\n  workers: 1\n  crack_max_width_px: 99\n")
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((100, 100, 3), np.uint8))
    assert edge_main(["inspect", str(tmp_path / "x.png"), "--config", str(station)]) == 2
    assert f"{station}:4: vision.crack_max_width_px:" in capsys.readouterr().err
