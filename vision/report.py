"""Result types of the damage check: plain data, JSON-ready, no numpy in the public fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DefectKind = Literal["scratch", "crack"]


@dataclass(frozen=True)
class Defect:
    """One finding on the inspected surface. Position is the defect's centroid in mm from the
    device's top-left corner; `length_mm` is the segment length for a scratch and the estimated
    total path length of all arms for a crack."""

    kind: DefectKind
    x_mm: float
    y_mm: float
    length_mm: float
    width_mm: float
    area_mm2: float
    confidence: float

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "x_mm": round(self.x_mm, 1),
            "y_mm": round(self.y_mm, 1),
            "length_mm": round(self.length_mm, 2),
            "width_mm": round(self.width_mm, 2),
            "area_mm2": round(self.area_mm2, 2),
            "confidence": round(self.confidence, 3),
        }


@dataclass(frozen=True)
class DamageReport:
    """What the vision stage says about one frame. `error` is set (and `device_found` False) when
    the frame itself was unusable; a usable frame without a unit has `device_found` False only."""

    device_found: bool
    device_width_mm: float
    device_height_mm: float
    defects: list[Defect] = field(default_factory=list)
    damage_score: float = 0.0
    elapsed_ms: float = 0.0
    error: str | None = None

    @property
    def scratches(self) -> list[Defect]:
        return [d for d in self.defects if d.kind == "scratch"]

    @property
    def cracks(self) -> list[Defect]:
        return [d for d in self.defects if d.kind == "crack"]

    def to_dict(self) -> dict[str, object]:
        return {
            "device_found": self.device_found,
            "device_width_mm": round(self.device_width_mm, 1),
            "device_height_mm": round(self.device_height_mm, 1),
            "defects": [d.to_dict() for d in self.defects],
            "scratch_count": len(self.scratches),
            "crack_count": len(self.cracks),
            "damage_score": round(self.damage_score, 3),
            "elapsed_ms": round(self.elapsed_ms, 2),
            "error": self.error,
        }

    @classmethod
    def failed(cls, error: str, elapsed_ms: float = 0.0) -> DamageReport:
        return cls(False, 0.0, 0.0, [], 0.0, elapsed_ms, error)
