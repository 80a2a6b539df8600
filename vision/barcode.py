"""Barcodes from a camera frame, for units the scanner could not read.

zxing-cpp is the default backend; pyzbar (which needs the system libzbar) is optional. Either way
a result carries the decoded text and an AIM symbology identifier (ISO/IEC 15424), so it goes
through `edge.identity.parse_identity` exactly like a scanner read. GS1 symbols come back in
human-readable form, "(01)...(21)...", which that parser understands.

The reader tries the label regions the damage check found first (small crops decode in a fraction
of a millisecond), then the whole frame. Decoded text is hostile input: it is length-capped and
stripped of control characters other than the GS1 separator here, and parsed defensively later.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from drivers.scanner import symbology_for_aim

Backend = Literal["zxing", "pyzbar"]
MAX_TEXT = 1024
_AIM = re.compile(r"^\][A-Za-z][0-9A-Za-z]$")
_CONTROL = re.compile(r"[\x00-\x1c\x1e\x1f\x7f]")
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
    return _CONTROL.sub("", text[:MAX_TEXT])


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
    """Decodes barcodes in BGR or grey frames; thread-safe (no state besides counters)."""

    def __init__(self, backend: Backend = "zxing") -> None:
        if backend not in ("zxing", "pyzbar"):
            raise ValueError(f"unknown barcode backend {backend!r}")
        reason = available_backends().get(backend)
        if reason is not None:
            raise BarcodeBackendUnavailable(reason)
        self.backend = backend
        self.last_ms = 0.0

    def read(
        self, frame: np.ndarray, regions: Iterable[Sequence[int]] = (), *, whole_frame: bool = True
    ) -> list[FrameBarcode]:
        """All barcodes found: in `regions` (x0, y0, x1, y1 frame px) first; the whole frame only
        when those gave nothing (and `whole_frame`). Never raises on image content."""
        started = time.perf_counter()
        try:
            gray = _gray(frame)
        except ValueError:
            return []
        found: list[FrameBarcode] = []
        height, width = gray.shape
        for region in regions:
            x0, y0, x1, y1 = (int(v) for v in region)
            x0, y0 = max(x0 - _REGION_PAD_PX, 0), max(y0 - _REGION_PAD_PX, 0)
            x1, y1 = min(x1 + _REGION_PAD_PX, width), min(y1 + _REGION_PAD_PX, height)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            for code in self._decode(np.ascontiguousarray(gray[y0:y1, x0:x1])):
                corners = tuple((x + x0, y + y0) for x, y in code.corners_px)
                found.append(FrameBarcode(code.text, code.aim, code.symbology, code.backend, corners))
        if not found and whole_frame:
            found = self._decode(gray)
        self.last_ms = (time.perf_counter() - started) * 1000.0
        unique: dict[tuple[str, str], FrameBarcode] = {}
        for code in found:
            unique.setdefault((code.text, code.aim), code)
        return list(unique.values())

    def _decode(self, gray: np.ndarray) -> list[FrameBarcode]:
        return _decode_zxing(gray) if self.backend == "zxing" else _decode_pyzbar(gray)


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


def _decode_pyzbar(gray: np.ndarray) -> list[FrameBarcode]:
    from pyzbar import pyzbar

    out = []
    for result in pyzbar.decode(gray):
        text = result.data.decode("utf-8", errors="replace")
        aim = _ZBAR_AIM.get(str(result.type), "]X0")
        r = result.rect
        corners = ((r.left, r.top), (r.left + r.width, r.top), (r.left + r.width, r.top + r.height),
                   (r.left, r.top + r.height))
        out.append(FrameBarcode(_clean(text), aim, symbology_for_aim(aim), "pyzbar",
                                tuple((float(x), float(y)) for x, y in corners)))
    return out
