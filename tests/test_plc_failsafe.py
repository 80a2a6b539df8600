"""Fail-safe behaviour of the PLC link against the simulated conveyor over real Modbus TCP: link
cuts, frozen heartbeats, a PLC that never arms, counter wraparound, late diverts refused locally,
and replies that are well framed but make no sense."""

from __future__ import annotations

import asyncio
import struct

from hypothesis import given
from hypothesis import strategies as st

from plc.client import PlcLink
from plc.positions import PositionTracker, TrackingGeometry
from plc.register_map import default_map
from simulator.conveyor import SimulatedConveyor
from tests.plc_flow import run_flow, until

SPEED = 3000.0
REFUSED = ("link_down", "heartbeat_stale", "plc_not_armed", "rearming")


def _link(port: int, **kw: object) -> PlcLink:
    params: dict[str, object] = {"reconnect_max_s": 0.2, "timeout_s": 0.2}
    params.update(kw)
    return PlcLink("127.0.0.1", port, default_map(), **params)  # type: ignore[arg-type]


def _geometry(sim: SimulatedConveyor, margin_mm: float = 30.0) -> TrackingGeometry:
    # The simulator counts one encoder step per mm of belt travel.
    return TrackingGeometry(
        mm_per_count=1.0,
        scan_point_mm=sim.scan_point_mm,
        diverter_mm={k: sim.diverter_mm(k) for k in range(1, sim.lanes + 1)},
        margin_mm=margin_mm,
    )


async def test_link_cut_and_restore_with_units_flowing() -> None:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim, _link(sim.port) as link:
        await link.wait_armed(3)
        seen: set[str] = set()

        async def cut() -> None:
            await asyncio.sleep(1.0)
            await sim.stop_server()
            await until(lambda: link.state != "online", timeout_s=2, what="link down")
            seen.add(link.safety_state)
            await until(lambda: not sim.armed, timeout_s=2, what="PLC fail-safe")
            await asyncio.sleep(0.6)
            await sim.start_server()
            await link.wait_armed(5)

        report = await run_flow(sim, link, units=40, interval_s=0.1, disturb=cut)
        assert report.wrong_lane() == []
        assert "link_down" in seen
        assert report.count(*REFUSED) >= 3  # units during the cut were really refused...
        refused = [t for t, s in report.status.items() if s in REFUSED]
        assert all(report.physical[t] == 0 for t in refused)  # ...and all rode to the reject lane
        assert report.count("accepted") >= 10  # and the line came back
        assert link.counters["reconnects"] >= 1 and link.counters["failsafe_trips"] >= 1


async def test_plc_heartbeat_frozen_with_units_flowing() -> None:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim, _link(sim.port) as link:
        await link.wait_armed(3)
        seen: set[str] = set()

        async def freeze() -> None:
            await asyncio.sleep(1.0)
            sim.freeze_heartbeat = True
            await until(lambda: not link.plc_heartbeat_ok, timeout_s=2, what="stale PLC heartbeat")
            seen.add(link.safety_state)
            assert link.state == "online"  # the socket is fine; only the PLC program is in doubt
            # We go quiet in turn, so the PLC drops to its own safe default as well.
            await until(lambda: not sim.armed, timeout_s=2, what="PLC sees the gateway quiet")
            await asyncio.sleep(0.5)
            sim.freeze_heartbeat = False
            await link.wait_armed(5)

        report = await run_flow(sim, link, units=40, interval_s=0.1, disturb=freeze)
        assert report.wrong_lane() == []
        assert "heartbeat_stale" in seen
        assert report.count("heartbeat_stale", "plc_not_armed", "rearming") >= 3
        assert report.count("accepted") >= 10
        assert link.counters["reconnects"] == 0


async def test_plc_never_armed_sends_everything_to_reject() -> None:
    """A gateway that does not write its heartbeat (misconfigured) never arms the line."""
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim, _link(sim.port, write_heartbeat=False) as link:
        await link.wait_online(3)
        await until(lambda: link.plc_heartbeat_ok, what="PLC heartbeat")
        report = await run_flow(sim, link, units=8, interval_s=0.1)
        assert report.wrong_lane() == []
        assert set(report.status.values()) == {"plc_not_armed"}
        assert set(report.physical.values()) == {0}
        assert link.safety_state == "plc_not_armed"


async def test_item_id_and_encoder_wraparound() -> None:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim:
        # As if the line had run a long time: next units are 65533, 65534, 65535, 1, 2, ...
        sim._last_track_id = 65532
        sim._tables.set("scan_item_id", 65532)
        sim._travel_mm = float(2**32 - 1500)  # the encoder wraps while these units ride
        positions = PositionTracker(_geometry(sim))
        async with _link(sim.port, positions=positions) as link:
            await link.wait_armed(3)
            report = await run_flow(sim, link, units=8, interval_s=0.1)
        assert sorted(report.physical) == [1, 2, 3, 4, 5, 65533, 65534, 65535]
        assert report.wrong_lane() == []
        assert report.count("accepted") == 8, report.status
        assert all(report.physical[t] == report.intended[t] for t in report.physical)
        assert link.counters["missed_arrivals"] == 0 and link.counters["resyncs"] == 0
        assert int(sim.signal("encoder_count") or 0) < 2**31  # it really wrapped


