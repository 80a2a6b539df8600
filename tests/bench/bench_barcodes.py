"""Barcode backends side by side: zxing-cpp (default) against pyzbar on the same photo-like label
pictures, read rate and time per picture, printed as a table.

The pictures are labels as a phone camera or a bench camera photographs them: a symbol printed
at a given module size, turned, blurred, noisy and JPEG-compressed, on a 1280x720 grey frame.
Symbologies of returns labels: QR and Data Matrix (GS1 text), Code 128 (RMA numbers), EAN-13.
pyzbar reads no Data Matrix, which its column shows. (bench_vision.py compares the two on
rendered belt frames with labels on the units.)

Run: .venv/bin/python -m tests.bench barcodes   (or this file, with --per-cell N)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cv2
import numpy as np

from vision.barcode import BarcodeReader, available_backends

SYMBOLOGIES = ("QRCode", "DataMatrix", "Code128", "EAN13")
MODULE_PX = (2, 3, 5)  # printed module size in the picture, px


def _text(symbology: str, index: int) -> str:
    if symbology == "EAN13":
        digits = f"400638133{index:03d}"
        total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits))
        return digits + str((10 - total % 10) % 10)
    if symbology == "Code128":
        return f"RMA-2026-{index:06d}"
    return f"(01)00614141001002(21)BC{index:06d}"


def label_picture(symbology: str, module_px: int, index: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    import zxingcpp

    text = _text(symbology, index)
    symbol = zxingcpp.create_barcode(text, getattr(zxingcpp.BarcodeFormat, symbology))
    bitmap = np.asarray(zxingcpp.write_barcode_to_image(symbol, scale=module_px, add_quiet_zones=True), np.uint8)
    if bitmap.shape[0] < 8 * module_px:  # linear symbols: give the bars a printed height
        bitmap = cv2.resize(bitmap, (bitmap.shape[1], 30 * module_px), interpolation=cv2.INTER_NEAREST)
    ink, paper = int(rng.integers(10, 60)), int(rng.integers(180, 240))
    frame = np.full((720, 1280), int(rng.integers(60, 140)), np.uint8)
    label = np.where(bitmap > 127, paper, ink).astype(np.uint8)
    h, w = label.shape
    if h >= 700 or w >= 1260:
        label = cv2.resize(label, (min(w, 1200), min(h, 680)), interpolation=cv2.INTER_AREA)
        h, w = label.shape
    # Turned, but never so far that a long linear symbol leaves the frame (that is no read test).
    max_turn = 20.0 if w < 600 else 6.0
    y, x = (720 - h) // 2 + int(rng.integers(-20, 21)), (1280 - w) // 2 + int(rng.integers(-20, 21))
    frame[y : y + h, x : x + w] = label
    turn = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), float(rng.uniform(-max_turn, max_turn)), 1.0)
    frame = cv2.warpAffine(frame, turn, (1280, 720), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    blurred = cv2.GaussianBlur(frame, (0, 0), float(rng.uniform(0.4, 1.2))).astype(np.float32)
    noisy = np.clip(blurred + rng.normal(0, rng.uniform(2, 8), frame.shape), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 90))])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE), text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-cell", type=int, default=12, help="pictures per symbology and module size")
    args, _ = parser.parse_known_args(argv)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    pictures = [
        (symbology, module_px, *label_picture(symbology, module_px, i, rng))
        for symbology in SYMBOLOGIES for module_px in MODULE_PX for i in range(args.per_cell)
    ]
    print(f"\nbarcodes: {len(pictures)} label photos (1280x720, turned, blurred, noisy, JPEG), one thread")
    cells = [f"{s[:6]}@{m}px" for s in SYMBOLOGIES for m in MODULE_PX]
    header = " ".join(f"{c:>10s}" for c in cells)
    print(f"  {'backend':8s} {header} {'all':>8s} {'median ms':>10s} {'p95 ms':>7s}")
    summary: dict[str, tuple[float, float]] = {}
    for backend, reason in available_backends().items():
        if reason is not None:
            print(f"  {backend:8s} unavailable: {reason}")
            continue
        reader = BarcodeReader(backend)  # type: ignore[arg-type]
        hits: dict[str, list[int]] = {c: [0, 0] for c in cells}
        times = []
        for symbology, module_px, picture, text in pictures:
            started = time.perf_counter()
            codes = reader.read(picture)
            times.append((time.perf_counter() - started) * 1e3)
            cell = hits[f"{symbology[:6]}@{module_px}px"]
            cell[1] += 1
            cell[0] += any(c.text == text for c in codes)
        read = sum(h[0] for h in hits.values())
        shared = [h for cell, h in hits.items() if not cell.startswith("DataMa")]
        median, p95 = statistics.median(times), float(np.percentile(times, 95))
        summary[backend] = (sum(h[0] for h in shared) / max(sum(h[1] for h in shared), 1), median)
        row = " ".join(f"{f'{h[0]}/{h[1]}':>10s}" for h in hits.values())
        print(f"  {backend:8s} {row} {read / len(pictures):8.0%} {median:10.2f} {p95:7.2f}")
    if len(summary) == 2:
        (z_rate, z_ms), (p_rate, p_ms) = summary["zxing"], summary["pyzbar"]
        print(f"  symbologies both read (all but Data Matrix): zxing-cpp {z_rate:.0%}, pyzbar {p_rate:.0%}; "
              f"median time {z_ms:.2f} ms against {p_ms:.2f} ms ({p_ms / z_ms:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
