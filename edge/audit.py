"""The audit trail for people and the WMS: read-only views of the decision journal.

`export_units_csv` writes one row per decided unit since a moment, for the warehouse management
system. Every text cell that came from a device (barcodes, serials) is treated as hostile: a value
that a spreadsheet would run as a formula is prefixed with an apostrophe, and control characters
(the GS separator of GS1 barcodes) are written as visible escapes.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

# order_sent_count: copies of the unit's order the controller put in its outbox for the broker, the
# first send included; a reconnect that finds a copy still waiting adds none (docs/deploy.md).
CSV_COLUMNS = (
    "unit_id", "decision_id", "item_id", "decided_at", "state", "barcode", "symbology", "gtin", "serial", "imei",
    "rma", "sku", "model", "weight_g", "expected_weight_g", "grade", "disposition", "r2_category",
    "needs_sanitization", "lane", "lane_name", "cell", "divert_status", "intended_lane", "order_state",
    "order_reason", "order_sent_count", "completed_at", "reasons",
)
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class AuditError(ValueError):
    """A bad argument or an unreadable journal."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 moment (naive means UTC), a date, or a span back from now: 30m, 12h, 7d."""
    now = now or datetime.now(UTC)
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * _UNITS_S[relative.group(2)])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AuditError(
            f"--since {text!r}: expected an ISO 8601 time (2026-11-22T03:00:00Z), a date, or 30m / 12h / 7d"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def safe_cell(value: Any) -> str:
    """A CSV cell that no spreadsheet runs as a formula and that keeps control characters visible."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    if text.startswith(_FORMULA_START) and not isinstance(value, int | float):
        text = "'" + text
    return text


def _connect(path: Path) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise AuditError(f"no journal at {path}")
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot open journal {path}: {exc}") from exc


def unit_rows(path: Path, since: datetime) -> Iterator[dict[str, Any]]:
    """One dict per unit decided at or after `since`, oldest first."""
    db = _connect(path)
    try:
        query = db.execute(
            "SELECT u.unit_id, u.decision_id, u.item_id, u.decided_at, u.state, u.decision,"
            " o.state, o.reason, o.sent_count, o.updated_at"
            " FROM units u LEFT JOIN orders o ON o.decision_id = u.decision_id"
            " WHERE u.decided_at >= ? ORDER BY u.decided_at, u.unit_id",
            (since.timestamp(),),
        )
        for (unit_id, decision_id, item_id, decided_at, state, decision_json, order_state, order_reason,
             sent_count, order_updated) in query:
            try:
                decision = json.loads(decision_json)
            except json.JSONDecodeError:
                decision = {}
            identity = decision.get("identity") or {}
            divert = decision.get("divert") or {}
            yield {
                "unit_id": unit_id, "decision_id": decision_id, "item_id": item_id,
                "decided_at": _iso(decided_at), "state": state,
                **{k: identity.get(k) for k in ("barcode", "symbology", "gtin", "serial", "imei", "rma", "sku",
                                                 "model")},
                **{k: decision.get(k) for k in ("weight_g", "expected_weight_g", "grade", "disposition",
                                                 "r2_category", "needs_sanitization", "lane", "lane_name", "cell")},
                "divert_status": divert.get("status"), "intended_lane": divert.get("intended_lane"),
                "order_state": order_state, "order_reason": order_reason, "order_sent_count": sent_count,
                "completed_at": _iso(order_updated) if order_state in ("FINISHED", "FAILED") else "",
                "reasons": " | ".join(decision.get("reasons") or []),
            }
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read journal {path}: {exc}") from exc
    finally:
        db.close()


def export_units_csv(path: Path, since: datetime, out: TextIO) -> int:
    """Write the CSV (header + one row per unit) to `out`; returns the number of units."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for row in unit_rows(path, since):
        writer.writerow([safe_cell(row[column]) for column in CSV_COLUMNS])
        count += 1
    return count
