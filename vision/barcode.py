"""Barcodes from a camera frame, for units the scanner could not read.

zxing-cpp is the default backend; pyzbar (which needs the system libzbar) is optional. Either way
a result carries the decoded text and an AIM symbology identifier (ISO/IEC 15424), so it goes
through `edge.identity.parse_identity` exactly like a scanner read. GS1 symbols come back in
human-readable form, "(01)...(21)...", which that parser understands.

The reader tries the label regions the damage check found first (small crops decode in a fraction
of a millisecond), then the whole frame. For photographs (`edge inspect`) a whole-frame read that
finds nothing can be tried once more on the picture scaled 2x: small, low-resolution pictures of a
label often decode only then. The per-frame path of the daemon does not do this; its time budget
has no room for a second read.

Decoded text is hostile input: it is length-capped here, its line breaks and tabs become spaces
(so the lines of a multi-line label stay apart), other control characters except the GS1
separator are removed, and it is parsed defensively later.

A backend that fails on what it decoded (pyzbar 0.1.9 raises ValueError on a symbol zbar reports
without an orientation, such as a QR structured-append sequence) costs that image's symbols from
that backend, never the caller's report: `BarcodeReader.last_error` says what happened on the last
read and `BarcodeReader.errors` counts it by backend and exception.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from drivers.scanner import symbology_for_aim

Backend = Literal["zxing", "pyzbar"]
MAX_TEXT = 1024
MAX_UPSCALED_PIXELS = 4_000_000  # the 2x retry on photographs: only pictures that stay under this
_AIM = re.compile(r"^\][A-Za-z][0-9A-Za-z]$")
_LINE_BREAKS = "\t\n\r\x85"  # TAB, LF, CR and NEL (the C1 line break)
_LINE_BREAK = re.compile(f"[{_LINE_BREAKS}]+")
# C0 and C1 control characters and DEL, except the line breaks above and GS (0x1d, the GS1 separator).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1c\x1e\x1f\x7f-\x84\x86-\x9f]")
_REGION_PAD_PX = 16

# When a backend gives no AIM identifier: the identifier of the symbology's plain variant.
_ZXING_AIM = {
    "DataMatrix": "]d1", "QRCode": "]Q1", "MicroQRCode": "]Q1", "Code128": "]C0", "EAN13": "]E0",
    "EAN8": "]E4", "UPCA": "]E0", "UPCE": "]E0", "Code39": "]A0", "Code93": "]G0", "ITF": "]I0",
    "Codabar": "]F0", "PDF417": "]L2", "Aztec": "]z0", "DataBar": "]e0", "DataBarExpanded": "]e0",
}
_ZBAR_AIM = {
    "QRCODE": "]Q1", "CODE128": "]C0", "EAN13": "]E0", "EAN8": "]E4", "UPCA": "]E0", "UPCE": "]E0",
    "CODE39": "]A0", "CODE93": "]G0", "I25": "]I0", "CODABAR": "]F0", "PDF417": "]L2",
    "DATABAR": "]e0", "DATABAR_EXP": "]e0",
}
# What zbar is asked to decode: the symbologies mapped above, nothing else (zbar's SQ code, for one,
# comes back without an orientation or a position, and pyzbar 0.1.9 raises on it). Not UPC-A and
# UPC-E by name: zbar reads them all the same, and enabling them by name changes their text from
# the EAN-13 form zxing-cpp also gives ("0012345000065") to the short one ("01234565").
_ZBAR_ENABLED = tuple(name for name in _ZBAR_AIM if name not in ("UPCA", "UPCE"))


class BarcodeBackendUnavailable(RuntimeError):
    """The requested decoder library (or its system library) is not installed."""


@dataclass(frozen=True)
class FrameBarcode:
    text: str
    aim: str
    symbology: str
    backend: str
    corners_px: tuple[tuple[float, float], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "aim": self.aim, "symbology": self.symbology, "backend": self.backend}


def _clean(text: str) -> str:
    """Decoded text as reported: the first MAX_TEXT characters; control characters other than line
    breaks, tabs and GS removed; line breaks and tabs at either end dropped, and each run of them
    inside the text turned into one space ("signup\r\nhttp://..." -> "signup http://...")."""
    text = _CONTROL.sub("", text[:MAX_TEXT])
    return _LINE_BREAK.sub(" ", text.strip(_LINE_BREAKS))


def available_backends() -> dict[str, str | None]:
    """Backend name -> None when usable, else why not."""
    found: dict[str, str | None] = {}
    try:
        import zxingcpp  # noqa: F401

        found["zxing"] = None
    except ImportError as exc:
        found["zxing"] = f"zxing-cpp not installed ({exc})"
    try:
        from pyzbar import pyzbar  # noqa: F401

        found["pyzbar"] = None
    except ImportError as exc:  # pyzbar missing, or present without the system libzbar
        found["pyzbar"] = f"pyzbar unavailable ({exc})"
    return found


class BarcodeReader:
    """Decodes barcodes in BGR or grey frames; thread-safe (no state besides counters and the last
    read's time and error)."""

    def __init__(self, backend: Backend = "zxing") -> None:
        if backend not in ("zxing", "pyzbar"):
            raise ValueError(f"unknown barcode backend {backend!r}")
        reason = available_backends().get(backend)
        if reason is not None:
            raise BarcodeBackendUnavailable(reason)
        self.backend = backend
        self.last_ms = 0.0
        # Why the last read lost symbols a backend decoded (None: nothing was lost), and how often
        # that has happened, by "backend:exception".
        self.last_error: str | None = None
        self.errors: Counter[str] = Counter()

    def read(
        self,
        frame: np.ndarray,
        regions: Iterable[Sequence[int]] = (),
        *,
        whole_frame: bool = True,
        upscale_retry: bool = False,
    ) -> list[FrameBarcode]:
        """All barcodes found: in `regions` (x0, y0, x1, y1 frame px) first; the whole frame only
        when those gave nothing (and `whole_frame`). With `upscale_retry` (photographs, not camera
        frames on the line), a whole-frame read that finds nothing is tried once more on the frame
        scaled 2x, when that is at most MAX_UPSCALED_PIXELS. Never raises on image content: a
        backend failure is a read without those symbols, noted in `last_error` and `errors`."""
        started = time.perf_counter()
        self.last_error = None
        try:
            gray = _gray(frame)
        except ValueError:
            return []
        failures: list[tuple[str, str]] = []
        found: list[FrameBarcode] = []
        height, width = gray.shape
        for region in regions:
            x0, y0, x1, y1 = (int(v) for v in region)
            x0, y0 = max(x0 - _REGION_PAD_PX, 0), max(y0 - _REGION_PAD_PX, 0)
            x1, y1 = min(x1 + _REGION_PAD_PX, width), min(y1 + _REGION_PAD_PX, height)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            for code in self._decode(np.ascontiguousarray(gray[y0:y1, x0:x1]), failures):
                corners = tuple((x + x0, y + y0) for x, y in code.corners_px)
                found.append(FrameBarcode(code.text, code.aim, code.symbology, code.backend, corners))
        if not found and whole_frame:
            failed_before = len(failures)
            found = self._decode(gray, failures)
            # Not after a backend failure: that read did find symbols, and would fail again.
            if not found and upscale_retry and len(failures) == failed_before and 4 * gray.size <= MAX_UPSCALED_PIXELS:
                import cv2

                larger = cv2.resize(gray, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
                for code in self._decode(larger, failures):
                    corners = tuple((x / 2.0, y / 2.0) for x, y in code.corners_px)
                    found.append(FrameBarcode(code.text, code.aim, code.symbology, code.backend, corners))
        if failures:
            for key, _ in failures:
                self.errors[key] += 1
            self.last_error = "; ".join(dict.fromkeys(reason for _, reason in failures))
        self.last_ms = (time.perf_counter() - started) * 1000.0
        unique: dict[tuple[str, str], FrameBarcode] = {}
        for code in found:
            unique.setdefault((code.text, code.aim), code)
        return list(unique.values())

    def _decode(self, gray: np.ndarray, failures: list[tuple[str, str]]) -> list[FrameBarcode]:
        return _decode_zxing(gray) if self.backend == "zxing" else _decode_pyzbar(gray, failures)


def _gray(frame: object) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.size == 0:
        raise ValueError("frame must be a non-empty uint8 array")
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        import cv2

        code = cv2.COLOR_BGR2GRAY if frame.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(frame, code)
    raise ValueError(f"unsupported frame shape {frame.shape}")


def _decode_zxing(gray: np.ndarray) -> list[FrameBarcode]:
    import zxingcpp

    out = []
    for result in zxingcpp.read_barcodes(gray, text_mode=zxingcpp.TextMode.HRI):
        if not result.valid:
            continue
        fmt = str(result.format).rsplit(".", 1)[-1]
        aim = result.symbology_identifier or ""
        if not _AIM.match(aim):
            aim = _ZXING_AIM.get(fmt, "]X0")
        p = result.position
        corners = tuple(
            (float(pt.x), float(pt.y)) for pt in (p.top_left, p.top_right, p.bottom_right, p.bottom_left)
        )
        out.append(FrameBarcode(_clean(result.text), aim, symbology_for_aim(aim), "zxing", corners))
    return out


def _decode_pyzbar(gray: np.ndarray, failures: list[tuple[str, str]]) -> list[FrameBarcode]:
    """pyzbar on one grey image, with only `_ZBAR_ENABLED` enabled. pyzbar converts all of an
    image's symbols before returning any, so when it raises on one (a QR structured-append sequence,
    which zbar merges into one symbol without an orientation) the image gives no symbols; the
    failure is appended to `failures` as (count key, reason)."""
    from pyzbar import pyzbar
    from pyzbar.pyzbar_error import PyZbarError

    try:
        results = pyzbar.decode(gray, symbols=_zbar_symbols())
    except (ValueError, PyZbarError) as exc:
        failures.append((
            f"pyzbar:{type(exc).__name__}",
            f"pyzbar could not return the symbols it decoded ({type(exc).__name__}: {exc})",
        ))
        return []
    out = []
    for result in results:
        text = result.data.decode("utf-8", errors="replace")
        aim = _ZBAR_AIM.get(str(result.type), "]X0")
        r = result.rect
        corners = ((r.left, r.top), (r.left + r.width, r.top), (r.left + r.width, r.top + r.height),
                   (r.left, r.top + r.height))
        out.append(FrameBarcode(_clean(text), aim, symbology_for_aim(aim), "pyzbar",
                                tuple((float(x), float(y)) for x, y in corners)))
    return out


def _zbar_symbols() -> list[object]:
    from pyzbar.pyzbar import ZBarSymbol

    return [ZBarSymbol[name] for name in _ZBAR_ENABLED if name in ZBarSymbol.__members__]
