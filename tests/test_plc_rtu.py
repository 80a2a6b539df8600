"""PlcLink over Modbus RTU: pymodbus serial client against simulated conveyor PLCs on a pty bus.

Real RTU framing (CRC, device addresses) over real ptys; the multi-drop bus is a pty bridge
(simulator.rtu_bus) because a real RS-485 transceiver cannot run here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import PlcSettings, load_station
from edge.yamlconf import ConfigError
from plc.client import PlcLink, _RequestFailed
from plc.factory import BusConflict, build_links
from plc.register_map import default_map
from plc.rtu import RtuBus, RtuPlcLink
from simulator.conveyor import SimulatedConveyor
from simulator.rtu_bus import RtuBusSim
from tests.conftest import CONFIG
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
                # Each burst either spoiled a reply (a garbled reply) or came while no request waited
                # (a stray reception); which one depends on where it fell in the poll cycle.
                assert bus.noise >= 1
                # Noise may have cost polls (and so the armed state); the line must recover by itself.
                await link.wait_armed(3)
                sim.induct(120.0, "after-noise")
                arrival = await asyncio.wait_for(link.arrivals.get(), 3)
                assert (await link.divert(arrival.item_id, 1)).status == "accepted"
                await until(lambda: arrival.item_id in sim.results, what="unit off the belt")
                assert sim.results[arrival.item_id] == 1
        finally:
            bus.close()


async def test_bytes_no_request_asked_for_are_counted_as_line_noise() -> None:
    """pymodbus drops bytes that arrive between requests without a word; the bus counts them."""
    async with RtuBusSim() as wire, _conveyor(wire, 1):
        bus = RtuBus(wire.master_path, parity=PTY_PARITY, timeout_s=0.05)
        try:
            client = await bus.ensure_open()
            assert client is not None
            assert not (await client.read_input_registers(0, count=1, device_id=1)).isError()
            assert bus.stray_receptions == 0  # a reply to a request is no noise
            wire.inject_to_master(b"\x01\x04\xff\x00\x13\x37\xde\xad\xbe\xef")
            await until(lambda: bus.stray_receptions >= 1, timeout_s=2, what="noise counted")
            # The next request starts from a clean buffer and is answered.
            assert not (await client.read_input_registers(0, count=1, device_id=1)).isError()
        finally:
            bus.close()


async def test_a_reply_spoiled_by_noise_is_told_from_a_silent_device() -> None:
    """Both end in a timeout; only the one with bytes on the line counts as a garbled reply."""
    async with RtuBusSim() as wire, _conveyor(wire, 1):
        bus = RtuBus(wire.master_path, parity=PTY_PARITY, timeout_s=1.0)  # room to inject mid-request
        link = _rtu_link(bus, 1)
        try:
            assert await link._open()  # no poll loop: this test alone uses the bus
            wire.cut()  # the device hears nothing more, so it answers nothing
            with pytest.raises(_RequestFailed):
                await link._read("input_register", 0, 1)
            assert bus.garbled_replies == 0  # a silent line: a missing device, not noise
            request = asyncio.create_task(link._read("input_register", 0, 1))
            await asyncio.sleep(0.1)
            wire.inject_to_master(b"\x01\x04\xff\x00\x13\x37")
            with pytest.raises(_RequestFailed):
                await request
            assert (bus.garbled_replies, bus.stray_receptions) == (1, 0)
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


def _rtu_settings(port: str, device_id: int, **serial: object) -> PlcSettings:
    return PlcSettings.model_validate(
        {
            "transport": "rtu",
            "device_id": device_id,
            "timeout_s": 0.05,
            "serial": {"port": port, "baudrate": 19200, "parity": PTY_PARITY, **serial},
        }
    )


async def test_configured_devices_on_one_port_share_one_bus(tmp_path: Path) -> None:
    """Two PLC devices configured on one RS-485 port (one named by a symlink to the same pty) get
    one serial client between them; the port closes only when the last of them stops."""
    async with RtuBusSim() as wire, _conveyor(wire, 1) as sim1, _conveyor(wire, 2) as sim2:
        alias = str(tmp_path / "ttyRS485")  # as a /dev/serial/by-id/... name would be
        os.symlink(wire.master_path, alias)
        try:
            links = build_links({"infeed": _rtu_settings(wire.master_path, 1), "sorter": _rtu_settings(alias, 2)})
            infeed, sorter = links["infeed"], links["sorter"]
            assert isinstance(infeed, RtuPlcLink) and isinstance(sorter, RtuPlcLink)
            assert infeed.bus is sorter.bus
            async with infeed, sorter:
                await infeed.wait_armed(3)
                await sorter.wait_armed(3)
                sim1.induct(120.0, "a")
                sim2.induct(120.0, "b")
                first = await asyncio.wait_for(infeed.arrivals.get(), 3)
                second = await asyncio.wait_for(sorter.arrivals.get(), 3)
                assert (await infeed.divert(first.item_id, 1)).status == "accepted"
                assert (await sorter.divert(second.item_id, 3)).status == "accepted"
                await until(lambda: 1 in sim1.results and 1 in sim2.results, what="units off both belts")
                assert (sim1.results[1], sim2.results[1]) == (1, 3)
                assert infeed.bus.opens == 1 and infeed.bus.users == 2
            assert infeed.bus.users == 0 and infeed.bus.client is None
        finally:
            os.unlink(alias)


@pytest.mark.parametrize(
    ("second", "problem"),
    [
        ({"device_id": 2, "serial": {"baudrate": 9600}}, "must match"),
        ({"device_id": 1, "serial": {}}, "device id 1"),
    ],
)
def test_mismatched_devices_on_one_port_are_a_config_error_with_line(
    tmp_path: Path, second: dict[str, Any], problem: str
) -> None:
    data = yaml.safe_load((CONFIG / "station.example.yaml").read_text())
    data["grading_policy"] = str(CONFIG / "grading.yaml")
    data["catalog"] = str(CONFIG / "catalog.csv")
    data["plc"] = {"transport": "rtu", "device_id": 1, "serial": {"port": "/dev/ttyUSB0", "baudrate": 19200}}
    data["plc_devices"] = {
        "sorter": {"transport": "rtu", "device_id": second["device_id"],
                   "serial": {"port": "/dev/ttyUSB0", "baudrate": 19200, **second["serial"]}},
    }
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_station(path)
    lines = path.read_text().splitlines()
    devices_at = next(i for i, text in enumerate(lines, 1) if text.startswith("plc_devices:"))
    serial_line = next(i for i, text in enumerate(lines, 1) if i > devices_at and "serial:" in text)
    [message] = caught.value.problems
    assert message.startswith(f"{path}:{serial_line}: plc_devices.sorter.serial:") and problem in message


def test_the_rtu_broadcast_address_is_no_device_id() -> None:
    with pytest.raises(ValueError, match="broadcast"):
        _rtu_settings("/dev/ttyUSB7", 0)
    assert PlcSettings.model_validate({"transport": "tcp", "device_id": 0}).device_id == 0  # TCP: the usual unit id


def test_build_links_refuses_mismatched_line_settings() -> None:
    with pytest.raises(BusConflict, match="parity"):
        build_links({"a": _rtu_settings("/dev/ttyUSB7", 1), "b": _rtu_settings("/dev/ttyUSB7", 2, parity="E")})


async def test_device_dying_mid_run_costs_the_others_one_timeout_at_a_time() -> None:
    """Device 3 stops answering mid-run. Read from the bus' own request record: between any two
    requests device 3 left unanswered, both live devices completed whole poll cycles, and device 3
    went offline and was then only probed (never polled every cycle, never retried back to back)."""
    async with (
        RtuBusSim() as wire,
        _conveyor(wire, 1) as sim1,
        _conveyor(wire, 2) as sim2,
        _conveyor(wire, 3) as sim3,
    ):
        bus = RtuBus(wire.master_path, parity=PTY_PARITY, timeout_s=0.05)
        try:
            async with _rtu_link(bus, 1) as l1, _rtu_link(bus, 2) as l2, _rtu_link(bus, 3) as l3:
                for link in (l1, l2, l3):
                    await link.wait_armed(3)
                trips_before = (l1.counters["failsafe_trips"], l2.counters["failsafe_trips"])
                bus.history.clear()
                await sim3.stop_server()
                await until(lambda: l3.state == "offline", timeout_s=3, what="device 3 offline")
                await until(
                    lambda: sum(1 for d, o in bus.history if d == 3 and o != "ok") >= 6,
                    timeout_s=5, what="device 3 probed after going offline",
                )
                history = list(bus.history)
                # the live lines never noticed
                assert (l1.counters["failsafe_trips"], l2.counters["failsafe_trips"]) == trips_before
                assert l1.armed and l2.armed
                assert sim1.armed and sim2.armed
        finally:
            bus.close()
    failures = [i for i, (device, outcome) in enumerate(history) if device == 3 and outcome != "ok"]
    assert all(history[i][1] == "timeouts" for i in failures)
    for before, after in itertools.pairwise(failures):
        answered = [device for device, outcome in history[before + 1 : after] if outcome == "ok"]
        # a poll cycle is two reads (discrete inputs, input registers): at least one whole cycle each
        assert answered.count(1) >= 2 and answered.count(2) >= 2, (before, after, history[before : after + 1])
    assert l3.counters["timeouts"] >= 3


async def test_bus_noise_and_bad_replies_raise_device_garbage(tmp_path: Path) -> None:
    """The controller's watch: noise once per bus (two devices share it), bad replies per device."""
    from types import SimpleNamespace

    from edge.alarms import Alarms
    from edge.contract import Envelope, Topics
    from edge.daemon import Controller, GarbageWatch
    from edge.journal import Journal
    from edge.metrics import error_counters

    bus = RtuBus("/dev/ttyRS485", name="plc-bus")  # never opened: the counts are set below
    plc, sorter = RtuPlcLink(bus, default_map(device_id=1)), RtuPlcLink(bus, default_map(device_id=2))
    parts = {"plc": plc, "plc_devices": {"sorter": sorter}}
    async with Journal(tmp_path / "j.db") as journal:
        alarms = Alarms(journal, Envelope("edge-t"), Topics("returns/v1", "s", "l"))
        watch = GarbageWatch()
        holder = SimpleNamespace(_parts=parts)
        await Controller._watch_plc_garbage(holder, alarms, watch)  # type: ignore[arg-type]
        assert not alarms.active
        bus.stray_receptions, bus.garbled_replies = 2, 1
        sorter.counters["malformed"] += 1
        await Controller._watch_plc_garbage(holder, alarms, watch)  # type: ignore[arg-type]
        assert set(alarms.active) == {("device_garbage", "plc-bus"), ("device_garbage", "sorter")}
        assert alarms.active[("device_garbage", "plc-bus")].message.startswith(
            "plc-bus sent 3 noise burst(s) or garbled reply(ies)"
        )
        assert "register map" in alarms.active[("device_garbage", "sorter")].message
    assert error_counters(parts)["plc:line_noise"] == 3
