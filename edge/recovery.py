"""Start-up recovery of decisions the last run could not finish.

A unit in state `decided` had its decision committed but the controller stopped (crash, SIGKILL,
power cut) before the PLC's divert acknowledgement was recorded. Where the unit physically went
is unknown: the divert may have been accepted and executed (its lane) or not (the belt end, the
reject lane; the PLC also voids accepted diverts once the gateway heartbeat stops). Both are
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
