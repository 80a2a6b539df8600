"""Lane availability from the robot cells' state: offline or full lanes send units to the reject lane."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge.alarms import Alarms
from edge.config import load_station
from edge.contract import Envelope, Topics
from edge.grading import Verdict
from edge.journal import Journal
from edge.lanes import LaneGuard, LaneRouter

from .conftest import CONFIG

STATION = load_station(CONFIG / "station.sim.yaml")


def _guard() -> LaneGuard:
    guard = LaneGuard(STATION)
    for cell in ("cell-a", "cell-b", "cell-q"):
        guard.on_connection(cell, "ONLINE")
    return guard


def test_online_cells_with_room_take_their_lanes() -> None:
    guard = _guard()
    assert guard.route(1, "d1") == (1, None)
    assert guard.route(4, "d2") == (4, None)


def test_offline_or_unknown_cell_sends_its_lanes_to_reject_only() -> None:
    guard = _guard()
    guard.on_connection("cell-a", "CONNECTIONBROKEN")
    for lane in (1, 2):
        routed, why = guard.route(lane, f"d{lane}")
        assert routed == 0 and "cell-a is CONNECTIONBROKEN" in (why or "")
    assert guard.route(3, "d3") == (3, None)  # cell-b's lanes are unaffected
    fresh = LaneGuard(STATION)
    assert fresh.route(3, "d4")[0] == 0  # never heard from: unknown state is not trusted
    guard.on_connection("cell-a", "ONLINE")
    assert guard.route(1, "d5") == (1, None)


def test_reported_capacity_counts_down_and_a_full_lane_overflows() -> None:
    guard = _guard()
    assert guard.route(1, "d1") == (1, None)
    assert guard.on_capacity("cell-a", "d1", 2) == 1
    assert guard.route(1, "d2") == (1, None)
    assert guard.route(1, "d3") == (1, None)
    routed, why = guard.route(1, "d4")  # two places were left, both now taken
    # The figure is the controller's count, not the cell's: the reason says both.
    assert (routed, why) == (0, "lane full (cell-a reported 2 free place(s), 2 unit(s) sent there since, "
                                "no report after them)")
    assert guard.route(2, "d5") == (2, None)  # capacity is per lane
    # a report from another cell for our decision, or for an unknown decision, changes nothing
    assert guard.on_capacity("cell-b", "d1", 10) is None
    assert guard.on_capacity("cell-a", "nope", 10) is None
    assert guard.route(1, "d6")[0] == 0
    guard.on_capacity("cell-a", "d3", 5)
    assert guard.route(1, "d7") == (1, None)


def test_a_unit_whose_divert_failed_gives_its_place_back_and_counts_on_the_reject_lane() -> None:
    guard = _guard()
    assert guard.route(1, "d1") == (1, None)
    assert guard.on_capacity("cell-a", "d1", 2) == 1
    assert guard.route(1, "d2") == (1, None)  # one place left
    guard.reroute("d2", 0)  # the PLC refused the divert: the unit rides to the reject lane
    assert guard.free[1] == 2  # lane 1 did not get it: its place is free again
    assert guard.on_capacity("cell-q", "d2", 7) == 0  # the reject lane's cell now reports about it
    guard.reroute("d2", 0)  # said twice: nothing more changes
    assert guard.free[1] == 2


def test_a_place_reported_since_is_not_given_back_twice() -> None:
    """One place left; X takes it; the cell reports 1 free while X's divert is in flight (it has no
    order for X); Y takes that place; X's divert fails. Giving X's place back would let a third
    unit into a lane that has room for one."""
    guard = _guard()
    guard.route(1, "d0")
    guard.on_capacity("cell-a", "d0", 1)
    assert guard.route(1, "x") == (1, None)
    guard.on_capacity("cell-a", "d0", 1)
    assert guard.route(1, "y") == (1, None)
    guard.reroute("x", 0)
    assert guard.free[1] == 0 and guard.route(1, "z")[0] == 0


def test_the_reject_lane_always_takes_a_unit() -> None:
    guard = LaneGuard(STATION)
    guard.on_connection("cell-q", "OFFLINE")
    assert guard.route(0, "d1") == (0, None)


def test_router_quarantines_with_a_reason_and_raises_then_clears_lane_full(tmp_path: Path) -> None:
    async def scenario() -> list[dict]:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), Topics("returns/v1", "s", "l"))
            router = LaneRouter(_guard(), alarms)
            verdict = Verdict("A", "restock", ("grade A",), "R2 reuse", True)
            same, lane = await router.route(verdict, 1, "d1")
            assert (same, lane) == (verdict, 1)
            await router.on_capacity("cell-a", "d1", 0)
            moved, lane = await router.route(verdict, 1, "d2")
            assert lane == 0 and moved.disposition == "quarantine" and moved.grade == "A"
            assert moved.reasons[-1] == (
                "lane 1 (restock) out of service: lane full (cell-a reported 0 free place(s)): reject/manual lane 0"
            )
            await router.route(verdict, 1, "d3")  # still full: counted, not published again
            await router.on_capacity("cell-a", "d1", 3)
            assert (await router.route(verdict, 1, "d4"))[1] == 1
            return [json.loads(m.payload) for m in await journal.unsent()]

    alarms = asyncio.run(scenario())
    assert [(a["code"], a["state"], a["subject"]) for a in alarms] == [
        ("lane_full", "raised", "lane-1"), ("lane_full", "cleared", "lane-1")]
    assert alarms[1]["message"] == (
        "lane 1 has free places again (cell-a reports 3); 2 unit(s) went to the reject/manual lane meanwhile"
    )


def test_a_cell_outage_is_one_lane_unavailable_alarm_per_lane_cleared_when_the_cell_is_back(tmp_path: Path) -> None:
    async def scenario() -> list[dict]:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), Topics("returns/v1", "s", "l"))
            router = LaneRouter(_guard(), alarms)
            verdict = Verdict("A", "restock", ("grade A",), "R2 reuse", True)
            await router.on_connection("cell-a", "CONNECTIONBROKEN")
            for n in range(7):  # a long outage: many units turned away from lanes 1 and 2
                moved, lane = await router.route(verdict, 1 + n % 2, f"d{n}")
                assert lane == 0 and "cell-a is CONNECTIONBROKEN" in moved.reasons[-1]
            await router.on_connection("cell-b", "ONLINE")  # another cell: nothing to clear
            await router.on_connection("cell-a", "ONLINE")
            assert (await router.route(verdict, 1, "d9"))[1] == 1
            await router.on_connection("cell-a", "ONLINE")  # said twice (retained + live): cleared once
            return [json.loads(m.payload) for m in await journal.unsent()]

    alarms = asyncio.run(scenario())
    assert [(a["code"], a["state"], a["subject"]) for a in alarms] == [
        ("lane_unavailable", "raised", "lane-1"), ("lane_unavailable", "raised", "lane-2"),
        ("lane_unavailable", "cleared", "lane-1"), ("lane_unavailable", "cleared", "lane-2")]
    assert "4 unit(s)" in alarms[2]["message"] and "3 unit(s)" in alarms[3]["message"]


def test_a_restart_keeps_recent_reports_counted_down_by_the_orders_sent_since() -> None:
    now = 10_000.0
    guard = _guard()
    orders = [("d9", 1, now - 5.0), ("d8", 1, now - 20.0), ("d7", 3, now - 25.0), ("d1", 1, now - 60.0)]
    reports = {1: (2, now - 30.0), 3: (0, now - 30.0), 4: (9, now - 3600.0), 0: (0, now - 1.0), 77: (1, now)}
    assert guard.restore(reports, orders, now=now) == [1, 3]  # lane 4's is stale; 0 and 77 are no cell's lanes
    assert guard.free == {1: 0, 3: 0}  # two orders to lane 1 since its report of 2; lane 3 was full
    assert guard.why_unavailable(1) == "lane full (cell-a reported 2 free place(s), 2 unit(s) sent there since, " \
                                       "no report after them)"
    assert guard.why_unavailable(4) is None  # not restored: no limit until cell-b reports
    # A report about an order of the last run counts for its lane again, and reopens it.
    assert guard.on_capacity("cell-a", "d8", 4) == 1 and guard.why_unavailable(1) is None
    assert guard.reports().get(3) is not None and guard.unsaved


def test_lane_capacity_survives_a_restart_through_the_journal(tmp_path: Path) -> None:
    from edge.lanes import load_capacity, save_capacity

    from .test_divert_correction import _decided

    async def run() -> tuple[LaneGuard, dict]:
        async with Journal(tmp_path / "j.db") as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            first = _guard()
            first.route(1, "d-U1")
            await _decided(journal, envelope, "U1", item=1, lane=1, cell="cell-a")
            first.on_capacity("cell-a", "d-U1", 3)
            await journal.transact(lambda db: save_capacity(db, first.reports()))
            first.route(1, "d-U2")  # one more unit for lane 1 after the report
            await _decided(journal, envelope, "U2", item=2, lane=1, cell="cell-a")
        async with Journal(tmp_path / "j.db") as journal:  # the controller restarts
            second = _guard()
            second.restore(*await journal.transact(load_capacity))
            # A saved value that does not parse starts the lanes without a limit, and says so.
            await journal.transact(lambda db: db.execute("UPDATE meta SET value = '{\"1\": 5' WHERE key = ?",
                                                          ("lane_capacity",)))
            broken = await journal.transact(load_capacity)
        return second, broken[0]

    second, broken = asyncio.run(run())
    assert second.free == {1: 2} and second.reported == {1: 3}
    assert broken == {}
