"""Pairs barcode scanner events with the units the PLC saw at the scan point.

A fixed-mount scanner reads the label as the unit passes, so its event arrives close to the scan
photo-eye edge: a little before it (the PLC poll lags) or a little after (decode time). Units
claim events in the order they arrived, oldest unclaimed event first, but an event only goes to a
unit when that unit's edge is the nearest one to it: a unit with no read must never take the read
of the unit behind it. Events too old for any unit are dropped and counted.

Units can pass the scan point unseen by the controller (PLC link down, a burst too old to report):
they are decided as missed, but their reads still came in. `discard_before` makes every read up to
the moment those units were known to have passed unclaimable, so the next unit the PLC does report
cannot take one of them as its own: it gets no read (camera fallback or quarantine) instead of a
wrong identity.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Generic, Protocol, TypeVar


class TimedEvent(Protocol):
    @property
    def received_at(self) -> float: ...


E = TypeVar("E", bound=TimedEvent)


class ReadMatcher(Generic[E]):
    def __init__(self, before_s: float, after_s: float, arrival_lag_s: float = 0.03, capacity: int = 256) -> None:
        """`arrival_lag_s`: how late the controller may notice a photo-eye edge (the PLC poll period
        plus margin); a read that came well after a unit's edge waits that long to see whether the
        next unit's edge, noticed late, is nearer to it."""
        self.before_s = before_s
        self.after_s = after_s
        self.arrival_lag_s = arrival_lag_s
        self._events: deque[E] = deque(maxlen=capacity)
        self._arrivals: deque[float] = deque(maxlen=capacity)
        self._changed = asyncio.Condition()
        self._claim_order = asyncio.Lock()
        self.counters = {"matched": 0, "unmatched_events": 0, "units_without_event": 0, "missed_unit_reads": 0}
        # Reads received before this moment may belong to units declared missed: never claimed.
        self._discard_before: float | None = None

    async def add(self, event: E) -> None:
        async with self._changed:
            if self._discard_before is not None and event.received_at < self._discard_before:
                # Received before the cut but fed in after it (the scanner queue lags): same rule.
                self.counters["missed_unit_reads"] += 1
                return
            if len(self._events) == self._events.maxlen:
                self.counters["unmatched_events"] += 1
            self._events.append(event)
            self._changed.notify_all()

    def discard_before(self, moment: float) -> int:
        """Units that passed the scan point before `moment` (time.monotonic()) were declared missed:
        drop every unclaimed read received before it, and any such read still to be fed in, and
        count them. Returns how many were dropped now. Synchronous, so a caller can do it before
        the next unit gets a chance to claim."""
        if self._discard_before is None or moment > self._discard_before:
            self._discard_before = moment
        kept = [event for event in self._events if event.received_at >= moment]
        dropped = len(self._events) - len(kept)
        if dropped:
            self._events.clear()
            self._events.extend(kept)
            self.counters["missed_unit_reads"] += dropped
        return dropped

    async def note_arrival(self, seen_at: float) -> None:
        """Record a unit's scan photo-eye edge as soon as it is seen, before it claims its read."""
        async with self._changed:
            self._arrivals.append(seen_at)
            self._changed.notify_all()

    def _drop_stale(self, seen_at: float) -> None:
        while self._events and self._events[0].received_at < seen_at - self.before_s:
            self._events.popleft()
            self.counters["unmatched_events"] += 1

    def _next_arrival(self, seen_at: float) -> float | None:
        return min((t for t in self._arrivals if t > seen_at), default=None)

    async def claim(self, seen_at: float) -> E | None:
        """The event for a unit seen at `seen_at` (time.monotonic()), or None when none came."""
        async with self._claim_order:  # FIFO: units claim in the order they arrived
            deadline = seen_at + self.after_s
            async with self._changed:
                while True:
                    self._drop_stale(seen_at)
                    wake_at = deadline
                    if self._events and self._events[0].received_at <= deadline:
                        event = self._events[0]
                        at = event.received_at
                        following = self._next_arrival(seen_at)
                        if following is not None and abs(at - following) < abs(at - seen_at):
                            break  # nearer to the next unit: it is that unit's read, and this unit had none
                        settled = at <= seen_at + self.arrival_lag_s or time.monotonic() >= at + self.arrival_lag_s
                        if following is not None or settled:
                            self.counters["matched"] += 1
                            return self._events.popleft()
                        wake_at = at + self.arrival_lag_s
                    remaining = wake_at - time.monotonic()
                    if remaining <= 0 and wake_at >= deadline:
                        break
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=max(remaining, 0.0))
                    except TimeoutError:
                        continue
            self.counters["units_without_event"] += 1
            return None

    def later_arrival_seen(self, seen_at: float) -> bool:
        """Whether a unit behind the one seen at `seen_at` has already reached the photo-eye."""
        return self._next_arrival(seen_at) is not None

    async def claim_triggered(self, triggered_at: float) -> E | None:
        """The read that a host trigger sent at `triggered_at` (time.monotonic()) produced, or None.

        A scanner in trigger mode speaks only when asked, so the match is causal rather than by
        nearest photo-eye edge: the first event at or after the trigger, within `after_s`. Events
        from before it (a late answer to an earlier trigger) are dropped and counted.
        """
        async with self._claim_order:
            deadline = triggered_at + self.after_s
            async with self._changed:
                while True:
                    while self._events and self._events[0].received_at < triggered_at:
                        self._events.popleft()
                        self.counters["unmatched_events"] += 1
                    if self._events and self._events[0].received_at <= deadline:
                        self.counters["matched"] += 1
                        return self._events.popleft()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=remaining)
                    except TimeoutError:
                        continue
            self.counters["units_without_event"] += 1
            return None
