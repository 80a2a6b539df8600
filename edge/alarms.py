"""Alarms: raised and cleared conditions, published durably on the `alarms` topic.

An alarm is keyed by a code plus an optional subject (a device, a lane). Raising an alarm that is
already raised only counts it, so a flapping input does not flood the topic.

Most alarms are raised again from live state after a restart (a device still lost, a lane still
full). An alarm whose condition cannot be seen again after a restart (order_unanswered: the expired
orders are final) is kept in the journal's `meta` table, written in the same transaction as its
raised or cleared message and on every further count, and taken up again by `restore` at start-up.
order_unanswered is counted in the very transaction that expires the orders (`expire_unanswered`),
so no crash or stop can leave an expiry on record without its alarm.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from edge.contract import Envelope, Topics, encode
from edge.journal import ExpiredOrder, Journal, Publication

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
    # order_unanswered only: how many of `count` were cancellations, and their decisions (the unit of
    # a withdrawn order keeps its corrected decision, so they call for a different check).
    cancellations: int = 0
    cancelled_items: list[str] = field(default_factory=list)

    def snapshot(self) -> ActiveAlarm:
        """A copy with its own lists, to be written by the journal thread while this one changes."""
        return ActiveAlarm(**asdict(self))

    def count_expired(self, order: ExpiredOrder) -> None:
        """Count one expired order (or cancellation) on this order_unanswered alarm."""
        self.count += 1
        listed = self.cancelled_items if order.cancellation else self.items
        self.cancellations += order.cancellation
        listed.append(order.decision_id)
        del listed[:-MAX_LISTED_ITEMS]


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
            # Absent in records written before cancellations were told apart.
            cancellations=int(fields.get("cancellations", 0)),
            cancelled_items=[str(item) for item in fields.get("cancelled_items", [])][-MAX_LISTED_ITEMS:],
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a saved alarm: {exc}") from exc
    if alarm.code not in PERSISTED_CODES or alarm.count < 1 or not 0 <= alarm.cancellations <= alarm.count:
        raise ValueError(f"not a saved alarm: code {alarm.code!r}, count {alarm.count}, "
                         f"cancellations {alarm.cancellations}")
    return alarm


def unanswered_message(order: ExpiredOrder) -> str:
    """The raised text of order_unanswered, from the expiry that raised it."""
    sent = f"within {order.waited_s:.0f} s after {order.sent_count} send(s): no longer re-sent"
    if order.cancellation:
        what = (f"cell {order.cell} did not answer the cancellation of decision {order.decision_id} (unit "
                f"{order.unit_id}) {sent}; check that the cell did not pick the withdrawn unit, which keeps its "
                "corrected decision")
    else:
        what = (f"cell {order.cell} did not finish decision {order.decision_id} (unit {order.unit_id}) {sent}; "
                "a person must see to the unit")
    return (f"{what}. Further orders or cancellations of this cell that expire are counted on this alarm until "
            "the cell answers again")


def answered_again_message(alarm: ActiveAlarm) -> str:
    """The clearing text of order_unanswered: what expired meanwhile, orders and cancellations apart."""

    def decisions(listed: list[str], total: int) -> str:
        more = total - len(listed)
        return f"decisions {', '.join(listed)}{f' and {more} more' if more > 0 else ''}"

    orders = alarm.count - alarm.cancellations
    parts = []
    if orders:
        parts.append(f"{orders} order(s) expired unanswered meanwhile ({decisions(alarm.items, orders)}): "
                     "each unit is `expired` in the journal")
    if alarm.cancellations:
        parts.append(f"{alarm.cancellations} cancellation(s) went unanswered meanwhile "
                     f"({decisions(alarm.cancelled_items, alarm.cancellations)}): check that the cell did not pick "
                     "those units, which keep their corrected decisions")
    return f"cell {alarm.subject} answers again; " + "; ".join(parts)


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
                snapshot = alarm.snapshot()
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

    async def expire_unanswered(self, expiry_s: dict[str, float], default_s: float) -> list[ExpiredOrder]:
        """Expire what the cells left unanswered (Journal.expire_unanswered_orders) and count each on
        its cell's order_unanswered alarm, in the same journal transaction: the expiries are final, so
        an alarm committed apart from them would be lost for good by a crash or stop in between. One
        alarm per cell, raised with the first expiry, counting (and listing) the rest until the cell
        answers again."""
        counted: dict[str, tuple[ActiveAlarm, bool]] = {}

        def count_on_alarms(db: sqlite3.Connection, expired: list[ExpiredOrder]) -> None:
            # The journal's record, not self.active, is what this transaction builds on: clears are
            # journalled in call order, so it is exact here on the journal thread.
            counted.clear()
            publications = []
            for order in expired:
                if order.cell not in counted:
                    counted[order.cell] = (self._saved(db, "order_unanswered", order.cell), False)
                alarm, raised = counted[order.cell]
                if alarm is None:
                    alarm = ActiveAlarm("order_unanswered", order.cell, unanswered_message(order), "critical", count=0)
                    raised = True
                    # Envelope.build is safe off the event loop: its seq counter is itertools.count.
                    publications.append(self.publication("raised", alarm.code, alarm.subject, alarm.message,
                                                         alarm.severity))
                alarm.count_expired(order)
                counted[order.cell] = (alarm, raised)
            Journal._enqueue(db, publications, time.time())
            for alarm, _ in counted.values():
                _save(db, alarm)

        expired = await self.journal.expire_unanswered_orders(expiry_s, default_s, also=count_on_alarms)
        if not expired:
            return expired
        self.raised_total["order_unanswered"] += len(expired)
        for cell, (alarm, raised) in counted.items():
            key = ("order_unanswered", cell)
            if raised:
                log.warning("ALARM order_unanswered [%s]: %s", cell, alarm.message)
                self.journal.outbox_changed.set()
            elif key not in self.active:
                # The cell answered while this was in the journal: its clearing, journalled after
                # this transaction, has already taken the alarm off.
                continue
            else:
                log.warning("cell %s: %d more expired unanswered, %d so far", cell,
                            sum(order.cell == cell for order in expired), alarm.count)
            self.active[key] = alarm
        return expired

    @staticmethod
    def _saved(db: sqlite3.Connection, code: str, subject: str) -> ActiveAlarm | None:
        row = db.execute("SELECT value FROM meta WHERE key=?", (_meta_key(code, subject),)).fetchone()
        if row is None:
            return None
        try:
            return _saved_alarm(row[0])
        except ValueError as exc:
            log.error("journal meta %s: %s; raised anew", _meta_key(code, subject), exc)
            return None

    async def cell_answered(self, cell: str) -> None:
        """`cell` sent a valid state message: it is answering again, so its order_unanswered clears,
        naming every order and cancellation that expired meanwhile."""
        alarm = self.active.get(("order_unanswered", cell))
        if alarm is None:
            return
        await self.clear("order_unanswered", subject=cell, message=answered_again_message(alarm))

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
        snapshot = keep.snapshot() if keep is not None else None

        def body(db: sqlite3.Connection) -> None:
            Journal._enqueue(db, [publication], time.time())
            if snapshot is not None:
                _save(db, snapshot)
            else:
                _forget(db, code, subject)

        await self.journal.transact(body)
        self.journal.outbox_changed.set()
