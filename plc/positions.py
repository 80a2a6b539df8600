"""Controller-side unit tracking by encoder count, to refuse diverts that can no longer make it.

The PLC stays the one that fires the diverter (it tracks each unit by its own encoder and acts when
the unit is at the paddle). This is a second opinion on the controller: each unit's encoder count at
the scan point is remembered, and before a divert request goes out we check that the unit is still
far enough upstream of its diverter. A request that would arrive late is refused locally, so the
unit rides to the reject lane on purpose instead of by a race with the paddle.

Pure arithmetic on counts; no I/O. The encoder register wraps (uint32 by default), so every
distance is taken modulo the counter's range.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["in_time", "too_late", "unknown_item", "invalid_lane"]


@dataclass(frozen=True, slots=True)
class TrackingGeometry:
    """Where things are along the belt, in mm, and what one encoder count is worth."""

    mm_per_count: float
    scan_point_mm: float
    diverter_mm: Mapping[int, float]
    margin_mm: float = 50.0
    counter_bits: int = 32

    def __post_init__(self) -> None:
        if not self.mm_per_count > 0:
            raise ValueError("mm_per_count must be > 0")
        if self.margin_mm < 0:
            raise ValueError("margin_mm must be >= 0")
        if self.counter_bits not in (16, 32):
            raise ValueError("counter_bits must be 16 or 32")
        for lane, pos in self.diverter_mm.items():
            if lane < 1:
                raise ValueError(f"lane {lane}: lane 0 is the belt end and has no diverter")
            if pos <= self.scan_point_mm:
                raise ValueError(f"lane {lane}: diverter at {pos} mm is not downstream of the scan point")

    def counts_to_diverter(self, lane: int) -> float | None:
        pos = self.diverter_mm.get(lane)
        if pos is None:
            return None
        return (pos - self.scan_point_mm) / self.mm_per_count


@dataclass
class PositionTracker:
    """Encoder count at the scan point per unit, and the in-time check for a divert request."""

    geometry: TrackingGeometry
    max_units: int = 4096
    _at_scan: collections.OrderedDict[int, int] = field(default_factory=collections.OrderedDict, repr=False)

    @property
    def modulus(self) -> int:
        return 1 << self.geometry.counter_bits

    def on_arrival(self, item_id: int, encoder_count: int) -> None:
        """Remember where the belt was when unit `item_id` was seen at the scan point."""
        if not 0 <= encoder_count < self.modulus:
            raise ValueError(f"encoder count {encoder_count} outside the {self.geometry.counter_bits}-bit range")
        # Ids wrap on the PLC, so a reused id replaces its old entry instead of matching it.
        self._at_scan.pop(item_id, None)
        self._at_scan[item_id] = encoder_count
        while len(self._at_scan) > self.max_units:
            self._at_scan.popitem(last=False)

    def forget(self, item_id: int) -> None:
        self._at_scan.pop(item_id, None)

    def travelled_counts(self, item_id: int, encoder_now: int) -> int | None:
        """Counts the belt moved since `item_id` was seen at the scan point (wrap-safe)."""
        start = self._at_scan.get(item_id)
        if start is None:
            return None
        return (encoder_now - start) % self.modulus

    def remaining_mm(
        self,
        item_id: int,
        lane: int,
        encoder_now: int,
        *,
        age_s: float = 0.0,
        speed_mm_s: float | None = None,
        lead_s: float = 0.0,
        poll_period_s: float = 0.0,
    ) -> float | None:
        """Worst-case distance left between the unit and its diverter when the PLC gets the request.

        encoder_now is the last polled count, age_s how old that poll is. The unit may have tripped
        the scan eye up to one poll period before we saw the new id, and the request needs lead_s to
        reach the PLC; both are charged at the belt speed. Without a speed only the counts are used.
        """
        span = self.geometry.counts_to_diverter(lane)
        travelled = self.travelled_counts(item_id, encoder_now)
        if span is None or travelled is None:
            return None
        speed = speed_mm_s if speed_mm_s is not None and speed_mm_s > 0 else 0.0
        uncertain_mm = speed * (max(age_s, 0.0) + max(lead_s, 0.0) + max(poll_period_s, 0.0))
        return (span - travelled) * self.geometry.mm_per_count - uncertain_mm - self.geometry.margin_mm

    def check(
        self,
        item_id: int,
        lane: int,
        encoder_now: int,
        *,
        age_s: float = 0.0,
        speed_mm_s: float | None = None,
        lead_s: float = 0.0,
        poll_period_s: float = 0.0,
    ) -> Verdict:
        if lane not in self.geometry.diverter_mm:
            return "invalid_lane"
        if not 0 <= encoder_now < self.modulus:
            return "too_late"  # a count we cannot place is no basis for a divert
        remaining = self.remaining_mm(
            item_id,
            lane,
            encoder_now,
            age_s=age_s,
            speed_mm_s=speed_mm_s,
            lead_s=lead_s,
            poll_period_s=poll_period_s,
        )
        if remaining is None:
            return "unknown_item"
        # A distance "travelled" beyond the whole belt is a wrapped-backwards counter (PLC restart):
        # the unit's position is unknown, so it is too late by definition.
        return "in_time" if remaining > 0 else "too_late"
