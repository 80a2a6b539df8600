"""Result types of the damage check: plain data, JSON-ready, no numpy in the public fields."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

DefectKind = Literal["scratch", "crack", "dent", "chip", "missing_part", "oversize"]
SURFACE_KINDS: frozenset[str] = frozenset({"scratch", "crack"})
# "oversize": the outline is larger than the catalog's (a swollen battery, a bent housing, something
# stuck to the unit, or not the catalogued item): like a missing part, the outline does not match.
OUTLINE_KINDS: frozenset[str] = frozenset({"dent", "chip", "missing_part", "oversize"})

Point = tuple[float, float]


@dataclass(frozen=True)
class Defect:
    """One finding. Position is the defect's centre in mm from the device's top-left corner in the
    canonical (rectified) view; `length_mm` is the segment length for a scratch, the estimated total
    path length of all arms for a crack, and the extent along the outline for dents, chips and
    missing parts (whose `width_mm` is then the depth into the device). `frame_px` and `outline_px`
    locate it in the original frame (for the evidence image)."""

    kind: DefectKind
    x_mm: float
    y_mm: float
    length_mm: float
    width_mm: float
    area_mm2: float
    confidence: float
    frame_px: Point = (0.0, 0.0)
    outline_px: tuple[Point, ...] = ()

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
    the frame itself was unusable; a usable frame without a unit has `device_found` False only.

    `device_corners_px` is the located unit's rectangle in the frame (top-left, top-right,
    bottom-right, bottom-left of the canonical view); `label_regions_px` are printed labels found
    on the surface (excluded from inspection, where the barcode reader looks first)."""

    device_found: bool
    device_width_mm: float
    device_height_mm: float
    defects: list[Defect] = field(default_factory=list)
    damage_score: float = 0.0
    elapsed_ms: float = 0.0
    error: str | None = None
    device_angle_deg: float = 0.0
    device_corners_px: tuple[Point, ...] = ()
    label_regions_px: tuple[tuple[int, int, int, int], ...] = ()
    expected_size_mm: tuple[float, float] | None = None

    @property
    def scratches(self) -> list[Defect]:
        return [d for d in self.defects if d.kind == "scratch"]

    @property
    def cracks(self) -> list[Defect]:
        return [d for d in self.defects if d.kind == "crack"]

    @property
    def dents(self) -> list[Defect]:
        """Dents and chips on the outline (they grade alike)."""
        return [d for d in self.defects if d.kind in ("dent", "chip")]

    @property
    def missing_parts(self) -> list[Defect]:
        """Outlines that do not match the unit: a missing part, or an outline beyond the catalog's."""
        return [d for d in self.defects if d.kind in ("missing_part", "oversize")]

    def to_dict(self) -> dict[str, object]:
        return {
            "device_found": self.device_found,
            "device_width_mm": round(self.device_width_mm, 1),
            "device_height_mm": round(self.device_height_mm, 1),
            "device_angle_deg": round(self.device_angle_deg, 1),
            "expected_size_mm": [round(v, 1) for v in self.expected_size_mm] if self.expected_size_mm else None,
            "defects": [d.to_dict() for d in self.defects],
            "scratch_count": len(self.scratches),
            "crack_count": len(self.cracks),
            "dent_count": len(self.dents),
            "missing_part_count": len(self.missing_parts),
            "damage_score": round(self.damage_score, 3),
            "elapsed_ms": round(self.elapsed_ms, 2),
            "error": self.error,
        }

    def with_defects(self, defects: list[Defect], damage_score: float) -> DamageReport:
        return replace(self, defects=defects, damage_score=damage_score)

    @classmethod
    def failed(cls, error: str, elapsed_ms: float = 0.0) -> DamageReport:
        return cls(False, 0.0, 0.0, [], 0.0, elapsed_ms, error)