async def test_late_divert_refused_locally_before_reaching_the_plc() -> None:
    async with SimulatedConveyor(belt_speed_mm_s=1000.0) as sim:
        positions = PositionTracker(_geometry(sim))
        async with _link(sim.port, positions=positions) as link:
            await link.wait_armed(3)
            sim.induct(120.0, "slow-grade")
            arrival = await asyncio.wait_for(link.arrivals.get(), 3)
            # Grading took too long: lane 1 is 1000 mm past the scan point, the unit is nearly there.
            await until(lambda: (sim.position_of(arrival.item_id) or 0) > sim.diverter_mm(1) - 60, what="late")
            # Armed, so only lateness can refuse it. (A poll held up past the heartbeat timeout by a
            # busy machine disarms the link for a moment: refused then as heartbeat_stale, rightly.)
            await link.wait_armed(3)
            seq_before = sim.signal("divert_request_seq")
            result = await link.divert(arrival.item_id, 1)
            assert result.status == "too_late" and result.seq == 0
            assert sim.signal("divert_request_seq") == seq_before  # nothing was sent
            assert link.counters["late_refused"] == 1
            # a lane further down is still in time
            await link.wait_armed(3)
            assert (await link.divert(arrival.item_id, 5)).status == "accepted"
            await until(lambda: arrival.item_id in sim.results, what="unit off the belt")
            assert sim.results[arrival.item_id] == 5
            # an id the tracker never saw is refused, not guessed
            assert (await link.divert(4242, 3)).status == "too_late"


async def test_short_register_replies_are_malformed_not_trusted() -> None:
    """A Modbus TCP peer that frames replies correctly but returns fewer values than asked."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while header := await reader.readexactly(7):
                tid, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                fc = pdu[0]
                body = bytes([fc, 2, 0, 1]) if fc in (3, 4) else bytes([fc, 1, 0])
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _link(port, timeout_s=0.05) as link:
            await until(lambda: link.counters["malformed"] >= 5, what="malformed replies")
            assert link.state != "online"
            assert "scan_item_id" not in link.signals  # a short block decodes nothing
            assert (await link.divert(1, 1)).status == "link_down"
            assert link._runner is not None and not link._runner.done()
    finally:
        server.close()
        await server.wait_closed()


# -- controller-side tracking, pure ------------------------------------------------------------

GEOM = TrackingGeometry(mm_per_count=0.5, scan_point_mm=500, diverter_mm={1: 1500, 2: 1800}, margin_mm=20)


@given(
    start=st.integers(0, 2**32 - 1),
    travelled=st.integers(0, 2**32 - 1),
    lane=st.integers(-3, 5),
    speed=st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
    age=st.floats(-10, 10, allow_nan=False),
)
def test_tracker_never_in_time_past_the_diverter(
    start: int, travelled: int, lane: int, speed: float | None, age: float
) -> None:
    tracker = PositionTracker(GEOM)
    tracker.on_arrival(7, start)
    now = (start + travelled) % 2**32
    verdict = tracker.check(7, lane, now, age_s=age, speed_mm_s=speed, poll_period_s=0.01)
    if lane not in GEOM.diverter_mm:
        assert verdict == "invalid_lane"
        return
    span_counts = (GEOM.diverter_mm[lane] - GEOM.scan_point_mm) / GEOM.mm_per_count
    if verdict == "in_time":
        # in time means: strictly upstream of the diverter by more than the margin, wrap included
        assert (span_counts - travelled) * GEOM.mm_per_count > GEOM.margin_mm
    if travelled * GEOM.mm_per_count >= GEOM.diverter_mm[lane] - GEOM.scan_point_mm - GEOM.margin_mm:
        assert verdict == "too_late"


@given(encoder=st.integers(-(2**40), 2**40), item=st.integers(0, 70000))
def test_tracker_rejects_counts_it_cannot_place(encoder: int, item: int) -> None:
    tracker = PositionTracker(GEOM)
    if 0 <= encoder < 2**32:
        tracker.on_arrival(item, encoder)
        assert tracker.check(item, 1, encoder) == "in_time"
    else:
        try:
            tracker.on_arrival(item, encoder)
        except ValueError:
            pass
        else:
            raise AssertionError("out-of-range count accepted")
        assert tracker.check(item, 1, encoder) == "too_late"
    assert tracker.check(item + 1, 1, 0) == "unknown_item"


async def test_estop_and_jam_stop_the_belt_and_show_in_the_signals() -> None:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim, _link(sim.port) as link:
        await link.wait_armed(3)
        sim.induct(120.0, "held")
        arrival = await asyncio.wait_for(link.arrivals.get(), 3)
        assert (await link.divert(arrival.item_id, 4)).status == "accepted"
        sim.inject_estop()
        await until(lambda: link.signals.get("estop_healthy") is False, what="e-stop seen")
        await until(lambda: link.signals.get("belt_running") is False, what="belt stopped")
        held_at = sim.position_of(arrival.item_id)
        await asyncio.sleep(0.2)
        assert sim.position_of(arrival.item_id) == held_at  # nothing moves while the e-stop is in
        sim.reset_estop()
        sim.inject_jam()
        await until(lambda: link.signals.get("jam_eye") is True and link.signals.get("fault_word") == 1, what="jam")
        assert link.signals["estop_healthy"] is True and link.signals["belt_running"] is False
        sim.clear_jam()
        # The unit keeps its accepted lane through the stops: the line stayed armed throughout.
        await until(lambda: arrival.item_id in sim.results, what="unit off the belt")
        assert sim.results[arrival.item_id] == 4 and link.armed
