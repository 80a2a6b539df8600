"""`edge inspect` on photographs of barcodes: a barcode is not a unit.

Real camera pictures of labels, with no phone, tablet or laptop in them, were reported as units: a
block of a symbol's bars between two thick ones passed for a phone (grade A), the bars of a UPC-A
on a white label for a tablet on a uniform background (grade D, the ragged ends of the bars taken
for dents and missing parts), a tilted Code 128 for a "moto g54". These scenes are rebuilt here
from symbols drawn with zxing-cpp's writer, printed on a label or a sheet (OpenCV), photographed
(perspective, blur, noise, JPEG) on a uniform desk and on busy backgrounds, and the same for 2-D
codes. The other side of the rule: a unit with a barcode label on its back, or a screen showing a
barcode on part of it, is still the unit (before, the label or the barcode was taken for it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zxingcpp

from tests.test_inspect_photos import IPHONE_MM, background, corner_error, draw_unit, jpeg, run_inspect
from vision.damage import warm_up
from vision.photo import find_outline

RMA = "RMA-0012345678"
DESK = (92, 97, 101)  # a grey desk or belt: the uniform background the colour-difference locator uses
INK = (28, 28, 32)
PAPER = (236, 238, 240)


@pytest.fixture(scope="module", autouse=True)
def _kernels() -> None:
    warm_up()


# --- drawing printed codes and photographing them ---------------------------------------------------


def modules(text: str, fmt: zxingcpp.BarcodeFormat) -> np.ndarray:
    """The symbol's dark modules (True), one pixel a module, without quiet zones."""
    bitmap = zxingcpp.write_barcode_to_image(zxingcpp.create_barcode(text, fmt), scale=1, add_quiet_zones=False)
    return np.asarray(bitmap, np.uint8) < 128


def bars(text: str, fmt: zxingcpp.BarcodeFormat, module: int, height: int) -> np.ndarray:
    """A 1-D symbol's bars, `module` px a module, `height` px tall."""
    row = modules(text, fmt)[0]
    return np.repeat(np.repeat(row[None, :], height, axis=0), module, axis=1)


def grid(text: str, fmt: zxingcpp.BarcodeFormat, module: int) -> np.ndarray:
    return np.kron(modules(text, fmt), np.ones((module, module), bool))


