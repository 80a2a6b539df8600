"""Grading: from what the station observed to a cosmetic grade and a disposition.

Pure functions over plain values: no I/O, no clocks, so every rule is tested directly. Whenever
an input is missing or does not add up, the unit is quarantined and the reason says why: the
controller never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.catalog import CatalogItem
from edge.policy import Grade, GradingPolicy


@dataclass(frozen=True)
class DamageSummary:
    """What grading needs from the damage check."""

    scratch_lengths_mm: tuple[float, ...] = ()
    crack_count: int = 0
    damage_score: float = 0.0
    dent_count: int = 0  # dents and chips on the outline
    missing_part_count: int = 0


@dataclass(frozen=True)
class Observation:
    """Everything the station learned about one unit."""

    barcode: str | None
    gtin: str | None
    identity_problems: tuple[str, ...]
    item: CatalogItem | None
    weight_g: float | None
    weight_problem: str | None
    damage: DamageSummary | None
    vision_problem: str | None


@dataclass(frozen=True)
class Verdict:
    grade: Grade | None
    disposition: str
    reasons: tuple[str, ...]
    r2_category: str | None
    needs_sanitization: bool
    weight_ok: bool | None = None
    extra: dict[str, float] = field(default_factory=dict)


def cosmetic_grade(damage: DamageSummary, policy: GradingPolicy) -> tuple[Grade, str]:
    """The CTIA-style cosmetic grade and the reason for it."""
    cosmetic = policy.cosmetic
    count = len(damage.scratch_lengths_mm)
    longest = max(damage.scratch_lengths_mm, default=0.0)
    if damage.crack_count > 0:
        return "D", f"{damage.crack_count} crack(s) in cover glass or housing"
    if damage.missing_part_count > 0:
        return "D", f"{damage.missing_part_count} missing part(s): outline does not match the unit"
    if damage.damage_score >= cosmetic.heavy_damage_score:
        return "D", f"heavy damage (score {damage.damage_score:.2f})"
    if damage.dent_count > 0:
        return "C", f"{damage.dent_count} dent(s) or chip(s) on the outline"
    if count <= cosmetic.A.max_scratches and longest <= cosmetic.A.max_scratch_mm:
        return "A", f"{count} scratch(es), longest {longest:.1f} mm: within grade A limits"
    if count <= cosmetic.B.max_scratches and longest <= cosmetic.B.max_scratch_mm:
        return "B", f"{count} scratch(es), longest {longest:.1f} mm: within grade B limits"
    return "C", f"{count} scratch(es), longest {longest:.1f} mm: beyond grade B limits"


def weight_check(item: CatalogItem, weight_g: float, policy: GradingPolicy) -> tuple[bool, float]:
    """Whether the weight is within tolerance, and the tolerance used (grams)."""
    tolerance = item.weight_tolerance_g or item.weight_g * policy.weight.default_tolerance_pct / 100.0
    return abs(weight_g - item.weight_g) <= tolerance, tolerance


def _quarantine(reasons: list[str], item: CatalogItem | None, policy: GradingPolicy, **kw) -> Verdict:
    return Verdict(
        grade=kw.pop("grade", None),
        disposition="quarantine",
        reasons=tuple(reasons),
        r2_category=policy.r2_categories.get("quarantine"),
        needs_sanitization=item.data_bearing if item else True,
        **kw,
    )


def grade_unit(observation: Observation, policy: GradingPolicy) -> Verdict:
    reasons: list[str] = []
    item = observation.item
    if observation.barcode is None:
        return _quarantine(["no barcode read"], None, policy)
    if observation.identity_problems:
        reasons.extend(f"identity: {p}" for p in observation.identity_problems)
    if item is None:
        reasons.append(
            f"unknown unit: GTIN {observation.gtin} not in catalog" if observation.gtin
            else f"barcode {observation.barcode!r} carries no GTIN the catalog knows"
        )
        return _quarantine(reasons, None, policy)
    if observation.weight_g is None:
        reasons.append(f"no weight: {observation.weight_problem or 'scale did not answer'}")
        return _quarantine(reasons, item, policy)
    weight_ok, tolerance = weight_check(item, observation.weight_g, policy)
    if not weight_ok:
        reasons.append(
            f"weight {observation.weight_g:.1f} g outside {item.weight_g:.1f} ± {tolerance:.1f} g"
            " (missing parts or wrong item)"
        )
        return _quarantine(reasons, item, policy, weight_ok=False)
    if observation.damage is None:
        reasons.append(f"vision failed: {observation.vision_problem or 'no damage report'}")
        return _quarantine(reasons, item, policy, weight_ok=True)

    grade, grade_reason = cosmetic_grade(observation.damage, policy)
    reasons.append(f"grade {grade}: {grade_reason}")
    cracked = observation.damage.crack_count > 0
    for rule in policy.rules:
        if grade not in rule.grades:
            continue
        if rule.min_value is not None and item.value_eur < rule.min_value:
            continue
        if rule.max_value is not None and item.value_eur >= rule.max_value:
            continue
        if rule.cracked is not None and rule.cracked != cracked:
            continue
        reasons.append(rule.reason)
        return Verdict(
            grade=grade,
            disposition=rule.disposition,
            reasons=tuple(reasons),
            r2_category=policy.r2_categories.get(rule.disposition),
            needs_sanitization=item.data_bearing,
            weight_ok=True,
        )
    reasons.append(f"no disposition rule matched grade {grade}")
    return _quarantine(reasons, item, policy, grade=grade, weight_ok=True)
