"""Start-up recovery of half-finished decisions, and journal retention, on a real SQLite journal."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from edge.alarms import Alarms
from edge.contract import Envelope, Topics
from edge.journal import Journal, OrderToSend, Publication
from edge.recovery import recover_undiverted
from edge.retention import prune, prune_once

from .asyncapi_contract import problems_with

TOPICS = Topics("returns/v1", "s", "l")


def _decision(unit: str, lane: int = 2) -> dict:
    return {
        "unit_id": unit, "decision_id": f"d-{unit}", "item_id": 9,
        "identity": {"barcode": "0100614141001002\x1d21AB", "symbology": "GS1-128", "gtin": "00614141001002",
                     "serial": "AB", "imei": None, "rma": None, "sku": "S", "model": "M"},
        "weight_g": 100.0, "expected_weight_g": 100.0, "weight_tolerance_g": 5.0,
        "vision": {"device_found": True, "defects": [], "damage_score": 0.0},
        "grade": "C", "disposition": "refurbish", "r2_category": "R2", "needs_sanitization": False,
        "lane": lane, "lane_name": "refurbish", "cell": "cell-a", "reasons": ["grade C"],
    }


def test_a_decision_without_divert_ack_is_published_once_as_lane_unknown(tmp_path: Path) -> None:
    async def run() -> tuple[int, int, list[tuple[str, dict]]]:
        async with Journal(tmp_path / "j.db") as journal:
            await journal.record_decision("U1", "d-U1", 9, _decision("U1"), [])  # then the process died
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            first = await recover_undiverted(journal, envelope, TOPICS, alarms, reject_lane=0)
            second = await recover_undiverted(journal, envelope, TOPICS, alarms, reject_lane=0)
            messages = [(m.topic, json.loads(m.payload)) for m in await journal.unsent()]
            for message in await journal.unsent():
                assert problems_with(message.topic, message.payload) == []
            return first, second, messages

    first, second, messages = asyncio.run(run())
    assert (first, second) == (1, 0)
    (topic, decision), (alarm_topic, alarm) = messages
    assert topic == TOPICS.decisions and alarm_topic == TOPICS.alarms
    assert decision["lane"] is None and decision["cell"] is None and decision["disposition"] == "quarantine"
    assert decision["recovery"]["candidate_lanes"] == [0, 2]
    assert decision["divert"] == {"status": "unknown", "intended_lane": 2}
    assert alarm["code"] == "lane_unknown" and alarm["severity"] == "critical" and "[0, 2]" in alarm["message"]
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("SELECT state FROM units").fetchone()[0] == "lane_unknown"
    assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 0  # no robot is sent to look for it


async def _unit(journal: Journal, unit: str, finished: bool) -> None:
    await journal.record_decision(unit, f"d-{unit}", 1, _decision(unit), [("arrived", {})])
    order = OrderToSend(f"d-{unit}", unit, "cell-a", "t/o", b"{}")
    await journal.record_outcome(unit, "diverted", _decision(unit), [Publication("t/d", b"{}")], order, [])
    if finished:
        await journal.record_cell_state(f"d-{unit}", "cell-a", "FINISHED", None)


def test_retention_prunes_old_and_excess_finished_units_but_never_open_ones(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def fill() -> None:
        async with Journal(path) as journal:
            for n in range(8):
                await _unit(journal, f"U{n}", finished=n != 0)
            seqs = [m.seq for m in await journal.unsent(100)]
            await journal.mark_sent(seqs[:-1])  # the newest message is still unsent

    asyncio.run(fill())
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE units SET decided_at = decided_at - 40 * 86400 WHERE unit_id IN ('U0', 'U1', 'U2')")
    db.execute("BEGIN")
    result = prune(db, retention_days=30, max_units=100, now=time.time())
    db.execute("COMMIT")
    assert result.units == 2  # U1, U2: old and finished; U0 is old but its order is still open
    left = {r[0] for r in db.execute("SELECT unit_id FROM units")}
    assert left == {"U0", "U3", "U4", "U5", "U6", "U7"}
    assert db.execute("SELECT count(*) FROM events WHERE unit_id IN ('U1','U2')").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM orders WHERE unit_id IN ('U1','U2')").fetchone()[0] == 0
    db.execute("BEGIN")
    result = prune(db, retention_days=30, max_units=3, now=time.time() + 2 * 86400)
    db.execute("COMMIT")
    assert result.units == 3 and result.outbox > 0
    assert {r[0] for r in db.execute("SELECT unit_id FROM units")} == {"U0", "U6", "U7"}
    assert db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0] == 1
    db.close()


def test_retention_keeps_the_file_bounded(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> list[int]:
        sizes = []
        async with Journal(path) as journal:
            for round_ in range(4):
                for n in range(150):
                    await _unit(journal, f"R{round_}-{n}", finished=True)
                await journal.mark_sent([m.seq for m in await journal.unsent(1000)])
                await prune_once(journal, retention_days=30, max_units=100)
                sizes.append(path.stat().st_size)
        return sizes

    sizes = asyncio.run(run())
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM units").fetchone()[0] == 100
    assert sizes[-1] <= sizes[1] * 1.2, sizes  # freed pages are reused: no growth after the first prunes


def test_unseen_ids_between_the_journal_and_the_plc() -> None:
    from edge.recovery import MAX_UNSEEN, unseen_item_ids

    now = 1_000_000.0
    assert unseen_item_ids(10, now - 5, 14, {10}, now) == [11, 12, 13, 14]
    assert unseen_item_ids(10, now - 5, 14, {10, 12}, now) == [11, 13, 14]  # decided ones are not repeated
    assert unseen_item_ids(65534, now - 5, 2, set(), now) == [65535, 1, 2]  # the 1..65535 ring wraps
    assert unseen_item_ids(10, now - 5, 10, set(), now) == []
    assert unseen_item_ids(10, now - 5, 10 + MAX_UNSEEN + 1, set(), now) is None  # a PLC restart, not units
    assert unseen_item_ids(10, now - 7200, 12, set(), now) is None  # too old to believe
    assert unseen_item_ids(10, now - 5, 0, set(), now) is None
