"""`edge inspect IMAGE... [--json] [--evidence DIR]`: the whole damage check on photographs.

For an engineer trying the check on pictures from a phone or a bench camera: each image is located
(unit on a belt, or a close-up where the unit fills the picture), inspected, graded with the
default cosmetic policy, and searched for barcodes. Without a calibration (`--px-per-mm`) the
scale is estimated from the unit's long side (`--assume-length-mm`, a typical phone by default),
so the millimetres are estimates and the report says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "config" / "grading.yaml"
MAX_SIDE_PX = 1280  # photos are brought to camera-frame size: the thresholds are tuned for it
MAX_PIXELS = 100_000_000  # refuse decompression bombs before decoding


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("inspect", help="run the damage check and barcode read on image files")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--json", action="store_true", help="print one JSON array with a report per image")
    parser.add_argument("--evidence", metavar="DIR", default=None, help="write an evidence JPEG per image here")
    parser.add_argument("--px-per-mm", type=float, default=None,
                        help="calibration of the original image; default: estimated from the unit's size")
    parser.add_argument("--assume-length-mm", type=float, default=150.0,
                        help="long side of the unit, for the estimated calibration (default 150, a phone)")
    parser.add_argument("--expected-size", type=float, nargs=2, metavar=("LENGTH_MM", "WIDTH_MM"), default=None,
                        help="catalog outline: a smaller measured unit has a missing part (needs --px-per-mm)")
    parser.add_argument("--barcode-backend", choices=("zxing", "pyzbar", "off"), default="zxing")
    parser.add_argument("--policy", default=str(DEFAULT_POLICY), help="grading policy (default: config/grading.yaml)")
    parser.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from edge.policy import load_policy
    from edge.yamlconf import ConfigError
    from vision.barcode import BarcodeBackendUnavailable, BarcodeReader

    try:
        policy = load_policy(args.policy)
    except (ConfigError, OSError) as exc:
        print(f"edge inspect: policy {args.policy}: {exc}", file=sys.stderr)
        return 2
    if args.px_per_mm is not None and not args.px_per_mm > 0:
        print("edge inspect: --px-per-mm must be positive", file=sys.stderr)
        return 2
    reader = None
    barcode_note = None
    if args.barcode_backend != "off":
        try:
            reader = BarcodeReader(args.barcode_backend)
        except BarcodeBackendUnavailable as exc:
            barcode_note = str(exc)
            print(f"edge inspect: barcodes not read: {exc}", file=sys.stderr)
    evidence_dir = Path(args.evidence) if args.evidence else None
    reports = []
    failed = False
    for name in args.images:
        report = inspect_image(Path(name), policy, args, reader, evidence_dir)
        if barcode_note and "error" not in report:
            report["barcode_error"] = barcode_note
        failed |= "error" in report
        reports.append(report)
        if not args.json:
            print(_text(report))
    if args.json:
        print(json.dumps(reports, indent=2))
    return 1 if failed else 0


def _load(path: Path) -> np.ndarray:
    data = np.fromfile(path, np.uint8)
    if data.size == 0:
        raise ValueError("empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not an image OpenCV can decode")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ValueError(f"image too large ({image.shape[1]}x{image.shape[0]})")
    return image


def inspect_image(
    path: Path, policy: Any, args: argparse.Namespace, reader: Any, evidence_dir: Path | None
) -> dict[str, Any]:
    from edge.grading import DamageSummary, cosmetic_grade
    from vision.damage import DamageChecker, compare_with_catalog
    from vision.evidence import draw_evidence, encode_jpeg, write_atomically

    result: dict[str, Any] = {"image": str(path)}
    try:
        original = _load(path)
    except (OSError, ValueError, cv2.error) as exc:
        result["error"] = f"cannot read image: {exc}"
        return result
    scale = min(1.0, MAX_SIDE_PX / max(original.shape[:2]))
    image = cv2.resize(original, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else original

    # Locate first (needs no calibration), then calibrate from the unit when not given.
    probe = DamageChecker(px_per_mm=1.0, min_device_mm=max(image.shape[:2]) * 0.08)
    pose = probe.locate(image)
    mode = "unit located" if pose is not None else "whole image"
    long_px = max(pose.width_px, pose.height_px) if pose is not None else float(max(image.shape[:2]))
    if args.px_per_mm is not None:
        px_per_mm, calibration = args.px_per_mm * scale, "given"
    else:
        px_per_mm, calibration = long_px / args.assume_length_mm, f"estimated (long side = {args.assume_length_mm} mm)"
    checker = DamageChecker(px_per_mm=px_per_mm)
    report = checker.check(image, whole_frame=pose is None)
    if not report.device_found and report.error is None:
        report = checker.check(image, whole_frame=True)
        mode = "whole image"
    if args.expected_size and args.px_per_mm is not None:
        report = compare_with_catalog(report, tuple(args.expected_size))
    summary = DamageSummary(
        scratch_lengths_mm=tuple(d.length_mm for d in report.scratches),
        crack_count=len(report.cracks),
        damage_score=report.damage_score,
        dent_count=len(report.dents),
        missing_part_count=len(report.missing_parts),
    )
    grade, reason = cosmetic_grade(summary, policy) if report.error is None else (None, report.error)
    barcodes = []
    if reader is not None:
        # The original resolution: printed modules are often too fine for the downscaled copy.
        barcodes = [b.to_dict() for b in reader.read(original)]
    result.update(
        mode=mode,
        calibration=calibration,
        px_per_mm=round(px_per_mm / scale, 3),
        vision=report.to_dict(),
        grade=grade,
        grade_reason=reason,
        barcodes=barcodes,
    )
    if evidence_dir is not None:
        target = evidence_dir / f"{path.stem}.evidence.jpg"
        try:
            write_atomically(target, encode_jpeg(draw_evidence(image, report, grade, path.name)))
            result["evidence"] = str(target)
        except (OSError, ValueError, cv2.error) as exc:
            result["evidence_error"] = str(exc)
    return result


def _text(report: dict[str, Any]) -> str:
    if "error" in report:
        return f"{report['image']}: ERROR {report['error']}"
    vision = report["vision"]
    lines = [
        f"{report['image']}: grade {report['grade']} ({report['grade_reason']})",
        f"  {report['mode']}, {vision['device_width_mm']} x {vision['device_height_mm']} mm, "
        f"calibration {report['calibration']}, damage score {vision['damage_score']}",
    ]
    for defect in vision["defects"]:
        lines.append(
            f"  {defect['kind']:12s} at ({defect['x_mm']}, {defect['y_mm']}) mm  length {defect['length_mm']} mm  "
            f"width {defect['width_mm']} mm  confidence {defect['confidence']}"
        )
    for code in report["barcodes"]:
        lines.append(f"  barcode {code['symbology']} {code['aim']}: {code['text']!r}")
    if "evidence" in report:
        lines.append(f"  evidence {report['evidence']}")
    return "\n".join(lines)
