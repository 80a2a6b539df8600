"""Barcodes in photographs of labels: what real camera pictures showed, rebuilt from generated images.

Real photographs of product labels turned up four problems in the barcode read of `edge inspect`,
each rebuilt here from a picture drawn with zxing-cpp's writer, OpenCV and NumPy:

- with the pyzbar backend, a symbol that zbar reports without an orientation (an SQ code; a QR
  structured-append sequence) made pyzbar 0.1.9 raise, and the whole image report was lost;
- line breaks inside a symbol's text were deleted, running its lines together;
- a picture under 64 px on a side (a tight crop of a label strip) was refused before its barcode
  was read;
- small, low-resolution pictures that zxing-cpp reads only when scaled 2x.

The SQ code and the structured-append QR codes are drawn module by module from their
specifications (zbar's SQ code reader, ISO/IEC 18004), since no writer the project has makes them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import reduce
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.cli import main as edge_main
from edge.identity import parse_identity
from vision.barcode import MAX_TEXT, MAX_UPSCALED_PIXELS, BarcodeReader, _clean, available_backends
from vision.photo import MIN_SIDE_PX, PhotoError, PhotoTooSmall, decode_photo, load_photo

RMA = "RMA-0012345678"


# --- drawing symbols --------------------------------------------------------------------------------


def symbol(text: str, fmt: zxingcpp.BarcodeFormat, scale: int) -> np.ndarray:
    """A symbol from zxing-cpp's writer, black on white with its quiet zone, `scale` px a module."""
    bitmap = zxingcpp.write_barcode_to_image(zxingcpp.create_barcode(text, fmt), scale=scale, add_quiet_zones=True)
    return np.asarray(bitmap, np.uint8)


def paste(page: np.ndarray, image: np.ndarray, y: int, x: int) -> None:
    page[y : y + image.shape[0], x : x + image.shape[1]] = image


def sq_code(payload: bytes, module: int = 6, quiet: int = 4) -> np.ndarray:
    """An SQ code as zbar 0.23 reads it (zbar/sqcode.c): an n x n grid of modules whose top and left
    rows of dots (every other module from the top-left) and right and bottom rows (every other
    module from the bottom-right) frame the data, with a 2x2 checker at the top-right and the
    bottom-left corners; inside a 3-module border, (n - 6)**2 data bits, row by row, most
    significant bit first. zbar returns the payload in base64."""
    side = round((8 * len(payload)) ** 0.5)
    assert side * side == 8 * len(payload) and side % 4 == 0 and side >= 8, "payload: 8, 18, 32, ... bytes"
    n = side + 6
    grid = np.zeros((n, n), bool)
    grid[0, 0 : n - 3 : 2] = True
    grid[0 : n - 3 : 2, 0] = True
    grid[3:n:2, n - 1] = True
    grid[n - 1, 3:n:2] = True
    for row, col in ((0, n - 2), (n - 2, 0)):
        grid[row, col] = grid[row + 1, col + 1] = True
    grid[3 : n - 3, 3 : n - 3] = np.unpackbits(np.frombuffer(payload, np.uint8)).astype(bool).reshape(side, side)
    image = np.where(np.kron(grid, np.ones((module, module), bool)), 0, 255).astype(np.uint8)
    return np.pad(image, quiet * module, constant_values=255)


def _gf_mul(x: int, y: int) -> int:
    z = 0
    for i in reversed(range(8)):
        z = (z << 1) ^ ((z >> 7) * 0x11D)
        z ^= ((y >> i) & 1) * x
    return z


def _reed_solomon(data: list[int], degree: int) -> list[int]:
    divisor = [0] * (degree - 1) + [1]
    root = 1
    for _ in range(degree):
        for j in range(degree):
            divisor[j] = _gf_mul(divisor[j], root)
            if j + 1 < degree:
                divisor[j] ^= divisor[j + 1]
        root = _gf_mul(root, 2)
    remainder = [0] * degree
    for byte in data:
        factor = byte ^ remainder.pop(0)
        remainder.append(0)
        for i, coefficient in enumerate(divisor):
            remainder[i] ^= _gf_mul(coefficient, factor)
    return remainder


