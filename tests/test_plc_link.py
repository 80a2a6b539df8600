"""PlcLink against the simulated conveyor PLC, over real Modbus TCP on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from plc.client import Arrival, PlcLink
from plc.register_map import RegisterMap, default_map
from simulator.conveyor import SimulatedConveyor

from .conftest import until

# Fast belt keeps tests short: scan at 500 mm is 0.17 s away, lane 1 at 1500 mm another 0.33 s.
SPEED = 3000.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _link(port: int, register_map: RegisterMap | None = None, **kw: float) -> PlcLink:
    params: dict[str, float] = {"reconnect_max_s": 0.2, "timeout_s": 0.2}
    params.update(kw)
    return PlcLink("127.0.0.1", port, register_map or default_map(), **params)  # type: ignore[arg-type]


@pytest.fixture
async def line() -> AsyncIterator[tuple[SimulatedConveyor, PlcLink]]:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim, _link(sim.port) as link:
        await link.wait_online(3)
        await link.wait_armed(3)
        yield sim, link


async def _next_arrival(link: PlcLink, timeout_s: float = 2.0) -> Arrival:
    return await asyncio.wait_for(link.arrivals.get(), timeout_s)


async def test_arrivals_in_order_with_plc_ids(line: tuple[SimulatedConveyor, PlcLink]) -> None:
    sim, link = line
    scanned: list[tuple[int, object]] = []
    scanned_at: dict[int, float] = {}

    def on_scan(tid: int, payload: object) -> None:
        scanned.append((tid, payload))
        scanned_at[tid] = time.monotonic()

    sim.on_scan = on_scan
    for name in ("phone", "tablet", "laptop"):
        sim.induct(150.0, name)  # second and third wait for the infeed to clear
    assert sim.units_on_belt == 1 and sim.units_queued == 2
    arrivals = [await _next_arrival(link) for _ in range(3)]
    assert [a.item_id for a in arrivals] == [1, 2, 3]
    assert scanned == [(1, "phone"), (2, "tablet"), (3, "laptop")]
    # Each is stamped by the poll that saw it: after its scan, never before. (Units about 70 ms apart
    # share one poll's stamp when a busy machine delays a poll that long.)
    assert all(scanned_at[a.item_id] <= a.seen_at <= time.monotonic() for a in arrivals)
    assert arrivals[0].seen_at <= arrivals[1].seen_at <= arrivals[2].seen_at
    assert link.signals["item_counter"] == 3 and link.signals["scan_item_id"] == 3
    assert link.counters["missed_arrivals"] == 0
    assert link.arrivals.empty()


async def test_divert_accepted_lands_in_lane(line: tuple[SimulatedConveyor, PlcLink]) -> None:
    sim, link = line
    exits: list[tuple[int, object, int]] = []
    sim.on_exit = lambda tid, payload, lane: exits.append((tid, payload, lane))
    sim.induct(120.0, "phone")
    arrival = await _next_arrival(link)
    result = await link.divert(arrival.item_id, 3)
    assert result.status == "accepted" and result.seq >= 1
    await until(lambda: arrival.item_id in sim.results, what="unit to leave the belt")
    assert sim.results[arrival.item_id] == 3
    assert exits == [(arrival.item_id, "phone", 3)]
    await until(lambda: link.signals.get("diverted_count") == 1, what="diverted_count")
    assert link.signals["divert_ack_item_id"] == arrival.item_id
    assert link.signals["divert_ack_lane"] == 3
    assert link.signals.get("rejected_count") == 0


async def test_divert_too_late_rides_to_reject(line: tuple[SimulatedConveyor, PlcLink]) -> None:
    sim, link = line
    sim.induct(120.0, "tablet")
    arrival = await _next_arrival(link)
    await until(
        lambda: (sim.position_of(arrival.item_id) or 0.0) > sim.diverter_mm(1) + 20, what="unit past lane 1"
    )
    result = await link.divert(arrival.item_id, 1)
    assert result.status == "too_late"
    await until(lambda: arrival.item_id in sim.results, what="unit to leave the belt")
    assert sim.results[arrival.item_id] == 0


async def test_no_command_goes_to_lane_zero(line: tuple[SimulatedConveyor, PlcLink]) -> None:
    sim, link = line
    sim.induct(120.0, "laptop")
    arrival = await _next_arrival(link)
    await until(lambda: arrival.item_id in sim.results, what="unit to leave the belt")
    assert sim.results[arrival.item_id] == 0
    await until(lambda: link.signals.get("rejected_count") == 1, what="rejected_count")
    assert link.signals["diverted_count"] == 0


async def test_divert_rejections_and_sequence(line: tuple[SimulatedConveyor, PlcLink]) -> None:
    sim, link = line
    sim.induct(120.0, "phone")
    arrival = await _next_arrival(link)
    bad_lane = await link.divert(arrival.item_id, 9)
    unknown = await link.divert(4321, 2)
    ok = await link.divert(arrival.item_id, 2)
    assert bad_lane.status == "invalid_lane"
    assert unknown.status == "unknown_item"
    assert ok.status == "accepted"
    assert [bad_lane.seq, unknown.seq, ok.seq] == [1, 2, 3]
    # Values that cannot even be encoded never reach the PLC.
    assert (await link.divert(0, 2)).seq == 0
    assert (await link.divert(arrival.item_id, -1)).status == "invalid_lane"
    # Concurrent commands share one mailbox: each gets its own seq and its own ack.
    sim.induct(120.0, "tablet")
    second = await _next_arrival(link)
    r1, r2 = await asyncio.gather(link.divert(arrival.item_id, 4), link.divert(second.item_id, 5))
    assert {r1.status, r2.status} == {"accepted"} and {r1.seq, r2.seq} == {4, 5}
    await until(lambda: second.item_id in sim.results, what="second unit to leave")
    assert sim.results == {arrival.item_id: 4, second.item_id: 5}


@pytest.mark.parametrize(("left_behind", "expected_seq"), [(65535, 1), (1, 2), (500, 501)])
async def test_seq_wraps_and_resumes_from_plc(left_behind: int, expected_seq: int) -> None:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim:
        # A previous gateway session left this seq in the mailbox (and the PLC never acked it).
        # Restarting at 1 would write a seq the PLC ignores as "not new".
        sim._tables.set("divert_request_seq", left_behind)
        sim._last_request_seq = left_behind
        async with _link(sim.port) as link:
            await link.wait_online(3)
            await link.wait_armed(3)
            sim.induct(100.0, "x")
            arrival = await _next_arrival(link)
            result = await link.divert(arrival.item_id, 1)
            assert (result.status, result.seq) == ("accepted", expected_seq)


async def test_heartbeats(line: tuple[SimulatedConveyor, PlcLink]) -> None:
    sim, link = line
    first = sim.signal("gateway_heartbeat")
    assert isinstance(first, int)
    await until(lambda: (sim.signal("gateway_heartbeat") or 0) >= first + 2, what="gateway heartbeat counting")
    await until(lambda: link.plc_heartbeat_ok, what="plc heartbeat seen")
    sim.freeze_heartbeat = True
    await until(lambda: not link.plc_heartbeat_ok, what="plc heartbeat stale")
    assert link.state == "online"  # a stuck PLC program is not a dead socket
    sim.freeze_heartbeat = False
    await until(lambda: link.plc_heartbeat_ok, what="plc heartbeat back")


async def test_connects_when_server_appears_later() -> None:
    port = _free_port()
    async with _link(port) as link:
        await asyncio.sleep(0.4)  # several failed connects
        assert link.state == "connecting"
        assert link.divert is not None and (await link.divert(1, 1)).status == "link_down"
        async with SimulatedConveyor(port=port, belt_speed_mm_s=SPEED) as sim:
            await link.wait_online(3)
            await link.wait_armed(3)
            sim.induct(100.0, "late")
            assert (await _next_arrival(link)).item_id == 1


async def test_server_restart_goes_offline_then_online(line: tuple[SimulatedConveyor, PlcLink]) -> None:
    sim, link = line
    states: list[str] = []

    async def watch() -> None:
        while True:
            if not states or states[-1] != link.state:
                states.append(link.state)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        await sim.stop_server()
        await until(lambda: link.state == "offline", what="offline")
        assert (await link.divert(1, 1)).status == "link_down"
        assert not link.plc_heartbeat_ok
        # A unit scanned while we are blind must not show up later as a fresh arrival.
        sim.induct(100.0, "unseen")
        await until(lambda: sim.signal("scan_item_id") == 1, what="unseen unit scanned")
        await asyncio.sleep(0.3)
        await sim.start_server()
        await link.wait_online(3)
        await link.wait_armed(3)
        sim.induct(100.0, "seen")
        arrival = await _next_arrival(link)
        assert arrival.item_id == 2
        assert link.counters["missed_arrivals"] == 1
        assert link.counters["reconnects"] >= 1
        assert (await link.divert(arrival.item_id, 1)).status == "accepted"
    finally:
        watcher.cancel()
    assert states[0] == "online" and "offline" in states and states[-1] == "online"


async def test_exception_responses_are_counted_not_fatal() -> None:
    # The gateway's map names an input register the PLC does not have.
    bigger = default_map().to_dict()
    bigger["phantom"] = {"table": "input_register", "address": 300}
    async with (
        SimulatedConveyor(belt_speed_mm_s=SPEED) as sim,
        _link(sim.port, RegisterMap.from_dict(bigger)) as link,
    ):
        await until(lambda: link.counters["exceptions"] >= 5, what="exception responses")
        reads = link.counters["reads"]
        await until(lambda: link.counters["reads"] > reads, what="polls going on")  # loops still running
        assert link.state in ("connecting", "offline")  # never trusted while part of the map fails
        assert "phantom" not in link.signals and "scan_item_id" in link.signals
        assert link.counters["reconnects"] == 0  # an exception reply is not a dead link


async def test_garbage_peer_never_crashes_the_link() -> None:
    replies = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal replies
        try:
            while data := await reader.read(256):
                # Echo the transaction id with a nonsense length and payload.
                writer.write(data[:2] + b"\x00\x00\x00\x05\x01\x83\xff\xff\xff\xff\x00\x01garbage")
                replies += 1
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _link(port, timeout_s=0.05) as link:
            await until(lambda: replies >= 5, what="garbage replies")
            await asyncio.sleep(0.3)
            assert link.state != "online"
            assert link.counters["read_errors"] >= 1
            assert link._runner is not None and not link._runner.done()
            assert (await link.divert(1, 1)).status == "link_down"
    finally:
        server.close()
        await server.wait_closed()


async def test_leaving_cancels_background_tasks() -> None:
    async with SimulatedConveyor(belt_speed_mm_s=SPEED) as sim:
        async with _link(sim.port) as link:
            await link.wait_online(3)
            await link.wait_armed(3)
            runner = link._runner
        assert runner is not None and runner.done()
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert not any(n.startswith("plc-") for n in names)
        assert link.state == "offline"


def test_rejects_map_without_contiguous_mailbox() -> None:
    d = default_map().to_dict()
    d["divert_request_lane"]["address"] = 9
    with pytest.raises(ValueError, match="consecutive"):
        PlcLink("127.0.0.1", 502, RegisterMap.from_dict(d))
    d2 = default_map().to_dict()
    del d2["scan_item_id"]
    with pytest.raises(ValueError, match="scan_item_id"):
        PlcLink("127.0.0.1", 502, RegisterMap.from_dict(d2))
