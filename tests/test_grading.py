from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from edge.catalog import Catalog
from edge.grading import DamageSummary, Observation, cosmetic_grade, grade_unit
from edge.policy import load_policy

from .conftest import CONFIG

POLICY = load_policy(CONFIG / "grading.yaml")
CATALOG = Catalog.load(CONFIG / "catalog.csv")
PHONE = next(i for i in CATALOG.items if i.value_eur >= 250 and i.category == "phone")
CHEAP = next(i for i in CATALOG.items if i.value_eur < 80)
MID = next(i for i in CATALOG.items if 80 <= i.value_eur < 250)


def observe(item=PHONE, scratches=(), cracks=0, weight=None, **kw) -> Observation:
    base = Observation(
        barcode=f"01{item.gtin}21SER1", gtin=item.gtin, identity_problems=(), item=item,
        weight_g=item.weight_g if weight is None else weight, weight_problem=None,
        damage=DamageSummary(tuple(scratches), cracks, 0.0), vision_problem=None,
    )
    return replace(base, **kw)


def test_design_defaults() -> None:
    assert cosmetic_grade(DamageSummary((), 0), POLICY)[0] == "A"
    assert cosmetic_grade(DamageSummary((2.0, 3.0, 1.0)), POLICY)[0] == "A"
    assert cosmetic_grade(DamageSummary((2.0, 3.1)), POLICY)[0] == "B"
    assert cosmetic_grade(DamageSummary((1.0,) * 4), POLICY)[0] == "B"
    assert cosmetic_grade(DamageSummary((7.0,) * 10), POLICY)[0] == "B"
    assert cosmetic_grade(DamageSummary((7.1,)), POLICY)[0] == "C"
    assert cosmetic_grade(DamageSummary((1.0,) * 11), POLICY)[0] == "C"
    assert cosmetic_grade(DamageSummary((), 1), POLICY)[0] == "D"
    assert cosmetic_grade(DamageSummary((), 0, 0.95), POLICY)[0] == "D"


def test_dispositions_follow_grade_and_value() -> None:
    assert grade_unit(observe(), POLICY).disposition == "restock"
    assert grade_unit(observe(scratches=(5.0,) * 5), POLICY).disposition == "restock"
    assert grade_unit(observe(scratches=(12.0,) * 3), POLICY).disposition == "refurbish"
    assert grade_unit(observe(cracks=1), POLICY).disposition == "repair"
    assert grade_unit(observe(item=MID, cracks=1), POLICY).disposition == "harvest"
    assert grade_unit(observe(item=CHEAP, cracks=1), POLICY).disposition == "recycle"


def test_every_doubt_quarantines_with_a_reason() -> None:
    cases = {
        "no barcode read": observe(barcode=None),
        "unknown unit": replace(observe(), item=None),
        "outside": observe(weight=PHONE.weight_g * 0.7),
        "no weight": observe(weight_g=None, weight_problem="ScaleTimeout"),
        "vision failed": observe(damage=None, vision_problem="no device found"),
    }
    for words, observation in cases.items():
        verdict = grade_unit(observation, POLICY)
        assert verdict.disposition == "quarantine", words
        assert any(words in reason for reason in verdict.reasons), (words, verdict.reasons)


def test_weight_at_tolerance_edge() -> None:
    assert grade_unit(observe(weight=PHONE.weight_g + PHONE.weight_tolerance_g), POLICY).disposition == "restock"
    too_heavy = PHONE.weight_g + PHONE.weight_tolerance_g + 0.1
    assert grade_unit(observe(weight=too_heavy), POLICY).disposition == "quarantine"


def test_data_bearing_units_need_sanitization() -> None:
    assert grade_unit(observe(), POLICY).needs_sanitization is True


@given(
    scratches=st.lists(st.floats(0, 100, allow_nan=False), max_size=40),
    cracks=st.integers(0, 5),
    weight=st.one_of(st.none(), st.floats(0, 5000, allow_nan=False)),
)
def test_grading_always_decides_and_explains(scratches, cracks, weight) -> None:
    verdict = grade_unit(observe(scratches=scratches, cracks=cracks, weight_g=weight), POLICY)
    assert verdict.disposition in ("restock", "refurbish", "repair", "harvest", "recycle", "quarantine")
    assert verdict.reasons
    if cracks and verdict.disposition != "quarantine":
        assert verdict.grade == "D"