def qr_part(chunk: bytes, index: int, total: int, parity: int) -> np.ndarray:
    """One symbol of a QR structured-append sequence (ISO/IEC 18004 7.4.2.1): version 1, error
    correction L, mask 0; the structured-append header (position, count, parity of the whole
    message), then `chunk` in byte mode. Dark modules are True."""
    bits = f"0011{index:04b}{total - 1:04b}{parity:08b}0100{len(chunk):08b}" + "".join(f"{b:08b}" for b in chunk)
    assert len(bits) <= 152, "at most 15 bytes a symbol"
    bits += "0" * min(4, 152 - len(bits))
    bits += "0" * (-len(bits) % 8)
    data = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    data += [(0xEC, 0x11)[i % 2] for i in range(19 - len(data))]
    stream = [(byte >> (7 - k)) & 1 for byte in data + _reed_solomon(data, 7) for k in range(8)]
    size = 21
    dark = np.zeros((size, size), bool)
    reserved = np.zeros((size, size), bool)

    def put(x: int, y: int, value: bool) -> None:
        dark[y, x], reserved[y, x] = value, True

    for i in range(size):
        put(6, i, i % 2 == 0)
        put(i, 6, i % 2 == 0)
    for cx, cy in ((3, 3), (size - 4, 3), (3, size - 4)):  # finder patterns with their separators
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                if 0 <= cx + dx < size and 0 <= cy + dy < size:
                    put(cx + dx, cy + dy, max(abs(dx), abs(dy)) not in (2, 4))
    level_and_mask = 0b01 << 3  # L, mask 0
    remainder = level_and_mask
    for _ in range(10):
        remainder = (remainder << 1) ^ ((remainder >> 9) * 0x537)
    form = ((level_and_mask << 10) | remainder) ^ 0x5412
    bit = [(form >> i) & 1 == 1 for i in range(15)]
    for i in range(6):
        put(8, i, bit[i])
    put(8, 7, bit[6])
    put(8, 8, bit[7])
    put(7, 8, bit[8])
    for i in range(9, 15):
        put(14 - i, 8, bit[i])
    for i in range(8):
        put(size - 1 - i, 8, bit[i])
    for i in range(8, 15):
        put(8, size - 15 + i, bit[i])
    put(8, size - 8, True)
    placed = 0
    for right in (20, 18, 16, 14, 12, 10, 8, 5, 3, 1):  # column pairs right to left, skipping the timing column
        upward = ((right + 1) & 2) == 0
        for step in range(size):
            y = size - 1 - step if upward else step
            for x in (right, right - 1):
                if not reserved[y, x] and placed < len(stream):
                    dark[y, x] = stream[placed] == 1
                    placed += 1
    assert placed == len(stream)
    mask = (np.add.outer(np.arange(size), np.arange(size)) % 2 == 0) & ~reserved
    return dark ^ mask


