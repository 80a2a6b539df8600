"""The grading policy, as data: cosmetic thresholds, weight tolerance and disposition rules.

A policy change is a YAML edit, never a code change; `edge check-config` validates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.config import Disposition
from edge.yamlconf import load_yaml, validate

Grade = Literal["A", "B", "C", "D"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GradeThreshold(_Strict):
    max_scratches: int = Field(ge=0, description="Most scratches a unit of this grade may have.")
    max_scratch_mm: float = Field(ge=0, description="Longest scratch allowed, in mm.")


class CosmeticPolicy(_Strict):
    A: GradeThreshold = Field(description="Like new: no cracks, no dents, few short scratches.")
    B: GradeThreshold = Field(description="Light wear: no cracks, more or longer scratches.")
    heavy_damage_score: float = Field(
        0.8, ge=0, le=1, description="A damage score at or above this grades D even without a crack."
    )

    @model_validator(mode="after")
    def _a_is_stricter_than_b(self) -> CosmeticPolicy:
        if self.A.max_scratches > self.B.max_scratches or self.A.max_scratch_mm > self.B.max_scratch_mm:
            raise ValueError("grade A limits must not be looser than grade B limits")
        return self


class WeightPolicy(_Strict):
    default_tolerance_pct: float = Field(
        5.0, gt=0, le=100, description="Tolerance when the catalog gives none, in % of the catalog weight."
    )


class DispositionRule(_Strict):
    grades: list[Grade] = Field(description="Grades this rule applies to.")
    disposition: Disposition = Field(description="What happens to a unit matching the rule.")
    min_value: float | None = Field(None, ge=0, description="Only units worth at least this much.")
    max_value: float | None = Field(None, ge=0, description="Only units worth less than this.")
    cracked: bool | None = Field(None, description="Only units with (true) or without (false) a crack.")
    reason: str = Field(description="Why, in words, written into the decision's reasons.")


class GradingPolicy(_Strict):
    cosmetic: CosmeticPolicy = Field(description="Cosmetic grade thresholds (DESIGN defaults).")
    weight: WeightPolicy = Field(default_factory=WeightPolicy, description="Weight check.")
    rules: list[DispositionRule] = Field(description="Disposition rules, first match wins.")
    r2_categories: dict[Disposition, str] = Field(
        default_factory=dict, description="R2 category reported for each disposition."
    )

    @model_validator(mode="after")
    def _every_grade_has_a_rule(self) -> GradingPolicy:
        for grade in ("A", "B", "C", "D"):
            if not any(grade in rule.grades for rule in self.rules):
                raise ValueError(f"no disposition rule covers grade {grade}")
        return self


def load_policy(path: Path | str) -> GradingPolicy:
    return validate(GradingPolicy, load_yaml(path))
