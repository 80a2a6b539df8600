"""Alarms: raised and cleared conditions, published durably on the `alarms` topic.

An alarm is keyed by a code plus an optional subject (a device, a lane). Raising an alarm that is
already raised only counts it, so a flapping input does not flood the topic.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

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


class Alarms:
    def __init__(self, journal: Journal, envelope: Envelope, topics: Topics) -> None:
        self.journal = journal
        self.envelope = envelope
        self.topics = topics
        self.active: dict[tuple[str, str], ActiveAlarm] = {}
        self.raised_total: Counter[str] = Counter()

    async def raise_(self, code: str, message: str, *, subject: str = "", severity: str = "warning") -> None:
        key = (code, subject)
        self.raised_total[code] += 1
        if key in self.active:
            self.active[key].count += 1
            return
        self.active[key] = ActiveAlarm(code, subject, message, severity)
        log.warning("ALARM %s%s: %s", code, f" [{subject}]" if subject else "", message)
        await self._publish("raised", code, subject, message, severity)

    async def clear(self, code: str, *, subject: str = "", message: str = "") -> None:
        alarm = self.active.pop((code, subject), None)
        if alarm is None:
            return
        log.info("alarm cleared %s%s", code, f" [{subject}]" if subject else "")
        await self._publish("cleared", code, subject, message or alarm.message, alarm.severity)

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
        key = ("order_unanswered", cell)
        repeat = key in self.active
        # Raising an active alarm only counts it (no await then, so nothing runs in between).
        await self.raise_(
            "order_unanswered",
            f"cell {cell} did not finish decision {decision_id} (unit {unit_id}) within {waited_s:.0f} s after "
            f"{sends} send(s): no longer re-sent; a person must see to the unit. Further orders of this cell that "
            "expire are counted on this alarm and marked expired in the journal until the cell answers again",
            subject=cell,
            severity="critical",
        )
        alarm = self.active[key]
        alarm.items.append(decision_id)
        if repeat:
            del alarm.items[:-MAX_LISTED_ITEMS]
            log.warning(
                "cell %s: order %s (unit %s) expired too: %d unanswered so far", cell, decision_id, unit_id, alarm.count
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

    async def _publish(self, state: str, code: str, subject: str, message: str, severity: str) -> None:
        await self.journal.enqueue([self.publication(state, code, subject, message, severity)])