def qr_structured_append(message: bytes, parts: int, module: int = 6) -> np.ndarray:
    """`message` split over `parts` QR symbols of one structured-append sequence, side by side."""
    parity = reduce(lambda a, b: a ^ b, message, 0)
    step = -(-len(message) // parts)
    tiles = [np.pad(np.where(qr_part(message[i * step : (i + 1) * step], i, parts, parity), 0, 255).astype(np.uint8),
                    4, constant_values=255) for i in range(parts)]
    return np.kron(np.hstack(tiles), np.ones((module, module), np.uint8))


def low_resolution(text: str, module_px: float, blur_sigma: float, canvas: tuple[int, int]) -> np.ndarray:
    """A Code 128 symbol at `module_px` px a module (resampled from a sharp one), in the middle of a
    white picture of `canvas` (height, width), blurred: a small, soft picture of a label."""
    sharp = symbol(text, zxingcpp.BarcodeFormat.Code128, scale=8)
    small = cv2.resize(sharp, None, fx=module_px / 8, fy=module_px / 8, interpolation=cv2.INTER_AREA)
    page = np.full(canvas, 255, np.uint8)
    paste(page, small, (canvas[0] - small.shape[0]) // 2, (canvas[1] - small.shape[1]) // 2)
    return cv2.GaussianBlur(page, (0, 0), blur_sigma)


def zxing_texts(gray: np.ndarray) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(gray, text_mode=zxingcpp.TextMode.HRI) if r.valid]


def run_inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = edge_main(["inspect", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module", autouse=True)
def _pyzbar() -> None:
    """pyzbar is tested for real (scripts/ensure-zbar.sh installs the system libzbar for `make test`)."""
    assert available_backends()["pyzbar"] is None, available_backends()["pyzbar"]


# --- pyzbar: a symbol without orientation costs no report ----------------------------------------


def test_drawn_symbols_are_what_the_decoders_say() -> None:
    """The drawings above are read as what they claim to be, independently of the reader under test."""
    from pyzbar import pyzbar

    message = b"RMA-0012345678 returned by courier"
    parts = zxingcpp.read_barcodes(qr_structured_append(message, 3))
    assert all(p.valid and p.format == zxingcpp.BarcodeFormat.QRCode for p in parts)
    assert "".join(p.text for p in sorted(parts, key=lambda p: p.position.top_left.x)) == message.decode()
    single = np.kron(np.pad(np.where(qr_part(b"RMA-42", 0, 1, 0), 0, 255).astype(np.uint8), 4, constant_values=255),
                     np.ones((6, 6), np.uint8))
    assert [d.data for d in pyzbar.decode(single)] == [b"RMA-42"]


def test_sq_code_beside_a_label_costs_the_pyzbar_read_nothing(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    """zbar reads an SQ code with no orientation and no position, and pyzbar 0.1.9 raises ValueError
    converting it: before, `BarcodeReader.read` raised and `edge inspect --barcode-backend pyzbar`
    lost the picture's whole report. Only the symbologies the project maps are enabled now."""
    from pyzbar import pyzbar
    from pyzbar.pyzbar import ZBarSymbol

    page = np.full((400, 300), 255, np.uint8)
    paste(page, sq_code(b"RMA-0042"), 0, 0)  # topmost: zbar's SQ reader starts at the first dark pixel
    paste(page, symbol(RMA, zxingcpp.BarcodeFormat.QRCode, scale=5), 190, 60)
    with pytest.raises(ValueError, match="ZBarOrientation"):
        pyzbar.decode(page)  # zbar's defaults, every symbology: the picture still triggers the failure
    with pytest.raises(ValueError, match="ZBarOrientation"):
        pyzbar.decode(page, symbols=[ZBarSymbol.SQCODE])  # and it is the SQ code that does

    reader = BarcodeReader("pyzbar")
    codes = reader.read(cv2.cvtColor(page, cv2.COLOR_GRAY2BGR))
    assert [(c.text, c.aim, c.backend) for c in codes] == [(RMA, "]Q1", "pyzbar")]
    assert reader.last_error is None and not reader.errors

    cv2.imwrite(str(tmp_path / "sq.png"), page)
    code, (report,) = run_inspect(capsys, str(tmp_path / "sq.png"), "--json", "--barcode-backend", "pyzbar")
    assert "error" not in report, report
    assert code == 3 and report["device_found"] is False
    assert [b["text"] for b in report["barcodes"]] == [RMA]


def test_pyzbar_failure_is_counted_not_raised() -> None:
    """A real input that still makes pyzbar raise with only QR codes enabled: a QR structured-append
    sequence, which zbar joins into one symbol that has no orientation. The read gives no symbols
    from pyzbar for that picture (pyzbar converts all of them before returning any), says why in
    `last_error` and counts it; nothing is raised."""
    from pyzbar import pyzbar
    from pyzbar.pyzbar import ZBarSymbol

    image = qr_structured_append(b"RMA-0012345678 returned by courier", 3)
    with pytest.raises(ValueError, match="ZBarOrientation"):
        pyzbar.decode(image, symbols=[ZBarSymbol.QRCODE])

    reader = BarcodeReader("pyzbar")
    assert reader.read(image) == []
    assert reader.last_error is not None and "pyzbar" in reader.last_error and "ValueError" in reader.last_error
    assert reader.errors == {"pyzbar:ValueError": 1}
    height, width = image.shape
    assert reader.read(image, [(0, 0, width, height)]) == []  # the region, then the whole frame
    assert reader.errors == {"pyzbar:ValueError": 3}
    assert reader.read(image, upscale_retry=True) == []  # no 2x retry after a failed read
    assert reader.errors == {"pyzbar:ValueError": 4}

    label = np.pad(symbol(RMA, zxingcpp.BarcodeFormat.QRCode, scale=5), 20, constant_values=255)
    assert [c.text for c in reader.read(label)] == [RMA]
    assert reader.last_error is None and reader.errors == {"pyzbar:ValueError": 4}
    assert len(BarcodeReader("zxing").read(image)) == 3  # zxing-cpp reads the three symbols one by one


@pytest.mark.parametrize(("fmt", "content", "text"), [
    (zxingcpp.BarcodeFormat.UPCA, "03600029145", "0036000291452"),
    (zxingcpp.BarcodeFormat.UPCE, "0123456", "0012345000065"),
    (zxingcpp.BarcodeFormat.EAN8, "9638507", "96385074"),
])
def test_upc_reads_the_same_on_both_backends(fmt: zxingcpp.BarcodeFormat, content: str, text: str) -> None:
    """Enabling symbologies by name must not change what zbar reports: UPC-A and UPC-E named
    would come back in their short forms ("036000291452", "01234565") instead of as EAN-13."""
    image = np.pad(symbol(content, fmt, scale=3), 30, constant_values=255)
    for backend in ("zxing", "pyzbar"):
        codes = BarcodeReader(backend).read(image)  # type: ignore[arg-type]
        assert [(c.text, c.aim) for c in codes] == [(text, "]E4" if len(text) == 8 else "]E0")], backend
    assert parse_identity(text, "EAN-13").gtin == text.rjust(14, "0")


# --- text: line breaks keep lines apart -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["zxing", "pyzbar"])
def test_line_breaks_in_a_symbol_become_spaces(backend: str) -> None:
    content = "UI office hours signup\r\nhttp://example.com/office_hours/\r\n"
    image = np.pad(symbol(content, zxingcpp.BarcodeFormat.QRCode, scale=5), 20, constant_values=255)
    codes = BarcodeReader(backend).read(image)  # type: ignore[arg-type]
    assert [c.text for c in codes] == ["UI office hours signup http://example.com/office_hours/"]


def test_cleaning_examples() -> None:
    assert _clean("signup\r\nhttp://x") == "signup http://x"
    assert _clean("one\n\n\ttwo\rthree") == "one two three"
    assert _clean("a\x00\r\x07\nb") == "a b"  # the control characters go first, the break stays one space
    assert _clean("NEL\x85line") == "NEL line"
    assert _clean("x\x00y\x1bz\x7f\x9b") == "xyz"  # other control characters are removed, C1 included
    assert _clean("(01)00614141001002(21)SN1\x1d(10)LOT") == "(01)00614141001002(21)SN1\x1d(10)LOT"  # GS1 separator
    assert _clean("\r\n0614141001002\r\n") == "0614141001002"  # a trailing CR/LF is no part of the text
    assert _clean("ends with a space ") == "ends with a space "
    assert len(_clean("\r\n" * MAX_TEXT + "x")) == 0  # capped before cleaning, as before
    # What identity parsing gets is unchanged for a symbol ending in a line break.
    assert parse_identity(_clean("0614141001002\r\n"), "EAN-13").gtin == "00614141001002"
    assert parse_identity(_clean("IMEI\t356938035643809"), "Code 128").imei == "356938035643809"


_WORD = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=12)
_BREAK = st.text(st.sampled_from("\r\n\t\x85"), min_size=1, max_size=4)
_ANY_BREAK = st.one_of(st.just(""), _BREAK)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2 * MAX_TEXT))
def test_cleaned_text_has_no_control_characters(text: str) -> None:
    cleaned = _clean(text)
    assert all(unicodedata.category(c) != "Cc" or c == "\x1d" for c in cleaned), repr(cleaned)
    assert len(cleaned) <= MAX_TEXT


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_WORD, _BREAK), min_size=1, max_size=30), _ANY_BREAK, _ANY_BREAK)
def test_line_breaks_keep_word_boundaries(words: list[tuple[str, str]], lead: str, tail: str) -> None:
    text = lead + "".join(word + brk for word, brk in words[:-1]) + words[-1][0] + tail
    assert _clean(text) == " ".join(word for word, _ in words)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_cleaning_keeps_every_word(text: str) -> None:
    """Whatever the text, its words (between spaces and line breaks, less their control
    characters) are the cleaned text's words, in order."""
    control = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1c\x1e\x1f\x7f-\x84\x86-\x9f]")
    words = [w for w in (control.sub("", w) for w in re.split(r"[ \t\n\r\x85]+", text)) if w]
    assert [w for w in _clean(text).split(" ") if w] == words


