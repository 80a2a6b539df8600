"""Start-up recovery of half-finished decisions, and journal retention, on a real SQLite journal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edge.alarms import Alarms
from edge.contract import Envelope, Topics
from edge.journal import Journal, OrderToSend, Publication
from edge.recovery import recover_undiverted
from edge.retention import JournalConversion, prune, prune_once, retention_loop

from .asyncapi_contract import problems_with
from .conftest import until

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


def test_missed_arrivals_are_the_ids_the_link_skipped() -> None:
    from edge.recovery import MissedArrivals

    missed = MissedArrivals(max_gap=100)
    assert missed.on_sample(10) == []  # anchors at the counter first seen
    assert missed.on_arrival(11) == []
    assert missed.on_arrival(14) == [12, 13]  # a burst too old to report: 12 and 13 were counted only
    assert missed.on_sample(14) == []
    assert missed.on_sample(17) == [15, 16, 17]  # link was down: nothing reported up to 17
    assert missed.on_arrival(18) == []
    assert missed.on_sample(65535 - 1) == [] and missed.unbelievable == 1  # re-anchored, not announced
    assert missed.on_arrival(65535) == [] and missed.on_arrival(2) == [1]  # the ring wraps past 65535
    assert missed.on_arrival(5, resyncs=1) == []  # the PLC restarted: its new ids say nothing
    assert missed.on_sample(0, resyncs=2) == [] and missed.on_arrival(1, resyncs=2) == []


@given(steps=st.lists(st.tuples(st.booleans(), st.integers(1, 0xFFFF), st.integers(0, 3)), max_size=60))
def test_missed_arrivals_never_repeat_an_id_between_resyncs(steps: list[tuple[bool, int, int]]) -> None:
    """Whatever the counter does, an id announced as missed was neither an arrival nor announced
    before, unless the counter jumped back (a re-anchor, raised as its own alarm) or the PLC restarted."""
    from edge.recovery import MissedArrivals

    missed = MissedArrivals(max_gap=300)
    accounted: set[int] = set()
    resyncs = 0
    for is_arrival, value, bump in steps:
        if bump == 3:
            resyncs += 1
            accounted.clear()
        ids = missed.on_arrival(value, resyncs) if is_arrival else missed.on_sample(value, resyncs)
        assert len(ids) <= 300 and all(1 <= i <= 0xFFFF for i in ids) and value not in ids[:-1]
        assert missed.unbelievable or not set(ids) & accounted, (ids, sorted(accounted))
        accounted.update(ids)
        if is_arrival:
            accounted.add(value)


async def _fill_and_prune(path: Path, units: int, keep: int) -> tuple[int, int]:
    async with Journal(path) as journal:
        for n in range(units):
            await _unit(journal, f"S{n}", finished=True)
        await journal.mark_sent([m.seq for m in await journal.unsent(100_000)])
        await journal.checkpoint()
        full = path.stat().st_size
        # A few passes, as the retention loop would make: each gives back a bounded number of pages.
        for _ in range(4):
            await prune_once(journal, retention_days=30, max_units=keep)
    return full, path.stat().st_size


def test_retention_gives_pruned_pages_back_so_the_file_shrinks(tmp_path: Path) -> None:
    full, pruned = asyncio.run(_fill_and_prune(tmp_path / "j.db", units=600, keep=100))
    assert pruned < full * 0.5, (full, pruned)
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental, set before the first table
    assert db.execute("SELECT count(*) FROM units").fetchone()[0] == 100


def test_a_journal_made_without_auto_vacuum_is_converted_once_by_the_retention_task_and_shrinks(
    tmp_path: Path,
) -> None:
    from edge.journal import SCHEMA

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)  # as journals were created before auto-vacuum was set
    db.close()
    full, pruned = asyncio.run(_fill_and_prune(path, units=600, keep=100))
    assert pruned > full * 0.9, (full, pruned)  # a pass alone gives nothing back from such a file

    async def retention_task() -> tuple[int, bool]:
        async with Journal(path) as journal:
            conversion = JournalConversion()  # no unit in flight here
            task = asyncio.create_task(retention_loop(journal, retention_days=30, max_units=100, interval_s=0.01,
                                                      conversion=conversion))
            await until(lambda: conversion.done or conversion.gave_up or task.done(), timeout_s=60.0,
                        what="the journal conversion")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return journal.path.stat().st_size, conversion.done

    converted, done = asyncio.run(retention_task())
    assert done and converted < full * 0.5, (full, converted)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM units").fetchone()[0] == 100


def test_retention_deletes_evidence_of_pruned_units_and_old_orphans_only(tmp_path: Path) -> None:
    import os

    evidence = tmp_path / "evidence"
    day = evidence / "20260101"
    day.mkdir(parents=True)
    outside = tmp_path / "not-evidence.jpg"
    outside.write_bytes(b"keep")

    def image(name: str, age_days: float = 0.0) -> Path:
        path = day / name
        path.write_bytes(b"\xff\xd8jpeg")
        moment = time.time() - age_days * 86400
        os.utime(path, (moment, moment))
        return path

    async def run() -> None:
        async with Journal(tmp_path / "j.db") as journal:
            for n, finished in enumerate((True, True, False)):
                unit = f"E{n}"
                decision = {**_decision(unit), "vision": {"evidence": str(image(f"{unit}.jpg", age_days=40))}}
                await journal.record_decision(unit, f"d-{unit}", n, decision, [])
                order = OrderToSend(f"d-{unit}", unit, "cell-a", "t/o", b"{}")
                await journal.record_outcome(unit, "diverted", decision, [], order, [])
                if finished:
                    await journal.record_cell_state(f"d-{unit}", "cell-a", "FINISHED", None)
            # a hostile or stale journal entry must never delete outside the evidence folder
            bad = {**_decision("E9"), "vision": {"evidence": str(outside)}}
            await journal.record_decision("E9", "d-E9", 9, bad, [])
            await journal.record_outcome("E9", "complete", bad, [], None, [])
            await journal.transact(lambda db: db.execute("UPDATE units SET decided_at = decided_at - 40 * 86400"))
            await prune_once(journal, retention_days=30, max_units=1000, evidence_dir=evidence)

    image("U-orphan-old.jpg", age_days=31)
    image("U-orphan-new.jpg", age_days=1)  # perhaps its decision is being written right now
    image(".U-crashed.jpg.1234.tmp", age_days=31)
    asyncio.run(run())
    assert sorted(p.name for p in day.iterdir()) == ["E2.jpg", "U-orphan-new.jpg"]  # E2's order is open
    assert outside.read_bytes() == b"keep"
