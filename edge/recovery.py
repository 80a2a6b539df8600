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
from datetime import UTC, datetime
from typing import Any

from edge.alarms import Alarms
from edge.contract import Envelope, Topics, encode
from edge.journal import Journal, Publication

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
    from plc.tracking import forward_distance, next_id

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
    import uuid

    from edge.journal import OrderToSend

    if plc_item is None or plc_item == 0:
        return 0

    def newest(db: sqlite3.Connection) -> tuple[Any, Any, set[int]]:
        row = db.execute("SELECT item_id, decided_at FROM units ORDER BY decided_at DESC LIMIT 1").fetchone()
        recent = db.execute("SELECT item_id FROM units ORDER BY decided_at DESC LIMIT ?", (MAX_UNSEEN * 2,))
        return (row[0], row[1], {r[0] for r in recent}) if row else (None, None, set())

    last_item, last_at, known = await journal.transact(newest)
    if last_item is None:
        return 0
    ids = unseen_item_ids(int(last_item), float(last_at), plc_item, known, now)
    if ids is None:
        await alarms.event(
            "units_unseen", f"PLC scan counter at {plc_item}, last decided unit {last_item}: the gap is not "
            "believable (PLC restart?); units that passed while the controller was down are not announced",
            severity="warning",
        )
        return 0
    reject = config.lane(config.reject_lane)
    for item_id in ids:
        unit_id, decision_id = f"U{uuid.uuid4().hex[:16]}", str(uuid.uuid4())
        body = {
            "unit_id": unit_id, "decision_id": decision_id, "item_id": item_id,
            "identity": {k: None for k in ("barcode", "symbology", "gtin", "serial", "imei", "rma", "sku", "model")},
            "weight_g": None, "expected_weight_g": None, "weight_tolerance_g": None,
            "vision": {"error": f"not inspected: {UNSEEN_REASON}"},
            "grade": None, "disposition": "quarantine", "r2_category": None, "needs_sanitization": True,
            "lane": reject.id, "lane_name": reject.name, "cell": reject.cell,
            "reasons": [f"{UNSEEN_REASON}: no divert, the PLC sent it to the reject lane"],
            "divert": {"status": "not_requested", "intended_lane": reject.id},
            "latency_ms": None,
        }
        await journal.record_decision(unit_id, decision_id, item_id, body, [("unseen", {"item_id": item_id})])
        decision = envelope.build("decision", body)
        order = None
        if reject.cell:
            order_payload = envelope.build("order", {
                "decision_id": decision_id, "unit_id": unit_id, "item_id": item_id, "lane": reject.id,
                "disposition": "quarantine", "grade": None, "sku": None, "barcode": None,
                "needs_sanitization": True,
            })
            order = OrderToSend(decision_id, unit_id, reject.cell, topics.cell_orders(reject.cell),
                                encode(order_payload))
        await journal.record_outcome(
            unit_id, "diverted", decision, [Publication(topics.decisions, encode(decision), qos=1)], order,
            [("announced", {"reason": UNSEEN_REASON})],
        )
    if ids:
        await alarms.event(
            "units_unseen", f"{len(ids)} unit(s) passed the scan point while the controller was down "
            f"(PLC items {ids[0]}..{ids[-1]}): sent to the reject lane", severity="warning",
        )
        log.warning("announced %d unit(s) that passed while the controller was down", len(ids))
    return len(ids)
