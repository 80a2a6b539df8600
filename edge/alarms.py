"""Alarms: raised and cleared conditions, published durably on the `alarms` topic.

An alarm is keyed by a code plus an optional subject (a device, a lane). Raising an alarm that is
already raised only counts it, so a flapping input does not flood the topic.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

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
        self.raised_total[code] += 1
        log.warning("ALARM %s%s: %s", code, f" [{subject}]" if subject else "", message)
        await self._publish("event", code, subject, message, severity)

    async def _publish(self, state: str, code: str, subject: str, message: str, severity: str) -> None:
        payload = self.envelope.build(
            "alarm",
            {"state": state, "code": code, "subject": subject or None, "severity": severity, "message": message},
        )
        await self.journal.enqueue([Publication(self.topics.alarms, encode(payload), qos=1)])
