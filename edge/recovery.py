"""Start-up recovery of decisions the last run could not finish.

A unit in state `decided` had its decision committed but the controller stopped (crash, SIGKILL,
power cut) before the PLC's divert acknowledgement was recorded. Where the unit physically went
is unknown: the divert may have been accepted and executed (its lane) or not (the belt end, the
reject lane). Both are
possible, so the only safe outcome is:

* no robot order at all: telling a cell to pick a unit that may not be in its lane, or missing
  one that is, would be a wrong-lane action;
* the decision is published once, as `quarantine` with `lane` and `cell` null, `divert.status`
  `unknown` and a `recovery` object naming the candidate lanes, so the WMS and technicians see it;
* a critical `lane_unknown` alarm per unit telling a person to find it (by unit id, barcode and
  candidate lanes) in the intended lane or in the reject/manual lane;
* the unit's journal state becomes `lane_unknown`, a final state: it is never recovered twice.

The decision and its state change are committed in one transaction, so a crash during recovery
simply recovers the same units again on the next start.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.alarms import Alarms
from edge.contract import Envelope, Topics, encode, pick_order
from edge.journal import Journal, OrderToSend, Publication
from plc.tracking import forward_distance, next_id

log = logging.getLogger("edge.recovery")

RECOVERY_REASON = "controller restarted between the decision and the divert acknowledgement"


def recovered_decision(decision: dict[str, Any], reject_lane: int, decided_at: float) -> dict[str, Any]:
    """The decision body to publish for a unit whose physical lane is unknown (pure)."""
    body = {k: v for k, v in decision.items() if k not in ("schema", "message_id", "timestamp", "controller", "seq")}
    intended = body.get("lane")
    candidates = sorted({lane for lane in (intended, reject_lane) if isinstance(lane, int)})
    return {
        **body,
        "disposition": "quarantine",
        "lane": None,
        "lane_name": None,
        "cell": None,
        "reasons": [
            *body.get("reasons", []),
            f"{RECOVERY_REASON}: unit is in lane {intended} or in reject lane {reject_lane}; a person must find it",
        ],
        "divert": {"status": "unknown", "intended_lane": intended if isinstance(intended, int) else reject_lane},
        "latency_ms": None,
        "recovery": {
            "reason": RECOVERY_REASON,
            "candidate_lanes": candidates,
            "decided_at": datetime.fromtimestamp(decided_at, UTC).isoformat(timespec="milliseconds"),
        },
    }


async def recover_undiverted(
    journal: Journal, envelope: Envelope, topics: Topics, alarms: Alarms, reject_lane: int
) -> int:
    """Resolve every unit left in state `decided`; returns how many there were."""

    def pending(db: sqlite3.Connection) -> list[tuple[str, str, float]]:
        return db.execute("SELECT unit_id, decision, decided_at FROM units WHERE state='decided'").fetchall()

    rows = await journal.transact(pending)
    for unit_id, decision_json, decided_at in rows:
        try:
            decision = json.loads(decision_json)
        except json.JSONDecodeError:
            decision = {"unit_id": unit_id, "reasons": ["journal decision unreadable"]}
        body = recovered_decision(decision, reject_lane, decided_at)
        message = envelope.build("decision", body)
        await journal.record_outcome(
            unit_id, "lane_unknown", message, [Publication(topics.decisions, encode(message), qos=1)], None,
            [("recovered", {"candidate_lanes": body["recovery"]["candidate_lanes"], "reason": RECOVERY_REASON})],
        )
        barcode = (body.get("identity") or {}).get("barcode")
        await alarms.event(
            "lane_unknown",
            f"unit {unit_id} (barcode {barcode!r}, PLC item {body.get('item_id')}): {RECOVERY_REASON}; "
            f"find it in lane(s) {body['recovery']['candidate_lanes']}",
            subject=unit_id, severity="critical",
        )
        log.warning("recovered unit %s: physical lane unknown, candidates %s", unit_id,
                    body["recovery"]["candidate_lanes"])
    return len(rows)


UNSEEN_REASON = "passed the scan point while the controller was not running"
# A longer gap than this, or an older last decision, more likely means a restarted PLC counter
# than units that slipped by: then nothing is announced, and the alarm says so.
MAX_UNSEEN = 512
MAX_UNSEEN_AGE_S = 3600.0


def unseen_item_ids(last_item: int, last_at: float, plc_item: int, known: set[int], now: float) -> list[int] | None:
    """PLC tracking ids between the journal's newest unit and the PLC's current one (ring of
    1..65535). None when the gap is not believable (PLC restarted, journal too old)."""

    if not 1 <= plc_item <= 0xFFFF or not 1 <= last_item <= 0xFFFF:
        return None
    gap = forward_distance(last_item, plc_item)
    if gap > MAX_UNSEEN or now - last_at > MAX_UNSEEN_AGE_S:
        return None
    ids, item = [], last_item
    for _ in range(gap):
        item = next_id(item)
        if item not in known:
            ids.append(item)
    return ids


async def announce_unseen_units(
    journal: Journal, envelope: Envelope, topics: Topics, alarms: Alarms, config: Any, plc_item: int | None,
    now: float,
) -> int:
    """Give every unit that passed while no controller ran its decision: it had no divert, so the
    PLC sent it to the belt end, the reject lane. The reject lane's cell gets an order as usual."""
    if plc_item is None or plc_item == 0:
        return 0

    def newest(db: sqlite3.Connection) -> tuple[Any, Any]:
        row = db.execute("SELECT item_id, decided_at FROM units ORDER BY decided_at DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (None, None)

    last_item, last_at = await journal.transact(newest)
    if last_item is None:
        return 0
    known = await _recently_decided_items(journal)
    ids = unseen_item_ids(int(last_item), float(last_at), plc_item, known, now)
    if ids is None:
        await alarms.event(
            "units_unseen", f"PLC scan counter at {plc_item}, last decided unit {last_item}: the gap is not "
            "believable (PLC restart?); units that passed while the controller was down are not announced",
            severity="warning",
        )
        return 0
    return await decide_passed_units(journal, envelope, topics, alarms, config, ids, UNSEEN_REASON)


async def _recently_decided_items(journal: Journal) -> set[int]:
    def query(db: sqlite3.Connection) -> set[int]:
        rows = db.execute("SELECT item_id FROM units ORDER BY decided_at DESC LIMIT ?", (MAX_UNSEEN * 2,))
        return {r[0] for r in rows}

    return await journal.transact(query)


async def decide_passed_units(
    journal: Journal, envelope: Envelope, topics: Topics, alarms: Alarms, config: Any, item_ids: list[int],
    reason: str,
) -> int:
    """Decide units that passed the scan point with no divert, so the PLC sent them to the belt end:
    reject lane, an order to the reject lane's cell, one `units_unseen` alarm for the batch. Ids that
    already have a recent decision are skipped, so a unit is never decided twice."""
    known = await _recently_decided_items(journal)
    ids = [item_id for item_id in item_ids if item_id not in known]
    reject = config.lane(config.reject_lane)
    for item_id in ids:
        unit_id, decision_id = f"U{uuid.uuid4().hex[:16]}", str(uuid.uuid4())
        body = {
            "unit_id": unit_id, "decision_id": decision_id, "item_id": item_id,
            "identity": {k: None for k in ("barcode", "symbology", "gtin", "serial", "imei", "rma", "sku", "model")},
            "weight_g": None, "expected_weight_g": None, "weight_tolerance_g": None,
            "vision": {"error": f"not inspected: {reason}"},
            "grade": None, "disposition": "quarantine", "r2_category": None, "needs_sanitization": True,
            "lane": reject.id, "lane_name": reject.name, "cell": reject.cell,
            "reasons": [f"{reason}: no divert, the PLC sent it to the reject lane"],
            "divert": {"status": "not_requested", "intended_lane": reject.id},
            "latency_ms": None,
        }
        await journal.record_decision(unit_id, decision_id, item_id, body, [("unseen", {"item_id": item_id})])
        decision = envelope.build("decision", body)
        order = None
        if reject.cell:
            order_payload = envelope.build("order", pick_order(
                decision_id=decision_id, unit_id=unit_id, item_id=item_id, lane=reject.id,
                disposition="quarantine", grade=None, sku=None, barcode=None, needs_sanitization=True,
            ))
            order = OrderToSend(decision_id, unit_id, reject.cell, topics.cell_orders(reject.cell),
                                encode(order_payload))
        await journal.record_outcome(
            unit_id, "diverted", decision, [Publication(topics.decisions, encode(decision), qos=1)], order,
            [("announced", {"reason": reason})],
        )
    if ids:
        await alarms.event(
            "units_unseen", f"{len(ids)} unit(s) {reason} (PLC items {ids[0]}..{ids[-1]}): sent to the reject lane",
            severity="warning",
        )
        log.warning("announced %d unit(s) that %s", len(ids), reason)
    return len(ids)


MISSED_REASON = "passed the scan point while the PLC link was down"


@dataclass
class MissedArrivals:
    """Which PLC item ids passed the scan point without being reported as arrivals (pure).

    The PLC link reports arrivals in id order and only counts the ids it skipped (link down, or a
    burst too old to divert): those units had no divert, so they rode to the reject lane and still
    need their decision. `frontier` is the newest id accounted for, by an arrival or as missed.
    A jump larger than `max_gap`, or a PLC restart (the link's resync counter moved), re-anchors
    the frontier instead: the ids in between are not believable as units.
    """

    max_gap: int = MAX_UNSEEN
    frontier: int | None = None
    resyncs: int = 0
    unbelievable: int = 0
    # (frontier, value) of the latest jump too large to believe, for the alarm.
    last_unbelievable: tuple[int, int] | None = None

    def _between(self, upto: int, resyncs: int, inclusive: bool) -> list[int]:
        if self.frontier is None or resyncs != self.resyncs:
            self.frontier, self.resyncs = upto, resyncs
            return []
        distance = forward_distance(self.frontier, upto) if self.frontier else upto
        if distance == 0:
            return []
        if distance > self.max_gap:
            self.unbelievable += 1
            self.last_unbelievable = (self.frontier, upto)
            self.frontier = upto
            return []
        ids, item = [], self.frontier
        for _ in range(distance if inclusive else distance - 1):
            item = next_id(item)
            ids.append(item)
        self.frontier = upto
        return ids

    def on_arrival(self, item_id: int, resyncs: int = 0) -> list[int]:
        """An arrival the pipeline will decide; returns the ids skipped just before it."""
        return self._between(item_id, resyncs, inclusive=False)

    def on_sample(self, plc_item: int | None, resyncs: int = 0) -> list[int]:
        """The link's latest scan_item_id, sampled when every reported arrival has been taken:
        every id up to it that was not an arrival was missed."""
        if plc_item is None or (plc_item == 0 and self.frontier is None):
            return []
        if plc_item == 0:
            # The PLC restarted and scanned nothing yet: its next ids start again at 1.
            self.frontier, self.resyncs = 0, resyncs
            return []
        return self._between(plc_item, resyncs, inclusive=True)


UNACCOUNTED_EVENT = "units_unaccounted"


def unaccounted_units(previous: int, current: int) -> tuple[int, int]:
    """(units that passed if the counter really moved forward, units scanned since a PLC restart if
    it went back to 1): the two readings of a scan_item_id jump too large to believe (pure)."""
    return forward_distance(previous, current) if previous else current, current


async def report_unaccounted(journal: Journal, alarms: Alarms, previous: int, current: int, limit: int) -> None:
    """A scan counter jump larger than `limit`: the units behind it were never reported, so they had
    no divert and rode to the reject lane, undecided. Too many (or too doubtful: a PLC restart looks
    the same) to decide one by one, so one journal record and one critical alarm say how many, for a
    person to sort out the reject lane. No unit is sent anywhere on the strength of it."""
    forward, since_restart = unaccounted_units(previous, current)
    data = {
        "previous_scan_item_id": previous, "scan_item_id": current, "limit": limit,
        "if_passed": forward, "if_plc_restarted": since_restart,
    }
    message = (
        f"PLC scan counter jumped from {previous} to {current}, more than {limit}: up to {forward} unit(s) are "
        f"unaccounted for (or, if the PLC restarted, up to {since_restart} scanned since). None was diverted or "
        "decided: they are in the reject lane without a decision; a person must check it"
    )
    alarm = alarms.publication("event", "units_unseen", "", message, "critical")

    def body(db: sqlite3.Connection) -> None:
        # The record and its alarm are committed together.
        now = time.time()
        db.execute(
            "INSERT INTO events(unit_id, at, kind, data) VALUES (?,?,?,?)",
            (None, now, UNACCOUNTED_EVENT, json.dumps(data)),
        )
        Journal._enqueue(db, [alarm], now)

    await journal.transact(body)
    journal.outbox_changed.set()
    alarms.note_event("units_unseen", message)
    log.error("scan counter jump %d -> %d: up to %d unit(s) unaccounted for", previous, current, forward)