def label(ink: np.ndarray, quiet: int, caption: str | None = None) -> np.ndarray:
    """A printed label: the symbol on paper with `quiet` px round it, its text under it."""
    height, width = ink.shape
    below = round(0.3 * height) if caption else quiet
    page = np.full((height + quiet + below, width + 2 * quiet, 3), PAPER, np.uint8)
    page[quiet : quiet + height, quiet : quiet + width][ink] = INK
    if caption:
        scale = height / 180
        thickness = max(1, round(2 * scale))
        (text_width, text_height), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        origin = ((page.shape[1] - text_width) // 2, quiet + height + text_height + round(0.05 * height))
        cv2.putText(page, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, INK, thickness, cv2.LINE_AA)
    return page


def lay(scene: np.ndarray, page: np.ndarray, quad: np.ndarray) -> None:
    """Paste `page` into `scene` with its corners at `quad` (a perspective view of it)."""
    height, width = page.shape[:2]
    matrix = cv2.getPerspectiveTransform(np.float32([[0, 0], [width, 0], [width, height], [0, height]]),
                                         np.float32(quad))
    size = (scene.shape[1], scene.shape[0])
    warped = cv2.warpPerspective(page, matrix, size, flags=cv2.INTER_AREA)
    alpha = cv2.warpPerspective(np.ones((height, width), np.float32), matrix, size, flags=cv2.INTER_AREA)[..., None]
    scene[:] = (scene * (1 - alpha) + warped * alpha).astype(np.uint8)


def placed(centre: tuple[float, float], size: tuple[float, float], angle_deg: float, keystone: float) -> np.ndarray:
    """Corners of a `size` rectangle turned by `angle_deg` about `centre`, its top edge shortened by
    `keystone` (the camera looks at it at a slant)."""
    width, height = size
    half = np.array([[-width, -height], [width, -height], [width, height], [-width, height]], np.float64) / 2
    half[:2, 0] *= 1 - keystone
    turn = math.radians(angle_deg)
    return half @ np.array([[math.cos(turn), math.sin(turn)], [-math.sin(turn), math.cos(turn)]]) + np.asarray(centre)


def camera(scene: np.ndarray, rng: np.random.Generator, blur: float = 1.2, noise: float = 4.0) -> np.ndarray:
    picture = cv2.GaussianBlur(scene, (0, 0), blur).astype(np.float32) + rng.normal(0, noise, scene.shape)
    return jpeg(np.clip(picture, 0, 255).astype(np.uint8), 82)


def surface(kind: str, rng: np.random.Generator, height: int = 900, width: int = 1200) -> np.ndarray:
    return np.full((height, width, 3), DESK, np.uint8) if kind == "desk" else background(height, width, kind, rng)


def photographed_label(kind: str, seed: int) -> np.ndarray:
    """A Code 128 label with its text, turned and at a slant, on `kind` (desk, wood, fabric)."""
    rng = np.random.default_rng(seed)
    scene = surface(kind, rng)
    page = label(bars(RMA, zxingcpp.BarcodeFormat.Code128, 4, 220), 36, caption=RMA)
    lay(scene, page, placed((610, 440), (page.shape[1], page.shape[0]), 14, 0.08))
    return camera(scene, rng)


def photographed_sheet(seed: int) -> np.ndarray:
    """A close-up of an EAN-13 printed on a sheet that fills the picture: the paper is the uniform
    background, the bars (2 px a module) blur into one block on it."""
    rng = np.random.default_rng(seed)
    scene = np.full((480, 640, 3), (226, 229, 232), np.uint8)
    ink = bars("036000291452", zxingcpp.BarcodeFormat.EAN13, 2, 150)
    scene[150 : 150 + ink.shape[0], 200 : 200 + ink.shape[1]][ink] = (30, 30, 34)
    return camera(scene, rng, blur=1.0)


def photographed_2d(fmt: zxingcpp.BarcodeFormat, text: str, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scene = surface(kind, rng)
    page = label(grid(text, fmt, 12), 24)
    scale = min(640 / page.shape[1], 420 / page.shape[0])
    lay(scene, page, placed((600, 450), (page.shape[1] * scale, page.shape[0] * scale), -18, 0.06))
    return camera(scene, rng)


def inspect_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, picture: np.ndarray, *options: str
) -> tuple[int, Any]:
    path = tmp_path / "picture.png"
    cv2.imwrite(str(path), picture)
    code, reports = run_inspect(capsys, str(path), "--json", *options)
    return code, reports[0]


def assert_no_device(code: int, report: dict[str, Any]) -> None:
    assert code == 3, report
    assert report["device_found"] is False and report["grade"] is None, report
    assert report["mode"] == "no device found" and report["vision"]["defects"] == []


# --- a barcode is not a unit ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["zxing", "off"])
@pytest.mark.parametrize("kind", ["desk", "wood", "fabric"])
def test_photographed_barcode_label_is_no_device(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str, backend: str
) -> None:
    """On the desk the label differs from it as a unit does (it was located as one); on wood and
    fabric its outline, or a block of its bars, has a phone's or a tablet's aspect. With barcodes
    off the texture of the outline's inside alone says it is a code."""
    code, report = inspect_one(capsys, tmp_path, photographed_label(kind, seed=1), "--barcode-backend", backend)
    assert_no_device(code, report)
    assert [b["text"] for b in report["barcodes"]] == ([RMA] if backend == "zxing" else [])


@pytest.mark.parametrize("backend", ["zxing", "off"])
def test_close_up_of_a_printed_barcode_is_no_device(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, backend: str
) -> None:
    """As on the real UPC-A label: bars blurred into one block on white paper were located as a
    unit on a uniform background, and their ragged ends graded as outline damage."""
    code, report = inspect_one(capsys, tmp_path, photographed_sheet(seed=2), "--barcode-backend", backend)
    assert_no_device(code, report)


@pytest.mark.parametrize("kind", ["desk", "wood"])
@pytest.mark.parametrize(("fmt", "text"), [
    (zxingcpp.BarcodeFormat.DataMatrix, "RMA-0012345678-SN88"),  # a 12 x 26 rectangle
    (zxingcpp.BarcodeFormat.RMQRCode, RMA),  # a 13 x 27 rectangular micro QR
])
def test_photographed_2d_code_is_no_device(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: zxingcpp.BarcodeFormat, text: str, kind: str
) -> None:
    code, report = inspect_one(capsys, tmp_path, photographed_2d(fmt, text, kind, seed=3), "--barcode-backend", "off")
    assert_no_device(code, report)


def test_quiet_zone_inside_bearer_bars_is_part_of_the_read_symbol(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An ITF-14 in its bearer bars, as on the real picture: the blank quiet zone framed by them is a
    plausible outline with no code texture in it, but it lies within the symbol the read found."""
    row = modules("00012345678905", zxingcpp.BarcodeFormat.ITF)[0]
    module, quiet, bearer = 3, 30, 12
    symbol = np.repeat(np.repeat(row[None, :], 120, axis=0), module, axis=1)
    ink = np.ones((symbol.shape[0] + 2 * bearer, symbol.shape[1] + 2 * (quiet + bearer)), bool)
    ink[bearer:-bearer, bearer:-bearer] = False
    ink[bearer:-bearer, bearer + quiet : bearer + quiet + symbol.shape[1]] = symbol
    page = np.full((320, 640, 3), (232, 234, 236), np.uint8)
    top, left = (320 - ink.shape[0]) // 3, (640 - ink.shape[1]) // 2
    page[top : top + ink.shape[0], left : left + ink.shape[1]][ink] = INK
    picture = camera(page, np.random.default_rng(4), blur=1.0)
    code, report = inspect_one(capsys, tmp_path, picture)
    assert_no_device(code, report)
    assert [b["text"] for b in report["barcodes"]] == ["00012345678905"]


# --- a unit with a code on it is still the unit ----------------------------------------------------------


def unit_scene(kind: str, body: tuple[int, int, int], screen: tuple[int, int, int], angle: float,
               seed: int) -> tuple[np.ndarray, np.ndarray, Any, tuple[float, float], np.random.Generator]:
    rng = np.random.default_rng(seed)
    scene = background(900, 1200, kind, rng)
    size = (620.0, 620.0 * IPHONE_MM[1] / IPHONE_MM[0])
    truth, to_frame = draw_unit(scene, (600, 450), size, angle, body=body, screen=screen)
    return scene, truth, to_frame, size, rng


def on_unit(to_frame: Any, centre: tuple[float, float], size: tuple[float, float]) -> np.ndarray:
    """Frame corners of a rectangle given in unit coordinates (px from its centre, long side along x)."""
    (x, y), (width, height) = centre, size
    return to_frame(np.array([[x - width / 2, y - height / 2], [x + width / 2, y - height / 2],
                              [x + width / 2, y + height / 2], [x - width / 2, y + height / 2]]))


@pytest.mark.parametrize(("kind", "body", "share", "angle"), [
    ("wood", (25, 25, 28), (0.55, 0.5), 12.0),
    ("fabric", (30, 30, 34), (0.5, 0.45), -30.0),
    ("wood", (150, 80, 30), (0.6, 0.55), -5.0),
    ("gradient", (25, 25, 28), (0.4, 0.4), 0.0),
])
def test_unit_with_a_barcode_label_on_its_back_is_the_unit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str, body: tuple[int, int, int],
    share: tuple[float, float], angle: float,
) -> None:
    """A returns label on the back of a phone is a plausible outline inside a plausible outline:
    it was taken for the unit on a mat. It is a code, so the phone around it is the unit."""
    scene, truth, to_frame, (length, width), rng = unit_scene(kind, body, body, angle, seed=5)
    page = label(bars(RMA, zxingcpp.BarcodeFormat.Code128, 3, 110), 20, caption=RMA)
    lay(scene, page, on_unit(to_frame, (0.05 * length, 0.0), (share[0] * length, share[1] * width)))
    picture = camera(scene, rng)
    outline = find_outline(picture)
    assert outline is not None and corner_error(outline.corners, truth) < 0.015 * length + 2, outline
    code, report = inspect_one(capsys, tmp_path, picture)
    assert code == 0 and report["device_found"] and report["grade"] == "A", report
    assert report["scale_source"] == "catalog"
    assert max(report["vision"]["device_width_mm"], report["vision"]["device_height_mm"]) == pytest.approx(
        IPHONE_MM[0], rel=0.04)


@pytest.mark.parametrize(("kind", "angle"), [("wood", -70.0), ("fabric", 25.0), ("gradient", 100.0)])
def test_screen_showing_a_barcode_is_the_unit(kind: str, angle: float) -> None:
    """A boarding pass on a phone's screen: lines of text and a barcode across part of it. The
    barcode (or a block of its bars) was taken for the unit; the phone is."""
    scene, truth, to_frame, (length, width), rng = unit_scene(kind, (25, 25, 28), (250, 250, 250), angle, seed=6)
    page = np.full((300, 600, 3), (250, 250, 250), np.uint8)
    for row in range(5):
        cv2.putText(page, f"GATE B{row + 12}  SEAT {row + 3}A  ZONE {row + 1}", (20, 40 + 50 * row),
                    cv2.FONT_HERSHEY_SIMPLEX, 1.0, (30, 30, 30), 2, cv2.LINE_AA)
    lay(scene, page, on_unit(to_frame, (-0.25 * length, 0.0), (0.35 * length, 0.8 * width)))
    pass_code = label(bars(RMA, zxingcpp.BarcodeFormat.Code128, 3, 120), 12, caption=RMA)
    lay(scene, np.rot90(pass_code).copy(), on_unit(to_frame, (0.2 * length, 0.0), (0.3 * length, 0.8 * width)))
    outline = find_outline(camera(scene, rng))
    assert outline is not None and corner_error(outline.corners, truth) < 0.015 * length + 2, outline
