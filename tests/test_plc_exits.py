"""Exit confirmation: lane exit photo-eyes matched to tracked units by encoder position.

The pure matcher is fuzzed; the rest runs against the simulated conveyor PLC over real Modbus TCP,
including a diverter whose paddle does not fire and an exit eye that sees nothing, and finally
journals the conclusions into a real journal with real alarms.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.alarms import Alarms
from edge.contract import Envelope, Topics
from edge.departures import record_departure
from edge.journal import Journal
from plc.client import PlcLink
from plc.exits import ExitEvent, ExitTracker
from plc.positions import PositionTracker, TrackingGeometry
from plc.register_map import RegisterMap, default_map
from simulator.conveyor import SimulatedConveyor
from tests.plc_flow import FlowReport, run_flow, until

SPEED = 2000.0
GEOMETRY = TrackingGeometry(mm_per_count=1.0, scan_point_mm=500.0, diverter_mm={1: 1500.0, 2: 1800.0, 3: 2100.0})


def _tracker(window_mm: float = 100.0, bits: int = 32) -> ExitTracker:
    geometry = TrackingGeometry(
        mm_per_count=GEOMETRY.mm_per_count,
        scan_point_mm=GEOMETRY.scan_point_mm,
        diverter_mm=GEOMETRY.diverter_mm,
        counter_bits=bits,
    )
    return ExitTracker(geometry, belt_end_mm=2400.0, window_mm=window_mm)


# -- pure matching -----------------------------------------------------------------------------


def test_edge_at_the_lane_exit_confirms_the_unit() -> None:
    exits = _tracker()
    exits.observe({0: False, 1: False, 2: False}, 0)
    exits.on_arrival(7, 100)
    exits.expect(7, frozenset({2}))
    assert exits.observe({0: False, 1: False, 2: False}, 1000) == []
    [event] = exits.observe({0: False, 1: False, 2: True}, 100 + 1300 + 20)
    assert (event.kind, event.item_id, event.lane, event.confirmed) == ("departed", 7, 2, True)
    assert exits.in_flight == 0


def test_only_an_edge_no_other_unit_explains_is_sole() -> None:
    """`sole` (what may settle an uncertain divert's lane) only for an eye edge with one candidate:
    not for a unit inferred to have left while the eye stayed blocked by the one ahead of it."""
    exits = ExitTracker(TrackingGeometry(mm_per_count=1.0, scan_point_mm=0.0, diverter_mm={1: 1000.0, 2: 2000.0}),
                        belt_end_mm=3000.0, window_mm=100.0)
    events: list[ExitEvent] = []
    for encoder in range(0, 3700, 50):
        if encoder == 0:
            exits.on_arrival(1, 0)
            exits.expect(1, frozenset({2}))  # accepted for lane 2
        if encoder == 300:
            exits.on_arrival(2, 300)
            exits.expect(2, frozenset({0, 2}))  # uncertain: lane 2 or the belt end; it rode on
        # The first unit blocks lane 2's eye from 2000 to 2400 mm; the second reaches the belt end.
        events += exits.observe({0: 3300 <= encoder < 3500, 1: False, 2: 2000 <= encoder < 2400}, encoder, 50.0)
    first, second = (e for e in events if e.kind == "departed")
    assert (first.item_id, first.lane, first.sole) == (1, 2, True)
    # The tracker still concludes the second left by lane 2 (it may have), but not as sole evidence.
    assert (second.item_id, second.lane, second.confirmed, second.sole) == (2, 2, True, False)
    assert second.to_dict()["sole_candidate"] is False


def test_unit_leaving_by_the_wrong_lane_is_a_mismatch() -> None:
    exits = _tracker()
    exits.observe({0: False, 2: False}, 0)
    exits.on_arrival(9, 0)
    exits.expect(9, frozenset({2}))
    [event] = exits.observe({0: True, 2: False}, 1900)  # belt end is 1900 mm past the scan point
    assert (event.kind, event.lane, event.expected, event.confirmed) == ("departed", 0, (2,), False)


def test_unit_past_the_belt_end_unseen_is_reported_once() -> None:
    exits = _tracker()
    exits.observe({0: False}, 0)
    exits.on_arrival(3, 0)
    assert exits.observe({0: False}, 1900) == []
    [event] = exits.observe({0: False}, 2001)
    assert (event.kind, event.item_id, event.expected) == ("not_seen_leaving", 3, (0,))
    assert exits.observe({0: False}, 2500) == []


def test_eye_edge_nobody_explains_is_unmatched_and_first_sample_is_no_edge() -> None:
    exits = _tracker()
    assert exits.observe({1: True}, 0) == []  # blocked at the first sample: a baseline, not an edge
    exits.on_arrival(4, 0)
    exits.observe({1: False}, 10)
    [event] = exits.observe({1: True}, 20)  # the unit is nowhere near lane 1 yet
    assert (event.kind, event.item_id, event.lane) == ("unmatched_exit", None, 1)
    assert exits.in_flight == 1


def test_link_gap_flags_units_and_resets_eye_baseline() -> None:
    exits = _tracker()
    exits.observe({1: False}, 0)
    exits.on_arrival(5, 0)
    exits.mark_gap()
    assert exits.observe({1: True}, 1000) == []  # first sample after the gap
    [event] = exits.observe({1: True}, 2100)
    assert event.kind == "not_seen_leaving" and event.blind


def test_late_arrival_sample_widens_the_window() -> None:
    for slack_mm, kind in ((300.0, "departed"), (0.0, "unmatched_exit")):
        exits = _tracker()
        exits.observe({1: False}, 0)
        exits.on_arrival(1, 250, slack_mm=slack_mm)  # seen 250 mm late: its travel reads short
        exits.expect(1, frozenset({1}))
        [event] = exits.observe({1: True}, 1010)
        assert event.kind == kind


def test_of_two_units_near_an_exit_the_one_sent_there_is_matched() -> None:
    exits = _tracker()
    exits.observe({1: False}, 0)
    exits.on_arrival(1, 0)
    exits.expect(1, frozenset({2}))  # riding past lane 1 to lane 2: 60 mm past lane 1's exit
    exits.on_arrival(2, 150)
    exits.expect(2, frozenset({1}))  # 90 mm short of lane 1's exit, still within the window
    [event] = exits.observe({1: True}, 1060)
    assert (event.item_id, event.confirmed) == (2, True)
    assert exits.expected(1) == frozenset({2})  # still on its way


def test_eye_never_seen_clear_between_two_units_of_one_lane() -> None:
    """A late poll can miss the short gap between two units leaving by the same lane."""
    exits = _tracker()
    exits.observe({1: False, 2: False}, 0)
    exits.on_arrival(1, 0)
    exits.expect(1, frozenset({1}))
    exits.on_arrival(2, 200)
    exits.expect(2, frozenset({1}))
    exits.on_arrival(3, 400)
    exits.expect(3, frozenset({2}))  # passes lane 1's exit on its way to lane 2
    [first] = exits.observe({1: True, 2: False}, 1010)
    assert (first.item_id, first.confirmed) == (1, True)
    assert exits.observe({1: True, 2: False}, 1150) == []  # unit 2 not at the exit yet
    [second] = exits.observe({1: True, 2: False}, 1215)  # still blocked: never seen clear
    assert (second.item_id, second.lane, second.confirmed) == (2, 1, True)
    assert exits.observe({1: True, 2: False}, 1420) == []  # unit 3 passes, blocked eye or not
    assert exits.expected(3) == frozenset({2})


def test_eye_blocked_too_long_confirms_nothing_more() -> None:
    exits = _tracker()
    exits.observe({1: False}, 0)
    exits.on_arrival(1, 0)
    exits.expect(1, frozenset({1}))
    [first] = exits.observe({1: True}, 1000)
    assert first.item_id == 1
    exits.on_arrival(2, 1100)
    exits.expect(2, frozenset({1}))
    # Still blocked 1100 mm later (a jammed chute): unit 2 reaching the exit is not confirmed by it.
    assert exits.observe({1: True}, 2100) == []
    assert exits.expected(2) == frozenset({1})


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(0, 2**32 - 1),
    pitch=st.integers(25, 60).map(lambda tens: tens * 10),
    lanes=st.lists(st.sampled_from([0, 1, 2, 3]), min_size=1, max_size=12),
    jitter=st.integers(-40, 40),
)
def test_every_unit_is_matched_to_its_own_exit_across_wraparound(
    start: int, pitch: int, lanes: list[int], jitter: int
) -> None:
    """Units a pitch apart, each leaving by its lane, sampled with poll jitter: each exit edge is
    matched to the right unit, whatever the encoder's starting value (wraps included)."""
    exits = _tracker()
    mod = 2**32
    exit_at: list[tuple[int, int, int]] = []  # (encoder when the eye trips, item, lane)
    for i, lane in enumerate(lanes):
        scan = i * pitch
        exit_mm = 2400.0 if lane == 0 else GEOMETRY.diverter_mm[lane]
        exit_at.append((scan + int(exit_mm - 500.0) + jitter, i + 1, lane))
    arrivals = {i * pitch: i + 1 for i in range(len(lanes))}
    # Replay the belt in 10 mm steps (a 10 ms poll at 1 m/s): arrivals, expectations, eye samples.
    departed: dict[int, int] = {}
    end = max(e for e, _, _ in exit_at) + 400
    exits.observe({lane: False for lane in (0, 1, 2, 3)}, start)
    pos = 0
    while pos <= end:
        if pos in arrivals:
            exits.on_arrival(arrivals[pos], (start + pos) % mod)
            exits.expect(arrivals[pos], frozenset({lanes[arrivals[pos] - 1]}))
        eyes = {lane: any(e <= pos < e + 60 and ln == lane for e, _, ln in exit_at) for lane in (0, 1, 2, 3)}
        for event in exits.observe(eyes, (start + pos) % mod):
            assert event.kind == "departed", event
            assert event.item_id is not None and event.confirmed
            departed[event.item_id] = event.lane or 0
        pos += 10
    assert departed == {item: lane for _, item, lane in exit_at}


@given(st.lists(st.tuples(st.integers(-5, 2**33), st.booleans()), max_size=30))
def test_hostile_encoder_values_raise_clear_errors_or_track(samples: list[tuple[int, bool]]) -> None:
    exits = _tracker()
    exits.on_arrival(1, 0)
    for encoder, eye in samples:
        try:
            events = exits.observe({0: eye, 1: eye}, encoder)
        except ValueError as exc:
            assert not 0 <= encoder < 2**32 and "outside" in str(exc)
            continue
        assert all(isinstance(e, ExitEvent) for e in events)


# -- against the simulated conveyor PLC ----------------------------------------------------------


def _exit_link(sim: SimulatedConveyor) -> PlcLink:
    geometry = TrackingGeometry(
        mm_per_count=1.0,  # the simulator counts one encoder step per mm of belt
        scan_point_mm=sim.scan_point_mm,
        diverter_mm={k: sim.diverter_mm(k) for k in range(1, sim.lanes + 1)},
        margin_mm=30.0,
    )
    return PlcLink(
        "127.0.0.1", sim.port, default_map(), timeout_s=0.2, reconnect_max_s=0.2,
        positions=PositionTracker(geometry), exits=ExitTracker(geometry, belt_end_mm=sim.belt_end_mm),
    )


def _drain(link: PlcLink) -> list[ExitEvent]:
    events = []
    while not link.departures.empty():
        events.append(link.departures.get_nowait())
    return events


async def _flow(
    sim: SimulatedConveyor, units: int, length_mm: float = 120.0
) -> tuple[FlowReport, list[ExitEvent], PlcLink]:
    async with _exit_link(sim) as link:
        await link.wait_armed(3)
        report = await run_flow(sim, link, units=units, interval_s=0.1, length_mm=length_mm)
        return report, _drain(link), link


async def test_every_unit_confirmed_leaving_by_its_lane() -> None:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim:
        # An exit eye is blocked while its unit slides past, and only a poll in that time sees it: 300 mm
        # units keep each eye blocked for 150 ms, so a poll a busy machine holds up (the simulated PLC on
        # the same event loop runs on meanwhile) does not miss a whole unit. A missed one would be
        # reported as not seen leaving, rightly; what this test checks is the matching of those it sees.
        report, events, link = await _flow(sim, units=25, length_mm=300.0)
    assert report.wrong_lane() == []
    departed = {e.item_id: e for e in events if e.kind == "departed"}
    assert [e for e in events if e.kind != "departed"] == []
    assert set(departed) == set(report.physical)
    assert all(departed[t].lane == lane and departed[t].confirmed for t, lane in report.physical.items())
    assert report.count("accepted") >= 20  # the exits really were diverter lanes, not all lane 0
    assert link.counters["departures"] == 25 and link.counters["divert_mismatch"] == 0


async def test_diverter_that_does_not_fire_is_a_divert_mismatch() -> None:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim:
        sim.stuck_diverters.add(2)
        report, events, link = await _flow(sim, units=20)
    stuck = {t for t, s in report.status.items() if s == "accepted" and report.intended[t] == 2}
    assert stuck, "no unit was sent to the stuck diverter"
    assert all(report.physical[t] == 0 for t in stuck)  # the fault really happened
    mismatches = {e.item_id: e for e in events if e.kind == "departed" and not e.confirmed}
    lost = {e.item_id for e in events if e.kind == "not_seen_leaving"}
    confirmed = {e.item_id for e in events if e.kind == "departed" and e.confirmed}
    # Every stuck unit is alarmed and none is confirmed. (With polls on time each is a mismatch
    # seen at the belt end; a stalled poll may leave two units close enough that one is only
    # reported as not seen leaving instead.)
    assert stuck <= set(mismatches) | lost and not stuck & confirmed
    assert all(e.lane == 0 and e.expected == (2,) for e in mismatches.values())
    assert link.counters["divert_mismatch"] == len(mismatches) >= 1


async def test_blind_exit_eye_reports_units_not_seen_leaving() -> None:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim:
        sim.blind_exit_eyes.add(3)
        report, events, link = await _flow(sim, units=15)
        # A unit is given up on only once the belt has carried it past the belt end.
        await until_counter(link, "unit_not_seen_leaving", report, lane=3)
    to_lane_3 = {t for t, lane in report.physical.items() if lane == 3}
    assert to_lane_3
    everything = [*events, *_drain(link)]
    lost = {e.item_id for e in everything if e.kind == "not_seen_leaving"}
    confirmed = {e.item_id for e in everything if e.kind == "departed" and e.confirmed}
    assert to_lane_3 <= lost and not to_lane_3 & confirmed
    # The units of the other lanes were seen leaving by their lanes.
    assert confirmed >= set(report.physical) - to_lane_3 - {e.item_id for e in everything if e.kind != "departed"}
    assert link.counters["unit_not_seen_leaving"] == len(lost)


async def until_counter(link: PlcLink, counter: str, report: FlowReport, lane: int) -> None:
    expected = sum(1 for physical in report.physical.values() if physical == lane)
    await until(lambda: link.counters[counter] >= expected, timeout_s=3, what=counter)


# -- journal and alarms -------------------------------------------------------------------------


@pytest.mark.parametrize("confirmed", [True, False])
async def test_departures_are_journalled_and_mismatches_alarmed(tmp_path: Path, confirmed: bool) -> None:
    async with Journal(tmp_path / "journal.db") as journal:
        alarms = Alarms(journal, Envelope("edge-test"), Topics("returns/v1", "site", "line"))
        await journal.record_decision("U1", "d-1", 42, {"lane": 2}, [])
        event = ExitEvent("departed", 42, 2 if confirmed else 0, (2,), 1300.0, 1800)
        assert await record_departure(journal, alarms, event) == "U1"
        await record_departure(journal, alarms, ExitEvent("not_seen_leaving", 43, None, (0,), 2001.0, 2501))
        await record_departure(journal, alarms, ExitEvent("unmatched_exit", None, 4, (), None, 99))
    with sqlite3.connect(tmp_path / "journal.db") as db:
        rows = db.execute("SELECT unit_id, kind, data FROM events ORDER BY id").fetchall()
        published = [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY seq")]
    assert [(u, k) for u, k, _ in rows] == [("U1", "departed"), (None, "not_seen_leaving"), (None, "unmatched_exit")]
    assert json.loads(rows[0][2])["lane"] == (2 if confirmed else 0)
    assert json.loads(rows[0][2])["confirmed"] is confirmed
    codes = [p["code"] for p in published]
    assert codes == ([] if confirmed else ["divert_mismatch"]) + ["unit_not_seen_leaving", "exit_unmatched"]
    assert alarms.raised_total["divert_mismatch"] == (0 if confirmed else 1)


def test_exit_confirmation_is_off_when_a_lane_has_no_exit_eye_mapped() -> None:
    """Otherwise every unit of that lane would be alarmed as never seen leaving."""
    full = default_map()
    without_reject_eye = RegisterMap({k: sig for k, sig in full.signals.items() if k != "reject_eye"})
    exits = ExitTracker(GEOMETRY, belt_end_mm=2400.0)
    assert PlcLink("127.0.0.1", 1, full, exits=exits).exits is exits
    assert PlcLink("127.0.0.1", 1, without_reject_eye, exits=exits).exits is None


async def test_departure_waits_for_a_decision_journalled_late(tmp_path: Path) -> None:
    """The unit left before grading finished: its exit still lands on its unit, not on nobody."""
    async with Journal(tmp_path / "journal.db") as journal:
        alarms = Alarms(journal, Envelope("edge-test"), Topics("returns/v1", "site", "line"))

        async def decide_later() -> None:
            await asyncio.sleep(0.3)
            await journal.record_decision("U7", "d-7", 7, {"lane": 0}, [])

        decider = asyncio.create_task(decide_later())
        event = ExitEvent("departed", 7, 0, (0,), 2500.0, 3000)
        assert await record_departure(journal, alarms, event, decision_wait_s=5.0) == "U7"
        await decider
        assert await record_departure(journal, alarms, ExitEvent("departed", 8, 0, (0,), 1.0, 1)) is None
