"""Seeded, labelled evaluation set for the damage check: rendered frames plus their ground truth.

`eval_units(n, seed)` yields units in memory (the accuracy benchmark uses it directly); `write`
stores them as PNG frames and one `labels.jsonl` line per frame, so other tools (or a real
inspection stack) can be scored on exactly the same images:

    python -m simulator.evalset OUT_DIR [--units 500] [--blemish-only 100] [--seed 2024] [--hard 0]

Graded units cycle through phones, tablets and laptops of catalog sizes with the default grade mix
of a returns line; "blemish-only" units carry smudges, oil, stains, glare or dust and no damage at
all (for the false-positive rate). Every label records the true cosmetic grade under the default
policy, each defect, blemish and outline defect, and where the unit lies in the frame.

`hard_units(n, seed)` is a separate set (its own random stream, so the main set's units stay the
same): `n` units of each hard case of `simulator.render.hard_appearance` (glare and specular
highlights, scratches 40-90 mm long, scratches crossing at a shallow angle, near-straight cracks),
with `subset` set to the case's name.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from simulator.render import (
    HARD_CASES,
    LATER_HARD_CASES,
    Appearance,
    Scene,
    generate_appearance,
    hard_appearance,
    render_scene,
)

SIZES: tuple[tuple[str, float, float], ...] = (
    ("phone", 146.7, 71.5),
    ("phone", 158.2, 76.7),
    ("phone", 151.7, 71.2),
    ("tablet", 248.6, 179.5),
    ("tablet", 253.8, 165.3),
    ("laptop", 304.1, 215.0),
    ("laptop", 295.3, 199.0),
)
GRADE_MIX = {"A": 0.3, "B": 0.25, "C": 0.25, "D": 0.2}


@dataclass(frozen=True)
class EvalUnit:
    index: int
    subset: str  # "graded" or "blemish_only"; in the hard set, the case's name
    target_grade: str
    true_grade: str
    ambiguous: bool
    appearance: Appearance
    frame: np.ndarray
    scene: Scene

    def label(self) -> dict[str, object]:
        a = self.appearance
        return {
            "index": self.index,
            "subset": self.subset,
            "true_grade": self.true_grade,
            "ambiguous": self.ambiguous,
            "category": a.category,
            "width_mm": a.width_mm,
            "height_mm": a.height_mm,
            "angle_deg": round(self.scene.angle_deg, 2),
            "corners_px": [[round(v, 1) for v in p] for p in self.scene.corners(a.width_mm, a.height_mm)],
            "defects": [d.to_dict() for d in a.defects],
            "outline": [o.__dict__ for o in a.outline],
            "blemishes": [b.__dict__ for b in a.blemishes],
            "label": a.label.text if a.label else None,
        }


@functools.lru_cache(maxsize=1)
def _default_policy() -> object:
    from edge.policy import load_policy

    return load_policy(Path(__file__).resolve().parents[1] / "config" / "grading.yaml")


def true_grade(appearance: Appearance) -> str:
    """The cosmetic grade a perfect check would give under the default policy."""
    from edge.grading import DamageSummary, cosmetic_grade

    policy = _default_policy()
    summary = DamageSummary(
        tuple(d.length_mm for d in appearance.scratches), len(appearance.cracks), 0.0,
        dent_count=len(appearance.dents), missing_part_count=len(appearance.missing_parts),
    )
    return cosmetic_grade(summary, policy)[0]  # type: ignore[arg-type]


def eval_units(n: int = 500, seed: int = 2024, blemish_only: int = 100) -> Iterator[EvalUnit]:
    rng = np.random.default_rng(seed)
    grades = list(GRADE_MIX)
    for index in range(n + blemish_only):
        category, width, height = SIZES[index % len(SIZES)]
        subset = "graded" if index < n else "blemish_only"
        target = str(rng.choice(grades, p=list(GRADE_MIX.values()))) if subset == "graded" else "A"
        serial = f"EV{seed % 10000:04d}{index:06d}"
        appearance, ambiguous = generate_appearance(
            target, category, width, height, rng, allow_ambiguous=True,  # type: ignore[arg-type]
            label_text=f"(01)00614141001002(21){serial}",
        )
        if subset == "blemish_only":
            appearance = replace(appearance, defects=[], outline=[])
            while not appearance.blemishes:
                appearance = replace(appearance, blemishes=generate_appearance(
                    "A", category, width, height, rng  # type: ignore[arg-type]
                )[0].blemishes)
            ambiguous = False
        frame, scene = render_scene(appearance, rng)
        yield EvalUnit(index, subset, target, true_grade(appearance), ambiguous, appearance, frame, scene)


def hard_units(n: int = 40, seed: int = 2024) -> Iterator[EvalUnit]:
    """`n` units of every hard case, interleaved (case by case in turn), cycling through the sizes."""
    # Seeded apart from `eval_units`, so adding or changing hard cases never moves the main set.
    rng = np.random.default_rng([seed, 5])
    for index in range(n * len(HARD_CASES)):
        case = HARD_CASES[index % len(HARD_CASES)]
        category, width, height = SIZES[(index // len(HARD_CASES)) % len(SIZES)]
        appearance = hard_appearance(case, category, width, height, rng)  # type: ignore[arg-type]
        frame, scene = render_scene(appearance, rng)
        grade = true_grade(appearance)
        yield EvalUnit(index, case, grade, grade, False, appearance, frame, scene)
    # Cases added later: a stream of their own, so the units above stay what they were.
    later = np.random.default_rng([seed, 6])
    for offset in range(n * len(LATER_HARD_CASES)):
        case = LATER_HARD_CASES[offset % len(LATER_HARD_CASES)]
        category, width, height = SIZES[(offset // len(LATER_HARD_CASES)) % len(SIZES)]
        appearance = hard_appearance(case, category, width, height, later)  # type: ignore[arg-type]
        frame, scene = render_scene(appearance, later)
        grade = true_grade(appearance)
        yield EvalUnit(n * len(HARD_CASES) + offset, case, grade, grade, False, appearance, frame, scene)


def write(directory: Path, n: int, seed: int, blemish_only: int, hard: int = 0) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    with (directory / "labels.jsonl").open("w", encoding="utf-8") as labels:
        for unit in itertools.chain(eval_units(n, seed, blemish_only), hard_units(hard, seed)):
            name = f"unit_{unit.index:05d}.png" if unit.subset in ("graded", "blemish_only") else (
                f"hard_{unit.index:05d}.png"
            )
            cv2.imwrite(str(directory / name), unit.frame)
            labels.write(json.dumps({"image": name, **unit.label()}) + "\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--blemish-only", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--hard", type=int, default=0, help="also this many units of every hard case")
    args = parser.parse_args(argv)
    count = write(args.out, args.units, args.seed, args.blemish_only, args.hard)
    print(f"wrote {count} frames and labels.jsonl to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
