"""`edge inspect IMAGE... [--json] [--evidence DIR]`: the whole damage check on photographs.

For an engineer trying the check on pictures from a phone or a bench camera. Each image is
decoded (any resolution, EXIF orientation applied, 16-bit, grey and alpha images converted) and
brought to camera-frame size, then the unit is located:

1. on a uniform background (a belt, a sheet of paper) by its colour difference from it, with the
   full outline check (dents, chips, missing parts);
2. otherwise as the largest plausible phone, tablet or laptop outline in the photo (a convex,
   nearly rectangular four-sided shape; `vision.photo`), rectified by the homography from its
   corners. Its outline is not known to the pixel there, so dents and chips are not assessed;
3. with `--whole-image`, the entire picture is the unit's surface (close-ups of a screen).

A printed code is no unit in 1 or 2: an outline whose inside is mostly barcode texture, or which
lies within a symbol the barcode read found, is passed over (`vision.photo.printed_code`,
`within_symbol`), so a label photographed on its own is "no device found", not a unit with its
bars' ragged ends taken for dents. A unit with a label on it is still the unit.

When none applies the report says "no device found" (grade null) instead of grading the
background. A picture under 64 px on a side is too small to grade but is still read for barcodes:
with one, the report is "no device found" with the barcodes; without, the image is unusable.
Barcodes are read at the original resolution, and when that finds nothing in a picture of up to
about a megapixel, once more at twice it. Millimetres come from `--px-per-mm` or a `--calibration`
file; without one they are estimated from the catalog model whose outline has the unit's aspect
ratio, and failing that from `--assume-length-mm`; the report's `scale_source` says which.

`--config STATION_FILE` takes the damage check's rules (ridge and crack rules) from the station
file's `vision:` section, checked as the daemon checks it; where that section sets `px_per_mm`, its
camera calibration too (for frames of that station's camera), unless `--px-per-mm` or
`--calibration` is given.

Exit status: 0 every image inspected; 3 a unit was not found in at least one image (the others
were inspected); 1 at least one image could not be read or inspected; 2 bad options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = ROOT / "config" / "grading.yaml"
DEFAULT_CATALOG = ROOT / "config" / "catalog.csv"
MAX_SIDE_PX = 1280  # photos are brought to camera-frame size: the thresholds are tuned for it
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DEVICE = 0, 1, 2, 3
# Belt-located units must still look like a unit: a blob of texture on a patterned background
# is not one (looser than the photo outline search: a unit with a missing part is less square).
_BELT_MIN_ASPECT, _BELT_MAX_ASPECT, _BELT_MIN_FILL = 1.15, 2.8, 0.8


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "inspect", help="run the damage check and barcode read on image files",
        description="Exit status: 0 all inspected, 3 no device found in an image, 1 an image unreadable, 2 usage.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, TIFF, ...)")
    parser.add_argument("--json", action="store_true", help="print one JSON array with a report per image")
    parser.add_argument("--evidence", metavar="DIR", default=None, help="write an evidence JPEG per image here")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--px-per-mm", type=float, default=None,
                       help="calibration of the original image; default: estimated from the unit's outline")
    scale.add_argument("--calibration", metavar="FILE", default=None,
                       help="YAML/JSON file with px_per_mm and optional camera_homography (as in the station "
                            "file's vision: section), for the camera's full-resolution frames")
    parser.add_argument("--config", metavar="STATION_FILE", default=None,
                        help="station file whose vision: section gives the damage check's rules (ridge_*, crack_*) "
                             "and, where it sets px_per_mm, the calibration (--px-per-mm and --calibration win)")
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG),
                        help="catalog whose outlines give the estimated scale (default: config/catalog.csv)")
    parser.add_argument("--assume-length-mm", type=float, default=150.0,
                        help="long side of the unit when no calibration is given and no catalog outline matches "
                             "(default 150, a phone)")
    parser.add_argument("--expected-size", type=float, nargs=2, metavar=("LENGTH_MM", "WIDTH_MM"), default=None,
                        help="catalog outline: a smaller measured unit has a missing part (needs a calibration)")
    parser.add_argument("--whole-image", action="store_true",
                        help="the unit fills the picture (a close-up of a screen): inspect all of it")
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
        return EXIT_USAGE
    if args.px_per_mm is not None and not 0 < args.px_per_mm < 1e4:
        print("edge inspect: --px-per-mm must be a positive number", file=sys.stderr)
        return EXIT_USAGE
    if not 0 < args.assume_length_mm < 1e4:
        print("edge inspect: --assume-length-mm must be a positive number", file=sys.stderr)
        return EXIT_USAGE
    try:
        station_vision = _station_vision(args.config) if args.config else None
        calibration = _calibration(args, station_vision)
        sizes = _catalog_sizes(args.catalog)
    except ConfigError as exc:
        print(f"edge inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.expected_size and calibration is None:
        print("edge inspect: --expected-size is ignored without --px-per-mm or --calibration "
              "(an estimated scale cannot show a size mismatch)", file=sys.stderr)
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
    failed = missing = False
    for name in args.images:
        try:
            report = inspect_image(
                Path(name), policy, args, reader, evidence_dir, calibration, sizes,
                station_vision.ridge_rules() if station_vision is not None else None,
            )
        except Exception as exc:  # one bad image must not cost the reports of the others
            report = {"image": name, "error": f"inspection failed: {type(exc).__name__}: {exc}"}
        if barcode_note and "error" not in report:
            report["barcode_error"] = barcode_note
        failed |= "error" in report
        missing |= report.get("device_found") is False
        reports.append(report)
        if not args.json:
            print(_text(report))
    if args.json:
        print(json.dumps(reports, indent=2))
    return EXIT_FAILED if failed else EXIT_NO_DEVICE if missing else EXIT_OK


def _station_vision(path: str) -> Any:
    """The `vision:` section of a station file as the daemon reads it (`edge.config.VisionSettings`),
    errors with file, line and field; the rest of the file is not checked here."""
    from pydantic import BaseModel, ConfigDict, Field

    from edge.config import VisionSettings
    from edge.yamlconf import load_yaml, validate

    class _VisionSection(BaseModel):
        model_config = ConfigDict(extra="ignore")
        vision: VisionSettings = Field(default_factory=VisionSettings)

    return validate(_VisionSection, load_yaml(path)).vision


def _calibration(
    args: argparse.Namespace, station_vision: Any = None
) -> tuple[float, np.ndarray | None, str] | None:
    """(px per mm, camera homography or None, where from) of the original image, or None."""
    from edge.config import CameraCalibration
    from edge.yamlconf import load_yaml, validate

    if args.px_per_mm is not None:
        return float(args.px_per_mm), None, "given (--px-per-mm)"
    if args.calibration is None:
        if station_vision is not None and "px_per_mm" in station_vision.model_fields_set:
            loaded = station_vision
            source = f"given ({args.config}, vision: section)"
        else:
            return None
    else:
        loaded = validate(CameraCalibration, load_yaml(args.calibration))
        source = f"given ({args.calibration})"
    homography = np.array(loaded.camera_homography, np.float64) if loaded.camera_homography else None
    return loaded.px_per_mm, homography, source


def _catalog_sizes(path: str) -> list[tuple[str, float, float]]:
    from edge.catalog import Catalog

    return [(f"{item.sku} {item.model}", item.length_mm, item.width_mm) for item in Catalog.load(path).items]


def inspect_image(
    path: Path,
    policy: Any,
    args: argparse.Namespace,
    reader: Any,
    evidence_dir: Path | None,
    calibration: tuple[float, np.ndarray | None, str] | None = None,
    sizes: list[tuple[str, float, float]] | None = None,
    rules: dict[str, float] | None = None,
) -> dict[str, Any]:
    from edge.grading import DamageSummary, cosmetic_grade
    from vision.damage import DamageChecker, compare_with_catalog, pose_from_quad
    from vision.evidence import draw_evidence, encode_jpeg, write_atomically
    from vision.photo import PhotoError, PhotoTooSmall, catalog_scale, find_outline, fit_within, load_photo
    from vision.report import DamageReport

    result: dict[str, Any] = {"image": str(path)}
    too_small = None
    try:
        original = load_photo(path)
    except PhotoTooSmall as exc:  # too small to grade, not to read: a tight crop of a label strip
        original, too_small = exc.image, str(exc)
    except PhotoError as exc:
        result["error"] = f"cannot read image: {exc}"
        return result
    barcodes, symbols = [], []
    if reader is not None:
        # The original resolution: printed modules are often too fine for the downscaled copy.
        found = reader.read(original, upscale_retry=True)
        barcodes = [b.to_dict() for b in found]
        symbols = [np.array(b.corners_px, np.float64) for b in found if len(b.corners_px) >= 3]
        if reader.last_error is not None:
            result["barcode_error"] = reader.last_error
    if too_small is not None and not barcodes:
        result["error"] = f"cannot read image: {too_small}"
        return result
    image, scale = fit_within(original, MAX_SIDE_PX)
    symbols = [quad * scale for quad in symbols]  # the working copy's px, like every outline below
    result["image_size_px"] = [original.shape[1], original.shape[0]]
    homography = None
    if calibration is not None and calibration[1] is not None:
        # The calibration describes the original frame; the working copy is that frame scaled.
        to_work = np.diag([scale, scale, 1.0])
        homography = to_work @ calibration[1] @ np.linalg.inv(to_work)
    given_ppm = calibration[0] * scale if calibration is not None else None

    pose, located_by = None, "whole image"
    if too_small is not None:
        located_by = "no device found"
    elif not args.whole_image:
        probe_ppm = given_ppm or 1.0
        probe = DamageChecker(px_per_mm=probe_ppm, min_device_mm=max(image.shape[:2]) * 0.08 / probe_ppm,
                              camera_homography=homography)
        pose, located_by = probe.locate(image), "uniform background"
        if pose is not None and not _plausible_unit(pose, image, symbols):
            pose = None
        if pose is None:
            outline = find_outline(image, symbols)
            if outline is not None:
                try:
                    pose = pose_from_quad(outline.corners, image.shape, camera_homography=homography)
                    located_by = f"photo outline ({outline.method}); dents and chips not assessed"
                except ValueError:  # a degenerate outline (or calibration) is no unit
                    pose = None
        if pose is None:
            located_by = "no device found"

    long_px = max(pose.width_px, pose.height_px) if pose is not None else float(max(image.shape[:2]))
    short_px = min(pose.width_px, pose.height_px) if pose is not None else float(min(image.shape[:2]))
    match = catalog_scale(long_px, short_px, sizes or []) if pose is not None and given_ppm is None else None
    if given_ppm is not None:
        px_per_mm, scale_source, calibration_text = given_ppm, "given", calibration[2]  # type: ignore[index]
    elif match is not None:
        name, long_mm, short_mm, px_per_mm = match
        scale_source = "catalog"
        calibration_text = f"estimated: outline matches {name} ({long_mm:g} x {short_mm:g} mm)"
    else:
        px_per_mm, scale_source = long_px / args.assume_length_mm, "assumed"
        calibration_text = (f"assumed: long side = {args.assume_length_mm:g} mm (no calibration, no catalog "
                            "outline matched): sizes are rough")

    if too_small is not None:
        report = DamageReport(False, 0.0, 0.0)
        grade, reason = None, f"no device found: {too_small} to grade; barcodes read"
    elif pose is None and not args.whole_image:
        report = DamageReport(False, 0.0, 0.0)
        grade, reason = None, ("no device found: no phone, tablet or laptop outline in the picture "
                               "(for a close-up of a surface use --whole-image)")
    else:
        checker = DamageChecker(px_per_mm=px_per_mm, camera_homography=homography, **(rules or {}))
        report = checker.check(image, whole_frame=args.whole_image, pose=pose)
        if args.expected_size and scale_source == "given":
            report = compare_with_catalog(report, tuple(args.expected_size))
        if report.error is not None:
            grade, reason = None, report.error
        elif not report.device_found:
            grade, reason = None, "no device found"
        else:
            summary = DamageSummary(
                scratch_lengths_mm=tuple(d.length_mm for d in report.scratches),
                crack_count=len(report.cracks),
                damage_score=report.damage_score,
                dent_count=len(report.dents),
                missing_part_count=len(report.missing_parts),
            )
            grade, reason = cosmetic_grade(summary, policy)
    result.update(
        device_found=report.device_found,
        mode=located_by,
        calibration=calibration_text,
        scale_source=scale_source,
        px_per_mm=round(px_per_mm / scale, 3),
        device_size_px=[round(long_px / scale, 1), round(short_px / scale, 1)] if report.device_found else None,
        vision=report.to_dict(),
        grade=grade,
        grade_reason=reason,
        barcodes=barcodes,
    )
    if report.error is not None:
        result["error"] = f"inspection failed: {report.error}"
    if evidence_dir is not None:
        target = evidence_dir / f"{path.stem}.evidence.jpg"
        try:
            write_atomically(target, encode_jpeg(draw_evidence(image, report, grade, f"{path.name}: {located_by}")))
            result["evidence"] = str(target)
        except (OSError, ValueError, cv2.error) as exc:
            result["evidence_error"] = str(exc)
    return result


def _plausible_unit(pose: Any, image: np.ndarray, symbols: list[np.ndarray]) -> bool:
    """A belt-located outline in `image` that could be a unit: its aspect ratio and how much of its
    rectangle it fills (texture on a patterned background forms ragged blobs); not a printed code
    either (a label differs from the desk, and a barcode's bars from the paper, as a unit does from
    the belt: `vision.photo.printed_code`), nor within one of `symbols` read in the picture."""
    from vision.photo import printed_code, within_symbol

    long_side, short_side = max(pose.width_px, pose.height_px), min(pose.width_px, pose.height_px)
    if short_side <= 0 or not _BELT_MIN_ASPECT <= long_side / short_side <= _BELT_MAX_ASPECT:
        return False
    if float(cv2.contourArea(pose.contour)) < _BELT_MIN_FILL * long_side * short_side:
        return False
    corners = pose.corners()
    return not within_symbol(corners, symbols) and printed_code(image, corners) is None


def _text(report: dict[str, Any]) -> str:
    if "vision" not in report:
        return f"{report['image']}: ERROR {report['error']}"
    vision = report["vision"]
    if not report["device_found"]:
        lines = [f"{report['image']}: NO DEVICE FOUND ({report['grade_reason']})"]
    else:
        lines = [
            f"{report['image']}: grade {report['grade']} ({report['grade_reason']})",
            f"  located by {report['mode']}, {vision['device_width_mm']} x {vision['device_height_mm']} mm",
            f"  scale {report['px_per_mm']} px/mm, {report['calibration']}; damage score {vision['damage_score']}",
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
    if "error" in report:
        lines.append(f"  ERROR {report['error']}")
    return "\n".join(lines)
