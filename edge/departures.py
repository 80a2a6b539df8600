"""Journal where each unit physically left the belt, and alarm when that is not where it was sent.

The PLC link turns the lane exit photo-eyes into ExitEvents (plc/exits.py). This records each one
as a `departed` / `not_seen_leaving` / `unmatched_exit` event in the journal, against the unit the
PLC item id belongs to, and raises:

- `divert_mismatch` (critical): the unit left by a lane other than the one the PLC accepted: a
  diverter that did not fire, or fired on the wrong unit. The unit's published lane is wrong.
- `unit_not_seen_leaving` (critical): the unit passed the belt end and no exit eye saw it: fell off,
  was taken off by hand, or an eye is dead.
- `exit_unmatched` (warning): an exit eye saw something no tracked unit explains.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any, Protocol

from edge.alarms import Alarms
from edge.journal import Journal

log = logging.getLogger("edge.departures")

# PLC item ids wrap at 65535; a decision older than this cannot belong to a unit still on the belt.
_ITEM_ID_HORIZON_S = 600.0


class ExitEventLike(Protocol):
    kind: str
    item_id: int | None
    lane: int | None
    expected: tuple[int, ...]

    @property
    def confirmed(self) -> bool: ...

    def to_dict(self) -> dict[str, object]: ...


async def unit_for_item(journal: Journal, item_id: int) -> str | None:
    """The newest journalled unit with this PLC item id, if it was decided recently."""
    since = time.time() - _ITEM_ID_HORIZON_S

    def query(db: sqlite3.Connection) -> str | None:
        row = db.execute(
            "SELECT unit_id FROM units WHERE item_id = ? AND decided_at >= ? ORDER BY decided_at DESC LIMIT 1",
            (item_id, since),
        ).fetchone()
        return str(row[0]) if row else None

    return await journal.transact(query)


async def record_departure(
    journal: Journal, alarms: Alarms, event: ExitEventLike, *, decision_wait_s: float = 0.0
) -> str | None:
    """Journal one exit conclusion and raise its alarm; returns the unit id it was matched to.

    A unit can leave the belt before its decision is journalled (grading ran late and it rode to
    the reject lane meanwhile): the lookup is retried for up to `decision_wait_s`.
    """
    unit_id = None
    if event.item_id is not None:
        deadline = time.monotonic() + decision_wait_s
        while (unit_id := await unit_for_item(journal, event.item_id)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    data: dict[str, Any] = dict(event.to_dict())
    await journal.add_event(unit_id, event.kind, data)
    who = unit_id or f"PLC item {event.item_id}"
    expected = "/".join(str(lane) for lane in event.expected)
    unit_subject = unit_id or f"item-{event.item_id}"
    if event.kind == "departed" and not event.confirmed:
        code, severity, subject = "divert_mismatch", "critical", unit_subject
        message = f"{who} left by lane {event.lane}, but the PLC accepted lane {expected}: check that lane's diverter"
    elif event.kind == "not_seen_leaving":
        code, severity, subject = "unit_not_seen_leaving", "critical", unit_subject
        message = f"{who} (expected lane {expected}) passed the belt end unseen by any exit eye"
    elif event.kind == "unmatched_exit":
        code, severity, subject = "exit_unmatched", "warning", f"lane-{event.lane}"
        message = f"lane {event.lane} exit eye saw a unit that was not tracked"
    else:
        return unit_id
    await alarms.event(code, message, subject=subject, severity=severity)
    return unit_id


async def departures_loop(plc: Any, journal: Journal, alarms: Alarms, decision_wait_s: float = 10.0) -> None:
    """Record every exit conclusion the PLC link produces (runs until cancelled)."""
    queue = getattr(plc, "departures", None)
    if queue is None:
        return
    pending: set[asyncio.Task[str | None]] = set()
    try:
        while True:
            event = await queue.get()
            # One task each: an event waiting for its unit's decision must not hold up the others.
            task = asyncio.create_task(record_departure(journal, alarms, event, decision_wait_s=decision_wait_s))
            pending.add(task)
            task.add_done_callback(_finished(pending))
    finally:
        for task in pending:
            task.cancel()


def _finished(pending: set[asyncio.Task[str | None]]) -> Any:
    def done(task: asyncio.Task[str | None]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording a departure failed", exc_info=task.exception())

    return done
