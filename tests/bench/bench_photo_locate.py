"""Finding the unit in photographs (`vision.photo.find_outline`, used by `edge inspect`), printed
as a table: found rate, corner error and time per picture on drawn photographs of phones and
tablets of several colours on gradient, wood and fabric backgrounds, with and without a drop
shadow and a camera slant; and how often a background alone is taken for a unit.

Run: .venv/bin/python -m tests.bench photo_locate   (or this file, with --per-cell N)
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

from tests.test_inspect_photos import background, corner_error, draw_unit, jpeg
from vision.photo import find_outline

KINDS = ("gradient", "wood", "fabric")
BODIES = {"black": ((25, 25, 28), (12, 12, 14)), "silver": ((200, 200, 205), (20, 20, 24)),
          "blue": ((150, 80, 30), (15, 15, 18)), "white": ((228, 230, 232), (236, 238, 240))}
UNITS = {"phone": 146.7 / 71.5, "tablet": 247.6 / 174.1}


def picture(kind: str, body: str, unit: str, shadow: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    height, width = 1500, 2000
    image = background(height, width, kind, rng)
    length = float(rng.uniform(500, 1100))
    size = (length, length / UNITS[unit])
    centre = (float(rng.uniform(0.4, 0.6) * width), float(rng.uniform(0.4, 0.6) * height))
    angle = float(rng.uniform(-90, 90))
    colours = BODIES[body]
    truth, _ = draw_unit(image.copy(), centre, size, angle, *colours)
    if shadow:
        mask = np.zeros(image.shape[:2], np.float32)
        cv2.fillPoly(mask, [np.round(truth + rng.uniform(15, 45, 2)).astype(np.int32)], 1.0)
        mask = cv2.GaussianBlur(mask, (0, 0), float(rng.uniform(8, 25)))
        image = (image.astype(np.float32) * (1 - 0.45 * mask[..., None])).astype(np.uint8)
    draw_unit(image, centre, size, angle, *colours)
    return jpeg(image, int(rng.integers(60, 92))), truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-cell", type=int, default=4, help="pictures per background, colour, unit and shadow")
    args, _ = parser.parse_known_args(argv)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    print("\nunit in photographs (2000x1500 JPEG, any turn, 500-1100 px long), found within 1.5% of its length:")
    print(f"  {'background':10s} {'colour':7s} {'shadow':7s} {'found':>7s} {'corner err px (median, max)':>28s}"
          f" {'median ms':>10s}")
    all_found = all_total = 0
    for kind in KINDS:
        for body in BODIES:
            for shadow in (False, True):
                found, errors, times = 0, [], []
                for i in range(args.per_cell):
                    unit = "phone" if i % 2 == 0 else "tablet"
                    image, truth = picture(kind, body, unit, shadow, rng)
                    started = time.perf_counter()
                    outline = find_outline(image)
                    times.append((time.perf_counter() - started) * 1e3)
                    length = float(np.linalg.norm(truth[1] - truth[0]))
                    length = max(length, float(np.linalg.norm(truth[2] - truth[1])))
                    if outline is not None:
                        error = corner_error(outline.corners, truth)
                        errors.append(error)
                        found += error <= 0.015 * length + 2
                all_found += found
                all_total += args.per_cell
                spread = f"{statistics.median(errors):.1f}, {max(errors):.1f}" if errors else "-"
                print(f"  {kind:10s} {body:7s} {'yes' if shadow else 'no':7s} {found:>3d}/{args.per_cell:<3d}"
                      f" {spread:>28s} {statistics.median(times):10.1f}")
    print(f"  all: {all_found}/{all_total} found ({all_found / all_total:.0%})")
    false_units = 0
    empty = 20 * len(KINDS)
    for kind in KINDS:
        for _ in range(20):
            false_units += find_outline(jpeg(background(1500, 2000, kind, rng))) is not None
    print(f"  backgrounds alone taken for a unit: {false_units}/{empty}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
