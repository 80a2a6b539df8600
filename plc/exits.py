"""Confirm where each unit physically left the belt, from the lane exit photo-eyes.

Every lane has an exit photo-eye (divert_eye_k for lane k, reject_eye for lane 0, the belt end).
A unit that leaves by lane k blocks that eye when its leading edge has travelled from the scan point
to lane k's exit. The PLC only reports eye states, not which unit blocked them, so each blocked edge
is matched to the tracked unit whose encoder-measured travel since the scan point is nearest to that
exit, within `exit_window_mm` plus the sampling slack of both observations (a poll only shows that an
edge or an arrival happened since the previous poll, so a late poll widens the window by the belt
travel since then), preferring a unit that was sent to that lane. The matched lane is compared
with what the PLC accepted for the unit; a unit that travels past the belt end without any eye
seeing it is reported as not seen leaving.

Pure logic on encoder counts and eye samples, no I/O.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from plc.positions import TrackingGeometry

ExitKind = Literal["departed", "not_seen_leaving", "unmatched_exit"]


@dataclass(frozen=True, slots=True)
class ExitEvent:
    """One conclusion about a unit leaving the belt.

    departed: `lane` is where an exit eye saw the unit; `expected` the lanes its accepted divert
    allows (one lane, or two when the divert's outcome was uncertain); `confirmed` whether they agree.
    not_seen_leaving: the unit travelled past the belt end and no exit eye was matched to it.
    unmatched_exit: an exit eye saw something no tracked unit explains (item_id is None).
    `sole`: the eye's edge could only be this unit (no other tracked unit within the window, not
    inferred while the eye stayed blocked): the only kind of departure that settles which of two
    lanes an uncertain divert left a unit in.
    """

    kind: ExitKind
    item_id: int | None
    lane: int | None
    expected: tuple[int, ...]
    travelled_mm: float | None
    encoder_count: int
    blind: bool = False
    sole: bool = False

    @property
    def confirmed(self) -> bool:
        return self.kind == "departed" and self.lane in self.expected

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "item_id": self.item_id,
            "lane": self.lane,
            "expected_lanes": list(self.expected),
            "confirmed": self.confirmed,
            "travelled_mm": None if self.travelled_mm is None else round(self.travelled_mm, 1),
            "encoder_count": self.encoder_count,
            "link_gap": self.blind,
            "sole_candidate": self.sole,
        }


@dataclass
class _InFlight:
    encoder_at_scan: int
    # How far the unit may have travelled past the scan point before that count was sampled.
    slack_mm: float = 0.0
    # With no accepted divert the PLC sends a unit to the belt end: lane 0 until told otherwise.
    expected: frozenset[int] = frozenset({0})
    # The link was down while this unit was on the belt: an exit may have passed unobserved.
    blind: bool = False


@dataclass
class ExitTracker:
    """Feed arrivals, accepted lanes and every poll's eye states; get ExitEvents back."""

    geometry: TrackingGeometry
    belt_end_mm: float
    window_mm: float = 100.0
    # An eye blocked longer than this much belt travel is a jammed chute or a dead sensor, not
    # units passing: it stops confirming anything (its units then alarm as not seen leaving).
    max_blocked_mm: float = 1000.0
    max_units: int = 4096
    _units: collections.OrderedDict[int, _InFlight] = field(default_factory=collections.OrderedDict, repr=False)
    _eyes: dict[int, bool] = field(default_factory=dict, repr=False)
    _blocked_since: dict[int, int] = field(default_factory=dict, repr=False)  # lane -> count at rising edge

    def __post_init__(self) -> None:
        if not self.window_mm > 0:
            raise ValueError("exit window must be > 0 mm")
        last_diverter = max(self.geometry.diverter_mm.values(), default=self.geometry.scan_point_mm)
        if self.belt_end_mm <= last_diverter:
            raise ValueError(f"belt end at {self.belt_end_mm} mm is not downstream of the last diverter")

    @property
    def modulus(self) -> int:
        return 1 << self.geometry.counter_bits

    @property
    def in_flight(self) -> int:
        return len(self._units)

    def exit_mm(self, lane: int) -> float | None:
        """Where along the belt a unit leaving by `lane` blocks that lane's exit eye."""
        return self.belt_end_mm if lane == 0 else self.geometry.diverter_mm.get(lane)

    def on_arrival(self, item_id: int, encoder_count: int, slack_mm: float = 0.0) -> None:
        """`slack_mm`: belt travel since the previous sample, so how late this count may be."""
        if not 0 <= encoder_count < self.modulus:
            raise ValueError(f"encoder count {encoder_count} outside the {self.geometry.counter_bits}-bit range")
        self._units.pop(item_id, None)  # ids wrap on the PLC: a reused id is a new unit
        self._units[item_id] = _InFlight(encoder_count, slack_mm=max(0.0, slack_mm))
        while len(self._units) > self.max_units:
            self._units.popitem(last=False)

    def expect(self, item_id: int, lanes: frozenset[int]) -> None:
        """The lanes the unit may leave by, after the PLC answered a divert for it."""
        unit = self._units.get(item_id)
        if unit is not None and lanes:
            unit.expected = lanes

    def expected(self, item_id: int) -> frozenset[int] | None:
        unit = self._units.get(item_id)
        return unit.expected if unit is not None else None

    def mark_gap(self) -> None:
        """The link dropped: eye edges during the gap are lost, so forget eye states (the first
        sample after reconnecting is a baseline, not an edge) and flag the units on the belt."""
        self._eyes.clear()
        self._blocked_since.clear()
        for unit in self._units.values():
            unit.blind = True

    def _travelled_mm(self, unit: _InFlight, encoder_now: int) -> float | None:
        counts = (encoder_now - unit.encoder_at_scan) % self.modulus
        # More than half the counter range "travelled" is a counter that went backwards (PLC restart).
        if counts > self.modulus // 2:
            return None
        return counts * self.geometry.mm_per_count

    def observe(self, eyes: Mapping[int, bool], encoder_now: int, slack_mm: float = 0.0) -> list[ExitEvent]:
        """One poll: `eyes` maps lane -> exit eye blocked; `slack_mm` the belt travel since the
        previous poll (an edge seen now may be that old). Returns the conclusions it allows."""
        if not 0 <= encoder_now < self.modulus:
            raise ValueError(f"encoder count {encoder_now} outside the {self.geometry.counter_bits}-bit range")
        events: list[ExitEvent] = []
        for lane, blocked in sorted(eyes.items()):
            was = self._eyes.get(lane)
            self._eyes[lane] = bool(blocked)
            if blocked and was is False:
                self._blocked_since[lane] = encoder_now
                events.append(self._match(lane, encoder_now, max(0.0, slack_mm)))
            if blocked and lane in self._blocked_since:
                events.extend(self._follow(lane, encoder_now, max(0.0, slack_mm)))
            elif not blocked:
                self._blocked_since.pop(lane, None)
        events.extend(self._sweep(encoder_now))
        return events

    def _match(self, lane: int, encoder_now: int, edge_slack_mm: float) -> ExitEvent:
        exit_mm = self.exit_mm(lane)
        best: tuple[tuple[bool, float], int, _InFlight, float] | None = None
        candidates = 0
        if exit_mm is not None:
            target = exit_mm - self.geometry.scan_point_mm
            for item_id, unit in self._units.items():
                travelled = self._travelled_mm(unit, encoder_now)
                if travelled is None:
                    continue
                # A late arrival sample makes the unit look short of where it is; a late edge
                # sample makes it look past the exit.
                off = target - travelled
                if not -(self.window_mm + edge_slack_mm) <= off <= self.window_mm + unit.slack_mm:
                    continue
                candidates += 1
                # Among units that could be there, one sent to this lane explains the edge without
                # a fault; only when none could does the edge count against another unit.
                rank = (lane not in unit.expected, abs(off))
                if best is None or rank < best[0]:
                    best = (rank, item_id, unit, travelled)
        if best is None:
            return ExitEvent("unmatched_exit", None, lane, (), None, encoder_now)
        _, item_id, unit, travelled = best
        del self._units[item_id]
        return ExitEvent(
            "departed", item_id, lane, tuple(sorted(unit.expected)), travelled, encoder_now, unit.blind,
            sole=candidates == 1,
        )

    def _follow(self, lane: int, encoder_now: int, edge_slack_mm: float) -> list[ExitEvent]:
        """Units sent to `lane` that reach its exit while the eye is still blocked.

        The eye may never be seen clear between two units leaving by one lane when the gap between
        them is shorter than a poll (or a poll came late). A unit sent there that has reached the
        exit by the encoder while the eye is blocked left that way; only units sent to this lane
        qualify, so a unit that should have gone elsewhere is never confirmed by someone else's edge.
        """
        span_mm = ((encoder_now - self._blocked_since[lane]) % self.modulus) * self.geometry.mm_per_count
        exit_mm = self.exit_mm(lane)
        if exit_mm is None or span_mm > self.max_blocked_mm:
            return []
        target = exit_mm - self.geometry.scan_point_mm
        followed: list[ExitEvent] = []
        for item_id, unit in list(self._units.items()):
            travelled = self._travelled_mm(unit, encoder_now)
            if travelled is None or lane not in unit.expected:
                continue
            # Reached the exit (allowing only for its own late arrival sample), not long past it.
            if target - unit.slack_mm <= travelled <= target + self.window_mm + edge_slack_mm:
                del self._units[item_id]
                followed.append(
                    ExitEvent(
                        "departed", item_id, lane, tuple(sorted(unit.expected)), travelled, encoder_now, unit.blind
                    )
                )
        return followed

    def _sweep(self, encoder_now: int) -> list[ExitEvent]:
        limit = self.belt_end_mm - self.geometry.scan_point_mm + self.window_mm
        lost: list[ExitEvent] = []
        for item_id, unit in list(self._units.items()):
            travelled = self._travelled_mm(unit, encoder_now)
            if travelled is None or travelled > limit + unit.slack_mm:
                del self._units[item_id]
                lost.append(
                    ExitEvent(
                        "not_seen_leaving", item_id, None, tuple(sorted(unit.expected)), travelled, encoder_now,
                        unit.blind,
                    )
                )
        return lost
