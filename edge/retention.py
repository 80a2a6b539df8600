"""Journal retention: keep the decision journal bounded without ever dropping open work.

Only units whose story is over are pruned: state `complete` (their cell said FINISHED or FAILED)
or `lane_unknown` (recovered after a crash, handed to a person), with no unsent outbox message.
A unit with an open order is kept however old it is, because deleting it would lose a decision.
Pruned: units older than `retention_days`, then the oldest beyond `max_units`, with their audit
events and orders; outbox rows already acknowledged by the broker go after a day. SQLite reuses
the freed pages, so the file stops growing once retention is reached; the WAL is truncated after
each pass.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass

from edge.journal import Journal

log = logging.getLogger("edge.retention")

FINISHED_UNIT_STATES = ("complete", "lane_unknown")
SENT_OUTBOX_KEEP_S = 86400.0
BATCH = 5000


@dataclass(frozen=True)
class Pruned:
    units: int
    events: int
    orders: int
    outbox: int


def prune(db: sqlite3.Connection, *, retention_days: float, max_units: int, now: float | None = None) -> Pruned:
    """One retention pass inside the caller's transaction."""
    now = time.time() if now is None else now
    cutoff = now - retention_days * 86400.0
    done = ",".join("?" * len(FINISHED_UNIT_STATES))
    old = [r[0] for r in db.execute(
        f"SELECT unit_id FROM units WHERE state IN ({done}) AND decided_at < ? ORDER BY decided_at LIMIT ?",
        (*FINISHED_UNIT_STATES, cutoff, BATCH),
    )]
    total = db.execute("SELECT count(*) FROM units").fetchone()[0]
    excess = max(0, total - len(old) - max_units)
    if excess:
        old += [r[0] for r in db.execute(
            f"SELECT unit_id FROM units WHERE state IN ({done}) AND decided_at >= ? ORDER BY decided_at LIMIT ?",
            (*FINISHED_UNIT_STATES, cutoff, min(excess, BATCH)),
        )]
    events = orders = 0
    for unit_id in old:
        events += db.execute("DELETE FROM events WHERE unit_id=?", (unit_id,)).rowcount
        orders += db.execute("DELETE FROM orders WHERE unit_id=?", (unit_id,)).rowcount
        db.execute("DELETE FROM units WHERE unit_id=?", (unit_id,))
    outbox = db.execute(
        "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (now - SENT_OUTBOX_KEEP_S,)
    ).rowcount
    return Pruned(len(old), events, orders, outbox)


async def prune_once(journal: Journal, *, retention_days: float, max_units: int) -> Pruned:
    result = await journal.transact(lambda db: prune(db, retention_days=retention_days, max_units=max_units))
    if result.units or result.outbox:
        await journal.checkpoint()
        log.info("journal retention: pruned %d unit(s), %d event(s), %d order(s), %d sent message(s)",
                 result.units, result.events, result.orders, result.outbox)
    return result


async def retention_loop(journal: Journal, *, retention_days: float, max_units: int, interval_s: float) -> None:
    while True:
        try:
            await prune_once(journal, retention_days=retention_days, max_units=max_units)
        except sqlite3.Error as exc:
            # Retention is housekeeping: a failed pass must not take the controller down.
            log.error("journal retention pass failed: %s", exc)
        await asyncio.sleep(interval_s)