# --- too small to grade, not to read --------------------------------------------------------------


def test_picture_too_small_to_grade_is_still_there_to_read(tmp_path: Path) -> None:
    """A tight crop of a label strip, 50 px tall: `load_photo` refuses it for the damage check
    (PhotoTooSmall, a PhotoError) but hands over the decoded picture, and its barcode reads."""
    strip = np.full((50, 480), 255, np.uint8)
    bars = symbol(RMA, zxingcpp.BarcodeFormat.Code128, scale=2)
    paste(strip, cv2.resize(bars, (bars.shape[1], 40), interpolation=cv2.INTER_NEAREST), 5, 40)
    cv2.imwrite(str(tmp_path / "strip.png"), cv2.cvtColor(strip, cv2.COLOR_GRAY2BGR))
    with pytest.raises(PhotoTooSmall, match=f"too small .*at least {MIN_SIDE_PX} px") as caught:
        load_photo(tmp_path / "strip.png")
    assert isinstance(caught.value, PhotoError)
    image = caught.value.image
    assert image.shape == (50, 480, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert [c.text for c in BarcodeReader("zxing").read(image)] == [RMA]
    # Any decodable picture under the limit, whatever its layout, comes with its image.
    for shape in ((40, 30), (63, 200), (200, 1)):
        ok, data = cv2.imencode(".png", np.zeros(shape, np.uint16))
        assert ok
        with pytest.raises(PhotoTooSmall) as small:
            decode_photo(data)
        assert small.value.image.shape == (*shape, 3) and small.value.image.dtype == np.uint8


# --- small pictures: a second read at twice the size ----------------------------------------------

# Searched for: 1.4 px a module and a 0.4 px blur sit in the middle of a band (1.25 to 1.45 px, any
# blur up to 0.6 px) where zxing-cpp misses the symbol at 1x and reads it at 2x.
_MODULE_PX, _BLUR = 1.4, 0.4


def test_low_resolution_label_reads_at_twice_the_size() -> None:
    picture = low_resolution(RMA, _MODULE_PX, _BLUR, (240, 320))
    # Both facts, so the test fails if either stops being true (a zxing-cpp that reads it at 1x
    # makes the retry untested; one that misses it at 2x makes it useless).
    assert zxing_texts(picture) == []
    assert zxing_texts(cv2.resize(picture, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)) == [RMA]

    reader = BarcodeReader("zxing")
    assert reader.read(picture) == []  # the daemon's per-frame read: no retry
    codes = reader.read(cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR), upscale_retry=True)
    assert [c.text for c in codes] == [RMA]
    assert parse_identity(codes[0].text, codes[0].symbology).rma == RMA
    # Corners in the picture's own px: around the dark bars.
    rows, cols = np.nonzero(picture < 128)
    xs, ys = [x for x, _ in codes[0].corners_px], [y for _, y in codes[0].corners_px]
    assert cols.min() - 4 <= min(xs) and max(xs) <= cols.max() + 4
    assert rows.min() - 4 <= min(ys) and max(ys) <= rows.max() + 4
    assert reader.read(picture, [(0, 0, 320, 240)], whole_frame=False, upscale_retry=True) == []  # regions only


