"""The daemon's induction after a PLC link gap: reads of the units that passed unseen are dropped
before the next reported unit claims its read (real ArrivalTracker, MissedArrivals, ReadMatcher)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.alarms import Alarms
from edge.config import load_station
from edge.contract import Envelope
from edge.daemon import Controller
from edge.journal import Journal
from edge.pipeline import Arrival
from edge.reads import ReadMatcher
from plc.tracking import ArrivalTracker

from .conftest import CONFIG


@dataclass
class Read:
    text: str
    received_at: float


@dataclass
class PlcArrival:
    item_id: int
    seen_at: float


class Plc:
    """The two things Controller._induct reads from the PLC link, fed like the link feeds them."""

    def __init__(self) -> None:
        self.tracker = ArrivalTracker()
        self.arrivals: asyncio.Queue[PlcArrival] = asyncio.Queue()

    def poll(self, scan_item_id: int) -> list[int]:
        ids, _missed = self.tracker.update(scan_item_id)
        for item_id in ids:
            self.arrivals.put_nowait(PlcArrival(item_id, time.monotonic()))
        return ids


class Pipeline:
    def __init__(self) -> None:
        self.reads: ReadMatcher[Read] = ReadMatcher(before_s=0.25, after_s=0.1, arrival_lag_s=0.02)
        self.identity: dict[int, str | None] = {}

    async def handle(self, arrival: Arrival) -> None:
        read = await self.reads.claim(arrival.seen_at)
        self.identity[arrival.item_id] = read.text if read is not None else None


@contextlib.asynccontextmanager
async def _inducting() -> AsyncIterator[tuple[Controller, Plc, Pipeline]]:
    """The daemon's induction loop over a PLC whose counter stands at 10, as at start-up."""
    controller = Controller(load_station(CONFIG / "station.sim.yaml"), policy=None, catalog=None)  # type: ignore[arg-type]
    plc, pipeline = Plc(), Pipeline()
    plc.poll(10)
    controller.missed.frontier = plc.tracker.baseline
    induction = asyncio.create_task(controller._induct(plc, pipeline))  # type: ignore[arg-type]
    try:
        yield controller, plc, pipeline
    finally:
        controller.request_stop()
        induction.cancel()
        await asyncio.gather(induction, return_exceptions=True)
        await asyncio.gather(*controller._unit_tasks, return_exceptions=True)


async def test_the_unit_after_a_link_gap_does_not_get_a_missed_units_read() -> None:
    async with _inducting() as (controller, plc, pipeline):
        await pipeline.reads.add(Read("unit 11", time.monotonic()))
        assert plc.poll(11) == [11]
        await _until(lambda: 11 in pipeline.identity)
        plc.tracker.mark_gap()  # the link drops; unit 12 passes the scanner meanwhile
        await pipeline.reads.add(Read("unit 12", time.monotonic()))
        assert plc.poll(12) == []  # counted as missed, not reported
        await asyncio.sleep(0.05)
        assert plc.poll(13) == [13]  # unit 13 has no label the scanner could read
        await _until(lambda: 13 in pipeline.identity)
        await asyncio.sleep(0.2)
        await pipeline.reads.add(Read("unit 14", time.monotonic()))
        assert plc.poll(14) == [14]
        await _until(lambda: 14 in pipeline.identity)
    assert pipeline.identity == {11: "unit 11", 13: None, 14: "unit 14"}
    assert pipeline.reads.counters["missed_unit_reads"] == 1
    assert controller._missed_ids == [12]  # decided as missed by _decide_missed, reject lane


async def test_the_unit_after_a_link_gap_keeps_its_own_read_from_just_before_its_edge() -> None:
    """The scanner reads a unit a little before the controller notices its edge (the poll lag):
    that read is the unit's own, while the missed unit's read from a unit gap earlier is dropped."""
    async with _inducting() as (controller, plc, pipeline):
        plc.tracker.mark_gap()  # the link drops; unit 11 passes the scanner meanwhile
        await pipeline.reads.add(Read("unit 11", time.monotonic()))
        assert plc.poll(11) == []  # counted as missed, not reported
        await asyncio.sleep(0.05)
        await pipeline.reads.add(Read("unit 12", time.monotonic() - 0.01))  # within the 0.02 s lag
        assert plc.poll(12) == [12]
        await _until(lambda: 12 in pipeline.identity)
    assert pipeline.identity == {12: "unit 12"}
    assert pipeline.reads.counters["missed_unit_reads"] == 1
    assert controller._missed_ids == [11]


