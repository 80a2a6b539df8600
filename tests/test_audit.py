"""`edge units export`: CSV for the WMS from a real journal, with hostile device text kept harmless."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.audit import CSV_COLUMNS, AuditError, export_units_csv, parse_since, safe_cell
from edge.cli import main
from edge.journal import Journal, OrderToSend, Publication


def _decision(unit: str, barcode: str, lane: int) -> dict:
    return {
        "unit_id": unit, "decision_id": f"d-{unit}", "item_id": 3,
        "identity": {"barcode": barcode, "symbology": "GS1-128", "gtin": "00614141001002", "serial": "X1",
                     "imei": None, "rma": None, "sku": "PH-1", "model": "Phone"},
        "weight_g": 170.0, "expected_weight_g": 171.0, "grade": "A", "disposition": "restock",
        "r2_category": "R2 reuse", "needs_sanitization": True, "lane": lane, "lane_name": "restock",
        "cell": "cell-a", "reasons": ["grade A: fine", "grade A/B: resell as is"],
        "divert": {"status": "accepted", "intended_lane": lane},
    }


async def _fill(path: Path) -> None:
    async with Journal(path) as journal:
        for unit, barcode in (("U1", "=HYPERLINK(\"http://x\")"), ("U2", "0100614141001002\x1d21X1")):
            decision = _decision(unit, barcode, 1)
            await journal.record_decision(unit, f"d-{unit}", 3, decision, [("arrived", {"item_id": 3})])
            order = OrderToSend(f"d-{unit}", unit, "cell-a", "t/orders", b"{}")
            await journal.record_outcome(unit, "diverted", decision, [Publication("t/decisions", b"{}")], order, [])
        assert await journal.record_cell_state("d-U1", "cell-a", "FINISHED", None) == "applied"


def test_export_writes_one_row_per_unit_with_order_outcome(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    asyncio.run(_fill(path))
    out = io.StringIO()
    assert export_units_csv(path, datetime.now(UTC) - timedelta(minutes=5), out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["unit_id"] for r in rows] == ["U1", "U2"]
    assert tuple(rows[0]) == CSV_COLUMNS
    first, second = rows
    assert first["barcode"].startswith("'=")  # a spreadsheet must not run it
    assert second["barcode"] == "0100614141001002\\x1d21X1"
    assert first["order_state"] == "FINISHED" and first["completed_at"].endswith("Z")
    assert second["order_state"] == "QUEUED" and second["completed_at"] == ""
    assert first["lane"] == "1" and first["needs_sanitization"] == "true"
    assert first["reasons"] == "grade A: fine | grade A/B: resell as is"
    # nothing since a moment after the last decision
    assert export_units_csv(path, datetime.now(UTC) + timedelta(seconds=1), io.StringIO()) == 0


def test_cli_export_to_file_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "journal.db"
    asyncio.run(_fill(path))
    out = tmp_path / "units.csv"
    assert main(["units", "export", "--since", "1h", "--journal", str(path), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3
    assert main(["units", "export", "--since", "yesterday-ish", "--journal", str(path)]) == 2
    assert "--since" in capsys.readouterr().err
    assert main(["units", "export", "--since", "1h", "--journal", str(tmp_path / "none.db")]) == 2
    # the export only reads: the journal is unchanged
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM units").fetchone()[0] == 2


def test_parse_since_forms() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-22T03:00:00Z") == datetime(2026, 11, 22, 3, tzinfo=UTC)
    assert parse_since("2026-11-22") == datetime(2026, 11, 22, tzinfo=UTC)
    with pytest.raises(AuditError):
        parse_since("soon")
    assert time.time() - parse_since("0s").timestamp() < 5


@given(st.text(max_size=40))
def test_safe_cell_never_yields_a_formula_or_control_character(text: str) -> None:
    cell = safe_cell(text)
    assert not cell.startswith(("=", "+", "-", "@"))
    assert all(ch.isprintable() for ch in cell)
    out = io.StringIO()
    csv.writer(out).writerow([cell])
    assert next(csv.reader(io.StringIO(out.getvalue()))) == [cell]
