"""Alarms: raised and cleared conditions, published durably on the `alarms` topic.

An alarm is keyed by a code plus an optional subject (a device, a lane). Raising an alarm that is
already raised only counts it, so a flapping input does not flood the topic.

Most alarms are raised again from live state after a restart (a device still lost, a lane still
full). An alarm whose condition cannot be seen again after a restart (order_unanswered: the expired
orders are final) is kept in the journal's `meta` table, written in the same transaction as its
raised or cleared message and on every further count, and taken up again by `restore` at start-up.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from edge.contract import Envelope, Topics, encode
from edge.journal import Journal, Publication

log = logging.getLogger("edge.alarms")


@dataclass
class ActiveAlarm:
    code: str
    subject: str
    message: str
    severity: str
    count: int = 1
    # What the alarm is about, one entry per occurrence (e.g. the decisions of expired orders).
    items: list[str] = field(default_factory=list)


# An active alarm lists at most this many items in its clearing message; the count covers all.
MAX_LISTED_ITEMS = 20
# Alarms whose raised state survives a restart (see the module docstring).
PERSISTED_CODES = frozenset({"order_unanswered"})
META_PREFIX = "alarm:"


def _meta_key(code: str, subject: str) -> str:
    return f"{META_PREFIX}{code}:{subject}"


def _save(db: sqlite3.Connection, alarm: ActiveAlarm) -> None:
    db.execute(
        "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (_meta_key(alarm.code, alarm.subject), json.dumps(asdict(alarm))),
    )


def _forget(db: sqlite3.Connection, code: str, subject: str) -> None:
    db.execute("DELETE FROM meta WHERE key=?", (_meta_key(code, subject),))


def _saved_alarm(value: str) -> ActiveAlarm:
    """An alarm as `_save` wrote it; ValueError when the stored text is not one."""
    try:
        fields = json.loads(value)
        alarm = ActiveAlarm(
            code=str(fields["code"]), subject=str(fields["subject"]), message=str(fields["message"]),
            severity=str(fields["severity"]), count=int(fields["count"]),
            items=[str(item) for item in fields["items"]][-MAX_LISTED_ITEMS:],
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a saved alarm: {exc}") from exc
    if alarm.code not in PERSISTED_CODES or alarm.count < 1:
        raise ValueError(f"not a saved alarm: code {alarm.code!r}, count {alarm.count}")
    return alarm


class Alarms:
    def __init__(self, journal: Journal, envelope: Envelope, topics: Topics) -> None:
        self.journal = journal
        self.envelope = envelope
        self.topics = topics
        self.active: dict[tuple[str, str], ActiveAlarm] = {}
        self.raised_total: Counter[str] = Counter()

    async def restore(self) -> int:
        """Take up the alarms a previous run left raised (PERSISTED_CODES); returns how many. Their
        raised message was committed then, so nothing is published: a further occurrence counts into
        them and their clearing condition clears them, as if the daemon had never stopped."""

        def load(db: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = db.execute("SELECT key, value FROM meta WHERE key LIKE ? ORDER BY key", (f"{META_PREFIX}%",))
            return rows.fetchall()

        restored = 0
        for key, value in await self.journal.transact(load):
            try:
                alarm = _saved_alarm(value)
            except ValueError as exc:
                # A damaged record must not stop the controller: say so; the row stays for a person.
                log.error("journal meta %s: %s; ignored", key, exc)
                continue
            self.active[(alarm.code, alarm.subject)] = alarm
            restored += 1
            log.warning("ALARM %s%s still raised from before the restart (%d so far)", alarm.code,
                        f" [{alarm.subject}]" if alarm.subject else "", alarm.count)
        return restored

    async def raise_(
        self, code: str, message: str, *, subject: str = "", severity: str = "warning", item: str | None = None,
    ) -> None:
        """Raise `code` for `subject`, or count it when already raised; `item` names what this
        occurrence is about (listed, up to MAX_LISTED_ITEMS, when the alarm clears)."""
        key = (code, subject)
        self.raised_total[code] += 1
        alarm = self.active.get(key)
        repeat = alarm is not None
        if alarm is None:
            alarm = self.active[key] = ActiveAlarm(code, subject, message, severity, count=0)
        alarm.count += 1
        if item is not None:
            alarm.items.append(item)
            del alarm.items[:-MAX_LISTED_ITEMS]
        if repeat:
            if code in PERSISTED_CODES:
                # Snapshot taken now: journal calls run in the order they are made, so a clear made
                # after this count also lands after it.
                snapshot = ActiveAlarm(**{**asdict(alarm), "items": list(alarm.items)})
                await self.journal.transact(lambda db: _save(db, snapshot))
            return
        log.warning("ALARM %s%s: %s", code, f" [{subject}]" if subject else "", message)
        await self._publish("raised", code, subject, message, severity, keep=alarm)

    async def clear(self, code: str, *, subject: str = "", message: str = "") -> None:
        alarm = self.active.pop((code, subject), None)
        if alarm is None:
            return
        log.info("alarm cleared %s%s", code, f" [{subject}]" if subject else "")
        await self._publish("cleared", code, subject, message or alarm.message, alarm.severity,
                            forget=code in PERSISTED_CODES)

    async def event(self, code: str, message: str, *, subject: str = "", severity: str = "warning") -> None:
        """A one-off alarm that needs no clearing (e.g. one unit quarantined for a bad read)."""
        self.note_event(code, message, subject=subject)
        await self._publish("event", code, subject, message, severity)

    def publication(self, state: str, code: str, subject: str, message: str, severity: str) -> Publication:
        """The alarm message, for a caller that enqueues it in its own journal transaction (so the
        alarm and the state change it announces are committed together); then call note_event."""
        payload = self.envelope.build(
            "alarm",
            {"state": state, "code": code, "subject": subject or None, "severity": severity, "message": message},
        )
        return Publication(self.topics.alarms, encode(payload), qos=1)

    def note_event(self, code: str, message: str, *, subject: str = "") -> None:
        """Count and log an event alarm whose message was committed through `publication`."""
        self.raised_total[code] += 1
        log.warning("ALARM %s%s: %s", code, f" [{subject}]" if subject else "", message)

    async def order_unanswered(self, cell: str, decision_id: str, unit_id: str, waited_s: float, sends: int) -> None:
        """An order of `cell` expired unanswered. One active alarm per cell, however many orders
        expire: raised with the first, counting (and listing) the rest until the cell answers again."""
        alarm = self.active.get(("order_unanswered", cell))
        if alarm is not None:
            log.warning("cell %s: order %s (unit %s) expired too: %d unanswered so far", cell, decision_id, unit_id,
                        alarm.count + 1)
        # Kept in the journal (PERSISTED_CODES): after a restart further expiries count into it.
        await self.raise_(
            "order_unanswered",
            f"cell {cell} did not finish decision {decision_id} (unit {unit_id}) within {waited_s:.0f} s after "
            f"{sends} send(s): no longer re-sent; a person must see to the unit. Further orders of this cell that "
            "expire are counted on this alarm and marked expired in the journal until the cell answers again",
            subject=cell,
            severity="critical",
            item=decision_id,
        )

    async def cell_answered(self, cell: str) -> None:
        """`cell` sent a valid state message: it is answering again, so its order_unanswered clears,
        naming every order that expired meanwhile."""
        alarm = self.active.get(("order_unanswered", cell))
        if alarm is None:
            return
        listed = ", ".join(alarm.items)
        more = alarm.count - len(alarm.items)
        await self.clear(
            "order_unanswered",
            subject=cell,
            message=f"cell {cell} answers again; {alarm.count} order(s) expired unanswered meanwhile "
            f"(decisions {listed}{f' and {more} more' if more > 0 else ''}): each unit is `expired` in the journal",
        )

    async def _publish(
        self, state: str, code: str, subject: str, message: str, severity: str, *,
        keep: ActiveAlarm | None = None, forget: bool = False,
    ) -> None:
        """Enqueue the alarm message; for a persisted alarm, save (`keep`) or delete (`forget`) its
        record in the same transaction, so the journal never says raised without the message."""
        publication = self.publication(state, code, subject, message, severity)
        if not forget and (keep is None or keep.code not in PERSISTED_CODES):
            await self.journal.enqueue([publication])
            return
        snapshot = ActiveAlarm(**{**asdict(keep), "items": list(keep.items)}) if keep is not None else None

        def body(db: sqlite3.Connection) -> None:
            Journal._enqueue(db, [publication], time.time())
            if snapshot is not None:
                _save(db, snapshot)
            else:
                _forget(db, code, subject)

        await self.journal.transact(body)
        self.journal.outbox_changed.set()
