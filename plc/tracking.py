"""Turn successive samples of the PLC's scan_item_id register into unit arrivals.

The PLC numbers units 1..65535 and wraps to 1 (0 means "nothing scanned since power-up"). We
only sample the register every poll, so several units can pass between two samples, the link can
drop for a while, and the PLC can restart and count from the beginning again. Pure logic, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

ID_MAX = 0xFFFF


def next_id(item_id: int) -> int:
    """The id after `item_id` on the 1..65535 ring."""
    return 1 if item_id >= ID_MAX else item_id + 1


def forward_distance(old: int, new: int) -> int:
    """Steps from id `old` to id `new` on the 1..65535 ring (0 when equal)."""
    return (new - old) % ID_MAX


@dataclass
class ArrivalTracker:
    """Feed each polled scan_item_id to `update`; it returns the ids that arrived since the last.

    max_burst caps how many ids one update may report: anything older than that burst is
    counted as missed instead, since a unit that passed the scan point that long ago cannot
    be graded and diverted in time anyway (it rides to the reject lane).

    max_jump is the largest forward step believed at all. On a ring every step is "forward",
    so a counter that went backwards (PLC restart, program download) looks like a huge forward
    step; anything beyond max_jump (about a minute of a fast line) is treated as that. Either way
    the units behind such a jump (the ones the restarted PLC already scanned, or the ones that really
    passed) were never reported: `jumps` counts them and `unreported_jumps` queues the (from, to)
    values until the daemon takes them, to say how many units are unaccounted for.
    """

    max_burst: int = 16
    max_jump: int = 1024
    last: int | None = None
    # The very first value seen: units up to it passed before this process was watching.
    baseline: int | None = None
    missed: int = 0
    resyncs: int = 0
    jumps: int = 0
    # Bounded: a PLC flapping for hours must not grow it; the count in `jumps` stays exact.
    unreported_jumps: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=64), repr=False)
    _gap_pending: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.max_burst <= self.max_jump < ID_MAX:
            raise ValueError("need 1 <= max_burst <= max_jump < 65535")

    def mark_gap(self) -> None:
        """The link was down: ids that appear next passed unobserved, so count, don't report, them.

        A unit that reached the scan point while we were blind has no scanner/scale/camera data
        we can trust to be its own; reporting it late would invite a wrong-lane decision.
        """
        self._gap_pending = True

    def update(self, value: int) -> tuple[list[int], int]:
        """Return (new ids in arrival order, ids skipped in this step)."""
        if not isinstance(value, int) or not 0 <= value <= ID_MAX:
            raise ValueError(f"scan_item_id {value!r} outside 0..65535")
        last, gap = self.last, self._gap_pending
        self._gap_pending = False
        self.last = value

        if last is None:
            # First sample ever: whatever is there was scanned before we were watching.
            self.baseline = value
            return [], 0
        if value == 0:
            if last != 0:
                self.resyncs += 1  # PLC restarted and has scanned nothing yet
            return [], 0
        # After a power-up (last == 0) ids restart at 1, so the distance is the value itself.
        dist = value if last == 0 else forward_distance(last, value)
        if dist == 0:
            return [], 0
        if dist > self.max_jump:
            # Went backwards: the PLC restarted and already scanned something. We cannot know
            # how many, and guessing would flood the pipeline with phantom arrivals.
            self.resyncs += 1
            self.jumps += 1
            self.unreported_jumps.append((last, value))
            return [], 0
        if gap:
            self.missed += dist
            return [], dist
        reported = min(dist, self.max_burst)
        skipped = dist - reported
        self.missed += skipped
        ids = [(value - i - 1) % ID_MAX + 1 for i in range(reported - 1, -1, -1)]
        return ids, skipped