def test_no_retry_where_twice_the_size_is_too_many_pixels() -> None:
    small_enough = low_resolution(RMA, _MODULE_PX, _BLUR, (900, 1100))  # 2x: 3.96 MP
    too_large = low_resolution(RMA, _MODULE_PX, _BLUR, (1000, 1100))  # 2x: 4.4 MP
    assert 4 * small_enough.size <= MAX_UPSCALED_PIXELS < 4 * too_large.size
    for picture in (small_enough, too_large):
        assert zxing_texts(picture) == []
        assert zxing_texts(cv2.resize(picture, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)) == [RMA]
    reader = BarcodeReader("zxing")
    assert [c.text for c in reader.read(small_enough, upscale_retry=True)] == [RMA]
    assert reader.read(too_large, upscale_retry=True) == []


# --- edge inspect ---------------------------------------------------------------------------------


def test_edge_inspect_reads_a_strip_too_small_to_grade(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Too small to grade: "no device found" with the barcodes, never a grade; without a barcode
    (or with barcodes off) the picture is unusable, as before."""
    strip = np.full((50, 480), 255, np.uint8)
    bars = symbol(RMA, zxingcpp.BarcodeFormat.Code128, scale=2)
    paste(strip, cv2.resize(bars, (bars.shape[1], 40), interpolation=cv2.INTER_NEAREST), 5, 40)
    cv2.imwrite(str(tmp_path / "strip.png"), strip)
    cv2.imwrite(str(tmp_path / "tiny.png"), np.full((20, 30, 3), 128, np.uint8))
    paths = [str(tmp_path / "strip.png"), str(tmp_path / "tiny.png")]

    code, (report, tiny) = run_inspect(capsys, *paths, "--json", "--evidence", str(tmp_path / "ev"))
    assert code == 1  # the tiny picture is unusable
    assert "error" not in report, report
    assert report["device_found"] is False and report["grade"] is None and report["mode"] == "no device found"
    assert "too small" in report["grade_reason"] and report["image_size_px"] == [480, 50]
    assert [(b["text"], b["aim"]) for b in report["barcodes"]] == [(RMA, "]C0")]
    assert report["vision"]["defects"] == [] and Path(report["evidence"]).exists()
    assert "too small" in tiny["error"] and "barcodes" not in tiny

    code, (alone,) = run_inspect(capsys, paths[0], "--json", "--whole-image")
    assert code == 3 and alone["device_found"] is False and alone["grade"] is None  # not graded, even so
    assert [b["text"] for b in alone["barcodes"]] == [RMA]
    code, (off,) = run_inspect(capsys, paths[0], "--json", "--barcode-backend", "off")
    assert code == 1 and "too small" in off["error"]


def test_edge_inspect_reads_a_small_picture_at_twice_the_size(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    picture = low_resolution(RMA, _MODULE_PX, _BLUR, (240, 320))
    assert zxing_texts(picture) == []
    cv2.imwrite(str(tmp_path / "label.png"), picture)
    _, (report,) = run_inspect(capsys, str(tmp_path / "label.png"), "--json")
    assert "error" not in report and [b["text"] for b in report["barcodes"]] == [RMA]


def test_edge_inspect_reports_a_pyzbar_failure(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The picture keeps its report; `barcode_error` says why pyzbar gave no symbols."""
    cv2.imwrite(str(tmp_path / "sequence.png"), qr_structured_append(b"RMA-0012345678 returned by courier", 3))
    code, (report,) = run_inspect(capsys, str(tmp_path / "sequence.png"), "--json", "--barcode-backend", "pyzbar")
    assert code == 3 and "error" not in report, report
    assert report["barcodes"] == [] and "ValueError" in report["barcode_error"]
    code, (zxing,) = run_inspect(capsys, str(tmp_path / "sequence.png"), "--json")
    assert "barcode_error" not in zxing and len(zxing["barcodes"]) == 3
