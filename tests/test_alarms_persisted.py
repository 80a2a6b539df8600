"""order_unanswered survives a daemon restart: real journal closed and opened again, real alarms.

The expired orders are final in the journal, so nothing after a restart would raise the alarm from
live state; it is kept in the journal with its count and the decisions it lists.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from edge.alarms import Alarms
from edge.contract import Envelope, Topics
from edge.journal import Journal, OrderToSend, Publication

from .asyncapi_contract import problems_with

TOPICS = Topics("returns/v1", "s", "l")


async def _ordered(journal: Journal, unit: str, cell: str) -> None:
    await journal.record_decision(unit, f"d-{unit}", 1, {"lane": 1}, [])
    order = OrderToSend(f"d-{unit}", unit, cell, TOPICS.cell_orders(cell), b"{}")
    await journal.record_outcome(unit, "diverted", {"lane": 1}, [Publication("t/d", b"{}")], order, [])
    # The broker took the order: from here its expiry runs (an order never sent does not expire).
    await journal.mark_sent([m.seq for m in await journal.unsent(1000) if m.topic == order.topic])


async def _expire(journal: Journal, alarms: Alarms) -> int:
    """What Controller._resend_orders does on each pass."""
    return len(await alarms.expire_unanswered({}, default_s=0.0))


async def _started(journal: Journal) -> Alarms:
    """What Controller.run does with the alarms at start-up."""
    alarms = Alarms(journal, Envelope("edge-t", await journal.reserve_sequence_block()), TOPICS)
    await alarms.restore()
    return alarms


def _alarm_messages(path: Path) -> list[dict]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT topic, payload FROM outbox WHERE topic=? ORDER BY seq", (TOPICS.alarms,)).fetchall()
    finally:
        db.close()
    for topic, payload in rows:
        assert problems_with(topic, payload) == []
    return [json.loads(payload) for _, payload in rows]


def test_order_unanswered_is_counted_on_after_a_restart_and_cleared_by_the_cells_answer(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def first_run() -> None:
        async with Journal(path) as journal:
            alarms = await _started(journal)
            assert alarms.active == {}
            for n in range(3):
                await _ordered(journal, f"A{n}", "cell-a")
            assert await _expire(journal, alarms) == 3

    async def second_run() -> tuple[int, list[str], int]:
        async with Journal(path) as journal:
            alarms = await _started(journal)
            restored = alarms.active[("order_unanswered", "cell-a")]
            count_at_start, items_at_start = restored.count, list(restored.items)
            await _ordered(journal, "A3", "cell-a")
            assert await _expire(journal, alarms) == 1  # counted into the restored alarm
            return count_at_start, items_at_start, alarms.active[("order_unanswered", "cell-a")].count

    async def third_run() -> int:
        async with Journal(path) as journal:
            alarms = await _started(journal)
            count = alarms.active[("order_unanswered", "cell-a")].count
            assert await journal.record_cell_state("d-A1", "cell-a", "FINISHED", None) == "applied"
            await alarms.cell_answered("cell-a")
            assert alarms.active == {}
            return count

    async def fourth_run() -> dict:
        async with Journal(path) as journal:
            return (await _started(journal)).active

    asyncio.run(first_run())
    count_at_start, items_at_start, count_after_expiry = asyncio.run(second_run())
    assert (count_at_start, items_at_start) == (3, ["d-A0", "d-A1", "d-A2"])
    assert count_after_expiry == 4
    assert asyncio.run(third_run()) == 4  # the count after the restart was kept too
    assert asyncio.run(fourth_run()) == {}  # the clearing is kept as well
    published = _alarm_messages(path)
    # One raised over three runs (no second one after the restart), one cleared.
    assert [(a["state"], a["code"], a["subject"]) for a in published] == [
        ("raised", "order_unanswered", "cell-a"), ("cleared", "order_unanswered", "cell-a"),
    ]
    cleared = published[1]["message"]
    assert "4 order(s) expired" in cleared and all(f"d-A{n}" in cleared for n in range(4))


def test_the_list_stays_bounded_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run(first: int, last: int, answer: bool) -> None:
        async with Journal(path) as journal:
            alarms = await _started(journal)
            for n in range(first, last):
                await _ordered(journal, f"U{n}", "cell-a")
            assert await _expire(journal, alarms) == last - first
            if answer:
                await alarms.cell_answered("cell-a")

    asyncio.run(run(0, 15, answer=False))
    asyncio.run(run(15, 30, answer=True))
    cleared = _alarm_messages(path)[-1]["message"]
    assert "30 order(s) expired" in cleared and "d-U29" in cleared and "d-U10," in cleared
    assert "d-U9," not in cleared and "and 10 more" in cleared


def test_a_damaged_saved_alarm_is_reported_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j.db"

    async def seed() -> None:
        async with Journal(path) as journal:
            alarms = await _started(journal)
            await _ordered(journal, "U1", "cell-a")
            assert await _expire(journal, alarms) == 1

    asyncio.run(seed())
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
            ("alarm:order_unanswered:cell-b", "{not json"),
            ("alarm:order_unanswered:cell-c", json.dumps({"code": "order_unanswered", "subject": "cell-c"})),
            ("alarm:order_unanswered:cell-d", json.dumps({"code": "device_lost", "subject": "x", "message": "m",
                                                          "severity": "warning", "count": 1, "items": []})),
        ])
    db.close()

    async def restart() -> set[tuple[str, str]]:
        async with Journal(path) as journal:
            return set((await _started(journal)).active)

    with caplog.at_level(logging.ERROR, logger="edge.alarms"):
        active = asyncio.run(restart())
    assert active == {("order_unanswered", "cell-a")}
    assert sum("not a saved alarm" in r.getMessage() for r in caplog.records) == 3


def test_a_saved_alarm_of_a_cell_no_longer_configured_is_cleared_at_start(tmp_path: Path) -> None:
    from edge.config import load_station
    from edge.daemon import Controller

    from .conftest import CONFIG

    config = load_station(CONFIG / "station.sim.yaml")
    path = tmp_path / "j.db"

    async def run(cell: str) -> None:
        async with Journal(path) as journal:
            alarms = await _started(journal)
            await _ordered(journal, f"U-{cell}", cell)
            assert await _expire(journal, alarms) == 1

    async def restart() -> set[tuple[str, str]]:
        async with Journal(path) as journal:
            alarms = await _started(journal)
            controller = Controller(config, policy=None, catalog=None)  # type: ignore[arg-type]
            await controller._clear_alarms_of_removed_cells(alarms)
            return set(alarms.active)

    kept = config.cells[0].id
    asyncio.run(run("cell-gone"))
    asyncio.run(run(kept))
    assert asyncio.run(restart()) == {("order_unanswered", kept)}
    assert asyncio.run(restart()) == {("order_unanswered", kept)}  # the clearing was journalled
    published = [(a["state"], a["subject"]) for a in _alarm_messages(path)]
    assert published == [("raised", "cell-gone"), ("raised", kept), ("cleared", "cell-gone")]
    assert "no longer configured" in _alarm_messages(path)[-1]["message"]


def test_an_expiry_and_its_alarm_are_committed_together_or_not_at_all(tmp_path: Path) -> None:
    """The expiry is final: an alarm committed apart from it could be lost for good by a crash or stop
    in between. A journal that cannot take the alarm's record keeps the order open as well."""
    path = tmp_path / "j.db"

    async def alarm_cannot_be_written() -> tuple[str, str, dict]:
        async with Journal(path) as journal:
            alarms = await _started(journal)
            await _ordered(journal, "A0", "cell-a")
            # Only on this connection: gone when the journal is closed and opened again.
            await journal.transact(lambda db: db.execute(
                "CREATE TEMP TRIGGER no_alarm_record BEFORE INSERT ON meta WHEN NEW.key LIKE 'alarm:%' "
                "BEGIN SELECT RAISE(ABORT, 'alarm record refused'); END"
            ))
            with pytest.raises(sqlite3.IntegrityError, match="alarm record refused"):
                await alarms.expire_unanswered({}, default_s=0.0)
            order, unit = await journal.transact(lambda db: db.execute(
                "SELECT o.state, u.state FROM orders o JOIN units u USING (unit_id)"
            ).fetchone())
            return order, unit, alarms.active

    assert asyncio.run(alarm_cannot_be_written()) == ("QUEUED", "diverted", {})
    assert _alarm_messages(path) == []
    db = sqlite3.connect(path)
    try:
        kept = db.execute("SELECT count(*) FROM meta WHERE key LIKE 'alarm:%'").fetchone()[0]
        events = db.execute("SELECT count(*) FROM events WHERE kind LIKE '%expired'").fetchone()[0]
    finally:
        db.close()
    assert (kept, events) == (0, 0)  # nothing of the refused transaction is on record
