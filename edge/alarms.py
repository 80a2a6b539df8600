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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from edge.contract import Envelope, Topics, encode
from edge.journal import (
    ExpiredOrder,
    Journal,
    Publication,
    expire_orders,
    orders_due_to_expire,
    read_meta,
    write_meta,
)

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
    write_meta(db, _meta_key(alarm.code, alarm.subject), json.dumps(asdict(alarm)))


def _forget(db: sqlite3.Connection, code: str, subject: str) -> None:
    write_meta(db, _meta_key(code, subject), None)


def _load(db: sqlite3.Connection, code: str, subject: str) -> ActiveAlarm | None:
    """The journal's record of a raised persisted alarm; None when there is none (or it is damaged)."""
    value = read_meta(db, _meta_key(code, subject))
    if value is None:
        return None
    try:
        return _saved_alarm(value)
    except ValueError as exc:
        log.error("journal meta %s: %s; raised anew", _meta_key(code, subject), exc)
        return None


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
        # Expiry passes in flight, and the cells that answered meanwhile while they had no alarm: one
        # the pass raises is cleared right after it (see expire_unanswered).
        self._expiring = 0
        self._answered_while_expiring: set[str] = set()

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

    async def raise_(self, code: str, message: str, *, subject: str = "", severity: str = "warning") -> None:
        """Raise `code` for `subject`, or count it when already raised."""
        if code in PERSISTED_CODES:
            # Their record must be written with what raises them (expire_unanswered), never apart.
            raise ValueError(f"{code} is raised only with the journal change it announces")
        key = (code, subject)
        self.raised_total[code] += 1
        alarm = self.active.get(key)
        if alarm is not None:
            alarm.count += 1
            return
        self.active[key] = ActiveAlarm(code, subject, message, severity)
        log.warning("ALARM %s%s: %s", code, f" [{subject}]" if subject else "", message)
        await self._publish("raised", code, subject, message, severity)

    def adopt(self, code: str, message: str, *, subject: str = "", severity: str = "warning") -> None:
        """Hold an alarm an earlier run raised (its `raised` message already journalled) as active,
        without publishing it again, so that this run's `clear` publishes its clearing."""
        self.active.setdefault((code, subject), ActiveAlarm(code, subject, message, severity))

    async def clear(self, code: str, *, subject: str = "", message: str = "") -> None:
        alarm = self.active.pop((code, subject), None)
        if alarm is None:
            return
        log.info("alarm cleared %s%s", code, f" [{subject}]" if subject else "")
        if code in PERSISTED_CODES:
            await self._clear_persisted(code, subject, lambda saved: message or saved.message)
        else:
            await self._publish("cleared", code, subject, message or alarm.message, alarm.severity)

    async def event(self, code: str, message: str, *, subject: str = "", severity: str = "warning") -> None:
        """A one-off alarm that needs no clearing (e.g. one unit quarantined for a bad read)."""
        self.note_event(code, message, subject=subject)
        await self._publish("event", code, subject, message, severity)

    def publication(
        self, state: str, code: str, subject: str, message: str, severity: str, seq: int | None = None,
    ) -> Publication:
        """The alarm message, for a caller that enqueues it in its own journal transaction (so the
        alarm and the state change it announces are committed together); then call note_event.
        Built on the journal thread, it takes a `seq` reserved on the loop when the transaction was
        queued (Envelope.take_seq), so seq rises in outbox order."""
        payload = self.envelope.build(
            "alarm",
            {"state": state, "code": code, "subject": subject or None, "severity": severity, "message": message},
            seq=seq,
        )
        return Publication(self.topics.alarms, encode(payload), qos=1)

    def note_event(self, code: str, message: str, *, subject: str = "") -> None:
        """Count and log an event alarm whose message was committed through `publication`."""
        self.raised_total[code] += 1
        log.warning("ALARM %s%s: %s", code, f" [{subject}]" if subject else "", message)

    async def expire_unanswered(self, expiry_s: dict[str, float], default_s: float) -> list[ExpiredOrder]:
        """Expire what the cells left unanswered (journal.expire_orders) and count each on its cell's
        order_unanswered alarm, in the same journal transaction: the expiries are final, so an alarm
        committed apart from them would be lost for good by a crash or stop in between. One alarm per
        cell, raised with the first expiry, counting (and listing) the rest until the cell answers."""
        now = time.time()
        self._expiring += 1
        try:
            expired, counted, unraised = await self.journal.transact(
                lambda db: self._expire_and_count(db, expiry_s, default_s, now, {})
            )
            if unraised:
                # A cell's first expiry raises its alarm, a message built on the journal thread: its
                # seq is taken here, on the loop, so the expiry goes in a second transaction. A seq
                # left unused (the cell answered in between) is a gap, never a step back.
                seqs = {cell: self.envelope.take_seq() for cell in unraised}
                more, raised, _ = await self.journal.transact(
                    lambda db: self._expire_and_count(db, expiry_s, default_s, now, seqs)
                )
                expired += more
                counted.update(raised)
        finally:
            self._expiring -= 1
        answered = set(self._answered_while_expiring)
        if not self._expiring:
            self._answered_while_expiring.clear()
        if not expired:
            return expired
        self.raised_total["order_unanswered"] += len(expired)
        for cell, (alarm, raised_now) in counted.items():
            key = ("order_unanswered", cell)
            if raised_now:
                log.warning("ALARM order_unanswered [%s]: %s", cell, alarm.message)
                self.journal.outbox_changed.set()
            elif key not in self.active:
                # The cell answered while this was in the journal: its clearing, journalled after
                # this transaction, took the alarm off and named these expiries too.
                continue
            else:
                log.warning("cell %s: %d more expired unanswered, %d so far", cell,
                            sum(order.cell == cell for order in expired), alarm.count)
            self.active[key] = alarm
        for cell in sorted(answered):
            if counted.get(cell, (None, False))[1]:
                # Its answer came while this pass raised the alarm, before there was one to clear.
                await self.cell_answered(cell)
        return expired

    def _expire_and_count(
        self, db: sqlite3.Connection, expiry_s: dict[str, float], default_s: float, now: float,
        seqs: dict[str, int],
    ) -> tuple[list[ExpiredOrder], dict[str, tuple[ActiveAlarm, bool]], list[str]]:
        """On the journal thread: expire the due orders of each cell whose alarm is on record (counted)
        or that has a seq in `seqs` for raising it; returns the expired orders, each cell's alarm (and
        whether this raised it), and the cells left for want of a seq."""
        due = orders_due_to_expire(db, expiry_s, default_s, now)
        counted: dict[str, tuple[ActiveAlarm, bool]] = {}
        unraised: list[str] = []
        for cell in dict.fromkeys(order.cell for order in due):
            # The journal's record, not self.active: clears are journalled in call order, so it is
            # exact here.
            saved = _load(db, "order_unanswered", cell)
            if saved is not None:
                counted[cell] = (saved, False)
            elif cell in seqs:
                counted[cell] = (ActiveAlarm("order_unanswered", cell, "", "critical", count=0), True)
            else:
                unraised.append(cell)
        expired = [order for order in due if order.cell in counted]
        expire_orders(db, expired, now)
        publications: list[tuple[int, Publication]] = []
        for order in expired:
            alarm, raised = counted[order.cell]
            if raised and alarm.count == 0:
                alarm.message = unanswered_message(order)
                seq = seqs[order.cell]
                publications.append(
                    (seq, self.publication("raised", alarm.code, alarm.subject, alarm.message, alarm.severity, seq))
                )
            alarm.count_expired(order)
        Journal._enqueue(db, [p for _, p in sorted(publications, key=lambda pair: pair[0])], now)
        for alarm, _ in counted.values():
            _save(db, alarm)
        return expired, counted, unraised

    async def cell_answered(self, cell: str) -> None:
        """`cell` sent a valid state message: it is answering again, so its order_unanswered clears,
        naming every order and cancellation that expired meanwhile."""
        key = ("order_unanswered", cell)
        if self.active.pop(key, None) is None:
            if self._expiring:
                self._answered_while_expiring.add(cell)
            return
        log.info("alarm cleared order_unanswered [%s]", cell)
        await self._clear_persisted("order_unanswered", cell, answered_again_message)

    async def _clear_persisted(self, code: str, subject: str, message: Callable[[ActiveAlarm], str]) -> None:
        """Enqueue the cleared message and delete the alarm's record in one transaction. The text is
        built there from the record, so expiries a transaction queued just before counted on it are
        named too; its seq is taken now, on the loop, so seq rises in outbox order."""
        seq = self.envelope.take_seq()

        def body(db: sqlite3.Connection) -> bool:
            saved = _load(db, code, subject)
            if saved is None:
                return False
            publication = self.publication("cleared", code, subject, message(saved), saved.severity, seq)
            Journal._enqueue(db, [publication], time.time())
            _forget(db, code, subject)
            return True

        if await self.journal.transact(body):
            self.journal.outbox_changed.set()

    async def _publish(self, state: str, code: str, subject: str, message: str, severity: str) -> None:
        await self.journal.enqueue([self.publication(state, code, subject, message, severity)])
