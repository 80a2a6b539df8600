"""Pairs barcode scanner events with the units the PLC saw at the scan point.

A fixed-mount scanner reads the label as the unit passes, so its event arrives close to the scan
photo-eye edge: a little before it (the PLC poll lags) or a little after (decode time). Units are
matched first come, first served: each unit takes the oldest unclaimed event inside its window,
and events too old for any unit are dropped and counted.
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
    def __init__(self, before_s: float, after_s: float, capacity: int = 256) -> None:
        self.before_s = before_s
        self.after_s = after_s
        self._events: deque[E] = deque(maxlen=capacity)
        self._arrived = asyncio.Condition()
        self._claim_order = asyncio.Lock()
        self.counters = {"matched": 0, "unmatched_events": 0, "units_without_event": 0}

    async def add(self, event: E) -> None:
        async with self._arrived:
            if len(self._events) == self._events.maxlen:
                self.counters["unmatched_events"] += 1
            self._events.append(event)
            self._arrived.notify_all()

    def _drop_stale(self, seen_at: float) -> None:
        while self._events and self._events[0].received_at < seen_at - self.before_s:
            self._events.popleft()
            self.counters["unmatched_events"] += 1

    async def claim(self, seen_at: float) -> E | None:
        """The event for a unit seen at `seen_at` (time.monotonic()), or None when none came."""
        async with self._claim_order:  # FIFO: units claim in the order they arrived
            deadline = seen_at + self.after_s
            async with self._arrived:
                while True:
                    self._drop_stale(seen_at)
                    if self._events and self._events[0].received_at <= deadline:
                        self.counters["matched"] += 1
                        return self._events.popleft()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.counters["units_without_event"] += 1
                        return None
                    try:
                        await asyncio.wait_for(self._arrived.wait(), timeout=remaining)
                    except TimeoutError:
                        continue