async def _until(predicate: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _missed_units_loop(tmp_path: Path) -> AsyncIterator[tuple[Controller, Plc, Journal, Alarms]]:
    """What Controller._decide_missed needs: a real journal, its alarms and the read matcher."""
    controller = Controller(load_station(CONFIG / "station.sim.yaml"), policy=None, catalog=None)  # type: ignore[arg-type]
    plc, pipeline = Plc(), Pipeline()
    async with Journal(tmp_path / "j.db") as journal:
        envelope = Envelope("edge-t", await journal.reserve_sequence_block())
        alarms = Alarms(journal, envelope, controller.topics)
        controller._parts = {"journal": journal, "envelope": envelope, "alarms": alarms, "reads": pipeline.reads}
        yield controller, plc, journal, alarms


async def test_a_counter_jump_too_large_to_announce_is_a_critical_alarm_and_a_journal_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """More than max_jump ids at once (a long outage, or a PLC restart that already scanned units):
    nothing is decided unit by unit, nothing goes to any lane, but a person is told how many."""
    async with _missed_units_loop(tmp_path) as (controller, plc, journal, alarms):
        plc.poll(100)
        deciding = asyncio.create_task(controller._decide_missed(plc))  # type: ignore[arg-type]
        try:
            await asyncio.sleep(0.3)  # anchored at 100
            plc.tracker.mark_gap()
            assert plc.poll(100 + 3000) == []  # the link was down a long while (or the PLC restarted)
            await _until(lambda: alarms.raised_total["units_unseen"] >= 1)
            await asyncio.sleep(0.3)
        finally:
            deciding.cancel()
            await asyncio.gather(deciding, return_exceptions=True)
        published = [json.loads(m.payload) for m in await journal.unsent(100)]
        events = await journal.transact(lambda db: db.execute("SELECT unit_id, kind, data FROM events").fetchall())
        units = await journal.transact(lambda db: db.execute("SELECT count(*) FROM units").fetchone()[0])
    [alarm] = [a for a in published if a["schema"] == "returns/v1/alarm"]
    assert (alarm["code"], alarm["severity"]) == ("units_unseen", "critical")
    assert "3000 unit(s) are unaccounted for" in alarm["message"] and "3100 scanned since" in alarm["message"]
    [(unit_id, kind, data)] = events
    assert (unit_id, kind) == (None, "units_unaccounted")
    assert json.loads(data) == {
        "previous_scan_item_id": 100,
        "scan_item_id": 3100,
        "limit": 1024,
        "if_passed": 3000,
        "if_plc_restarted": 3100,
    }
    assert units == 0 and controller._missed_ids == []  # no unit is decided on the strength of it
    assert plc.tracker.jumps == 1


async def test_every_counter_jump_is_reported_even_two_in_one_tick_or_before_the_loop_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with _missed_units_loop(tmp_path) as (controller, plc, journal, alarms):
        plc.poll(100)
        plc.tracker.mark_gap()
        assert plc.poll(100 + 3000) == []
        plc.tracker.mark_gap()
        assert plc.poll(3100 + 2000) == []  # a second jump before anything looked at the first
        deciding = asyncio.create_task(controller._decide_missed(plc))  # type: ignore[arg-type]
        try:
            await _until(lambda: alarms.raised_total["units_unseen"] >= 2)
        finally:
            deciding.cancel()
            await asyncio.gather(deciding, return_exceptions=True)
        events = await journal.transact(lambda db: db.execute("SELECT data FROM events ORDER BY id").fetchall())
    assert [json.loads(d)["scan_item_id"] for (d,) in events] == [3100, 5100]
    assert plc.tracker.jumps == 2 and not plc.tracker.unreported_jumps
