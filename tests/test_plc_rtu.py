"""PlcLink over Modbus RTU: pymodbus serial client against simulated conveyor PLCs on a pty bus.

Real RTU framing (CRC, device addresses) over real ptys; the multi-drop bus is a pty bridge
(simulator.rtu_bus) because a real RS-485 transceiver cannot run here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from plc.client import PlcLink
from plc.register_map import default_map
from plc.rtu import RtuBus, RtuPlcLink
from simulator.conveyor import SimulatedConveyor
from simulator.rtu_bus import RtuBusSim
from tests.plc_flow import run_flow, until

SPEED = 3000.0
# Linux ptys refuse parity settings (tcsetattr EINVAL), so the tests run 8N1; a real bus is
# usually 8E1, the RtuBus default.
PTY_PARITY = "N"


def _rtu_link(bus: RtuBus, device_id: int, **kw: float) -> RtuPlcLink:
    params: dict[str, float] = {"reconnect_max_s": 0.3, "poll_period_s": 0.01}
    params.update(kw)
    return RtuPlcLink(bus, default_map(device_id=device_id), **params)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _conveyor(bus: RtuBusSim, device_id: int) -> AsyncIterator[SimulatedConveyor]:
    sim = SimulatedConveyor(
        belt_speed_mm_s=SPEED,
        transport="rtu",
        serial_port=bus.attach(),
        register_map=default_map(device_id=device_id),
        parity=PTY_PARITY,
    )
    async with sim:
        yield sim


async def test_arrival_and_divert_over_rtu() -> None:
    async with RtuBusSim() as wire, _conveyor(wire, 1) as sim:
        bus = RtuBus(wire.master_path, baudrate=19200, parity=PTY_PARITY, timeout_s=0.05)
        try:
            async with _rtu_link(bus, 1) as link:
                await link.wait_online(3)
                await link.wait_armed(3)
                sim.induct(120.0, "phone")
                arrival = await asyncio.wait_for(link.arrivals.get(), 2)
                assert arrival.item_id == 1
                result = await link.divert(arrival.item_id, 2)
                assert result.status == "accepted"
                await until(lambda: 1 in sim.results, what="unit off the belt")
                assert sim.results[1] == 2
                assert link.signals["encoder_count"] > 0 and link.signals["belt_speed_mm_s"] == SPEED
                # the gateway heartbeat reaches the PLC over the serial line
                hb = sim.signal("gateway_heartbeat")
                await until(lambda: sim.signal("gateway_heartbeat") != hb, what="gateway heartbeat")
        finally:
            bus.close()
    assert wire.bytes_to_master > 0 and wire.bytes_to_devices > 0


async def test_dead_device_does_not_stall_the_others() -> None:
    """Two live PLCs (ids 1, 2) and one configured id that never answers (3), on one bus."""
    async with RtuBusSim() as wire, _conveyor(wire, 1) as sim1, _conveyor(wire, 2) as sim2:
        bus = RtuBus(wire.master_path, parity=PTY_PARITY, timeout_s=0.05)
        try:
            async with _rtu_link(bus, 1) as l1, _rtu_link(bus, 2) as l2, _rtu_link(bus, 3) as dead:
                await l1.wait_armed(3)
                await l2.wait_armed(3)
                reads_before = (l1.counters["reads"], l2.counters["reads"])
                states: set[str] = set()

                async def watch() -> None:
                    while True:
                        states.update((l1.safety_state, l2.safety_state))
                        await asyncio.sleep(0.005)

                watcher = asyncio.create_task(watch())
                r1, r2 = await asyncio.gather(
                    run_flow(sim1, l1, units=15, interval_s=0.1),
                    run_flow(sim2, l2, units=15, interval_s=0.1),
                )
                watcher.cancel()
                # Every unit on both live lines was diverted as asked: the dead id cost them nothing
                # they could notice.
                for report in (r1, r2):
                    assert report.wrong_lane() == []
                    assert report.count("accepted") == 15, report.status
                    assert all(report.physical[t] == report.intended[t] for t in report.physical)
                assert states == {"armed"}
                assert dead.state != "online" and dead.counters["timeouts"] >= 1
                assert bus.opens == 1  # the dead device never made anyone reopen the port
                # both live links kept polling (10 ms period over a ~3 s run)
                assert l1.counters["reads"] - reads_before[0] > 200
                assert l2.counters["reads"] - reads_before[1] > 200
                assert sim1.replies_suppressed > 0  # id 1 heard requests for the others and kept quiet
        finally:
            bus.close()


async def test_bus_cut_and_restore_with_units_flowing() -> None:
    async with RtuBusSim() as wire, _conveyor(wire, 1) as sim:
        bus = RtuBus(wire.master_path, parity=PTY_PARITY, timeout_s=0.05)
        try:
            async with _rtu_link(bus, 1) as link:
                await link.wait_armed(3)
                faults: set[str] = set()

                async def cut() -> None:
                    await asyncio.sleep(1.0)
                    wire.cut()
                    await until(lambda: link.state != "online", timeout_s=2, what="link down")
                    faults.add(link.safety_state)
                    await until(lambda: not sim.armed, timeout_s=2, what="PLC fail-safe")
                    await asyncio.sleep(0.5)
                    wire.restore()
                    await link.wait_armed(5)

                report = await run_flow(sim, link, units=40, interval_s=0.1, disturb=cut)
                assert report.wrong_lane() == []
                assert "link_down" in faults
                assert report.count("link_down", "heartbeat_stale", "plc_not_armed", "rearming") >= 3
                assert report.count("accepted") >= 10
                assert link.counters["failsafe_trips"] >= 1
        finally:
            bus.close()


async def test_line_noise_on_the_bus_is_counted_not_fatal() -> None:
    async with RtuBusSim() as wire, _conveyor(wire, 1) as sim:
        bus = RtuBus(wire.master_path, parity=PTY_PARITY, timeout_s=0.05)
        try:
            async with _rtu_link(bus, 1) as link:
                await link.wait_armed(3)
                for _ in range(20):
                    wire.inject_to_master(b"\x01\x04\xff\x00\x13\x37\xde\xad\xbe\xef")
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)  # let the garbled replies time out before judging recovery
                assert link.counters["read_errors"] + link.counters["write_errors"] >= 1
                # Noise may have cost polls (and so the armed state); the line must recover by itself.
                await link.wait_armed(3)
                sim.induct(120.0, "after-noise")
                arrival = await asyncio.wait_for(link.arrivals.get(), 3)
                assert (await link.divert(arrival.item_id, 1)).status == "accepted"
                await until(lambda: arrival.item_id in sim.results, what="unit off the belt")
                assert sim.results[arrival.item_id] == 1
        finally:
            bus.close()


@pytest.mark.parametrize("transport", ["rtu"])
async def test_rtu_link_is_a_plclink(transport: str) -> None:
    bus = RtuBus("/nonexistent/ttyUSB9", timeout_s=0.05)
    async with _rtu_link(bus, 1, reconnect_max_s=0.05) as link:
        assert isinstance(link, PlcLink)
        await asyncio.sleep(0.3)  # the port does not exist: retried, never a crash
        assert link.state == "connecting" and (await link.divert(1, 1)).status == "link_down"
    assert bus.opens == 0 and transport == "rtu"
