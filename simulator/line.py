"""The whole simulated grading line: conveyor PLC, scanner, scale, camera and robot cells.

Every device speaks its real protocol (Modbus TCP, serial on ptys, HTTP frames, MQTT), so the
controller under test cannot tell the difference. The line writes what it did to its run folder:
`endpoints.json` (where each device listens), `station.yaml` (a station file for `edge run` wired
to those endpoints), `truth.jsonl` (each unit's ground truth and the lane it physically ended in)
and `cells.jsonl` (what each robot cell did).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import aiomqtt
import yaml

from edge.catalog import Catalog
from edge.config import StationConfig
from edge.contract import Topics
from edge.policy import GradingPolicy
from simulator.camera import SimulatedCamera
from simulator.conveyor import SimulatedConveyor
from simulator.device_faults import DeviceFaultPlan
from simulator.robot_cell import SimulatedRobotCell
from simulator.rtu_bus import RtuBusSim
from simulator.scales import simulated_scale_for
from simulator.scanner import SimulatedScanner
from simulator.scenario import Scenario, SimUnit, UnitFactory, camera_calibration

log = logging.getLogger("simulator.line")

Printer = Callable[[str], None]
# Linux ptys refuse parity settings, so the simulated RS-485 line runs 8N1.
PLC_RTU_BAUDRATE = 19200


class SimulatedLine:
    def __init__(
        self,
        scenario: Scenario,
        station: StationConfig,
        policy: GradingPolicy,
        catalog: Catalog,
        *,
        broker_host: str,
        broker_port: int,
        run_dir: Path,
        printer: Printer = print,
    ) -> None:
        self.scenario = scenario
        self.station = station
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.run_dir = Path(run_dir)
        self.say = printer
        self.topics = Topics(station.mqtt.topic_prefix, station.site, station.line)
        self.factory = UnitFactory(scenario, station, policy, catalog)
        self.units_by_item: dict[int, SimUnit] = {}
        self.final_lane: dict[int, int] = {}
        self.inducted = 0
        self.exited = 0
        self.cells: list[SimulatedRobotCell] = []
        self._stack = contextlib.AsyncExitStack()
        self._truth: TextIO | None = None
        self._cell_log: TextIO | None = None

    async def __aenter__(self) -> SimulatedLine:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stack = self._stack
        self._truth = stack.enter_context((self.run_dir / "truth.jsonl").open("w", encoding="utf-8"))
        self._cell_log = stack.enter_context((self.run_dir / "cells.jsonl").open("w", encoding="utf-8"))
        lane_count = max(lane.id for lane in self.station.lanes)
        if self.scenario.plc_transport == "rtu":
            # The PLC as one drop on an RS-485 line: the controller opens run_dir/plc like an adapter.
            self.plc_bus: RtuBusSim | None = await stack.enter_async_context(
                RtuBusSim(master_link_path=str(self.run_dir / "plc"))
            )
            self.conveyor = await stack.enter_async_context(
                SimulatedConveyor(lanes=lane_count, belt_speed_mm_s=self.scenario.belt_speed_mm_s,
                                  register_map=self.station.plc.build_register_map(), transport="rtu",
                                  serial_port=self.plc_bus.attach(), baudrate=PLC_RTU_BAUDRATE, parity="N")
            )
        else:
            self.plc_bus = None
            self.conveyor = await stack.enter_async_context(
                SimulatedConveyor(port=self.scenario.plc_port, lanes=lane_count,
                                  belt_speed_mm_s=self.scenario.belt_speed_mm_s)
            )
        self.conveyor.on_scan = self._on_scan
        self.conveyor.on_exit = self._on_exit
        self.conveyor.stuck_diverters.update(self.scenario.stuck_diverters)
        # A station with host_trigger gets a scanner in serial trigger mode: silent until SYN T CR.
        self.scanner = await stack.enter_async_context(
            SimulatedScanner(link_path=str(self.run_dir / "scanner"), triggered=self.station.scanner.host_trigger)
        )
        self.scale = await stack.enter_async_context(
            simulated_scale_for(self.station.scale.protocol, str(self.run_dir / "scale"),
                                checksum=self.station.scale.checksum, polled=self.station.scale.polled)
        )
        self.device_faults = DeviceFaultPlan(list(self.scenario.device_faults), self.scanner, self.scale)
        self.camera = await stack.enter_async_context(
            SimulatedCamera(port=self.scenario.camera_port, px_per_mm=self.station.vision.px_per_mm,
                            seed=self.scenario.seed)
        )
        behaviours = {cell.id: cell for cell in self.scenario.cells}
        for cell in self.station.cells:
            if cell.id in self.scenario.external_cells:
                continue  # a cell of the user's own answers this one's orders
            lanes = {lane.id for lane in self.station.lanes if lane.cell == cell.id}
            behaviour = behaviours.get(cell.id)
            robot = SimulatedRobotCell(
                cell.id, lanes, self.topics, self.broker_host, self.broker_port, self.final_lane.get,
                accept_after_s=behaviour.accept_after_s if behaviour else 0.05,
                finish_after_s=behaviour.finish_after_s if behaviour else 0.4,
                lane_capacity=behaviour.lane_capacity if behaviour else 40,
                answer_twice=behaviour.answer_twice if behaviour else False,
                offline_after_orders=behaviour.offline_after_orders if behaviour else None,
                offline_for_s=behaviour.offline_for_s if behaviour else 0.0,
                on_event=self._log_cell_event,
            )
            self.cells.append(await stack.enter_async_context(robot))
        self._write_endpoints()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # What the serial devices were asked and said, for whoever checks the run afterwards.
        scanner = {"host_trigger_mode": self.scanner.triggered, "triggers": self.scanner.triggers,
                   "untriggers": self.scanner.untriggers, "reads_sent": self.scanner.emitted}
        (self.run_dir / "devices.json").write_text(json.dumps({"scanner": scanner}, indent=2) + "\n")
        await self._stack.aclose()

    # -- files for the controller under test ---------------------------------------------------

    @property
    def plc_endpoint(self) -> dict[str, Any]:
        if self.plc_bus is not None:
            return {"transport": "rtu", "port": self.plc_bus.master_path, "baudrate": PLC_RTU_BAUDRATE,
                    "parity": "N", "device_id": self.conveyor.register_map.device_id}
        return {"transport": "tcp", "host": "127.0.0.1", "port": self.conveyor.port}

    def plc_tracking(self) -> dict[str, Any]:
        """The simulated belt's geometry as a station file's plc.tracking section."""
        conveyor = self.conveyor
        return {
            "mm_per_count": 1.0,  # the simulated encoder counts millimetres
            "scan_point_mm": conveyor.scan_point_mm,
            "diverter_mm": {k: conveyor.diverter_mm(k) for k in range(1, conveyor.lanes + 1)},
            "belt_end_mm": conveyor.belt_end_mm,
        }

    @property
    def endpoints(self) -> dict[str, Any]:
        return {
            "plc": self.plc_endpoint,
            "scanner": str(self.run_dir / "scanner"),
            "scale": str(self.run_dir / "scale"),
            "camera": self.camera.url,
            "broker": f"mqtt://{self.broker_host}:{self.broker_port}",
            "station": str(self.run_dir / "station.yaml"),
        }

    def _write_endpoints(self) -> None:
        endpoints = self.endpoints
        (self.run_dir / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")
        station = yaml.safe_load(self.scenario.station.read_text(encoding="utf-8"))
        station["mqtt"] = {**station.get("mqtt", {}), "url": endpoints["broker"]}
        station["scanner"]["port"] = endpoints["scanner"]
        station["scale"]["port"] = endpoints["scale"]
        plc = self.plc_endpoint
        if plc["transport"] == "rtu":
            station["plc"].pop("host", None)
            station["plc"].pop("port", None)
            station["plc"].update(
                transport="rtu", device_id=plc["device_id"],
                serial={"port": plc["port"], "baudrate": plc["baudrate"], "parity": plc["parity"]},
            )
        else:
            station["plc"].update(transport="tcp", host="127.0.0.1", port=self.conveyor.port)
        if self.scenario.plc_exit_tracking:
            station["plc"]["tracking"] = self.plc_tracking()
        station["camera"]["url"] = endpoints["camera"]
        station["grading_policy"] = str(self.station.grading_policy)
        station["catalog"] = str(self.station.catalog)
        station.setdefault("journal", {})["path"] = str(self.run_dir / "journal.db")
        station["journal"].setdefault("evidence_dir", str(self.run_dir / "evidence"))
        station.setdefault("vision", {})["cache_dir"] = str(
            self.station.vision.cache_dir or (Path.home() / ".cache" / "edge" / "numba")
        )
        station["vision"]["camera_homography"] = camera_calibration(self.scenario)
        text = "# Written by the simulator: a station file wired to the simulated devices.\n"
        (self.run_dir / "station.yaml").write_text(text + yaml.safe_dump(station, sort_keys=False))

    def describe(self) -> str:
        e = self.endpoints
        return "\n".join([
            (f"  PLC (Modbus RTU)      {e['plc']['port']}  (pty, {PLC_RTU_BAUDRATE} 8N1) unit id "
             f"{e['plc']['device_id']}, default register map" if e["plc"]["transport"] == "rtu" else
             f"  PLC (Modbus TCP)      127.0.0.1:{e['plc']['port']}  unit id 1, default register map"),
            f"  barcode scanner       {e['scanner']}  (pty, 9600 8N1, CR LF, AIM ids"
            f"{', host trigger SYN T CR' if self.scanner.triggered else ''})",
            f"  scale ({self.station.scale.protocol:<6})        {e['scale']}  (pty, 9600 8N1)",
            f"  camera (HTTP frames)  {e['camera']}/frames/<trigger id>",
            f"  robot cells           {', '.join(c.cell_id for c in self.cells) or 'none'} on {e['broker']}"
            + (f"; not simulated (yours to answer): {', '.join(self.scenario.external_cells)}"
               if self.scenario.external_cells else ""),
            f"  station file          {e['station']}",
        ])

    # -- belt events --------------------------------------------------------------------------

    def _on_scan(self, item_id: int, payload: object) -> None:
        unit: SimUnit = payload  # type: ignore[assignment]
        self.units_by_item[item_id] = unit
        device_faults = self.device_faults.before_scan(unit.index)
        unreadable = unit.fault == "no_read" or "no_read" in device_faults
        if self.scanner.triggered:
            # The label waits in front of the scanner for the controller's trigger.
            self.scanner.present(None if unreadable else unit.barcode, aim=unit.aim, replace=True)
        elif unreadable:
            self.scanner.emit_no_read()
        else:
            self.scanner.emit_read(unit.barcode, aim=unit.aim)
        settle_s = float("inf") if "unstable" in device_faults else self.scenario.scale_settle_s
        self.scale.set_load(unit.weight_g, settle_s=settle_s)
        if "overload" in device_faults:
            self.scale.overload()
        asyncio.get_running_loop().create_task(self.camera.capture(item_id, unit.appearance, unit_key=unit.index))

    def _on_exit(self, item_id: int, payload: object, lane: int) -> None:
        unit: SimUnit = payload  # type: ignore[assignment]
        self.final_lane[item_id] = lane
        self.exited += 1
        record = {**unit.truth(), "item_id": item_id, "physical_lane": lane, "at": time.time()}
        assert self._truth is not None
        self._truth.write(json.dumps(record) + "\n")
        self._truth.flush()

    def _log_cell_event(self, event: dict[str, Any]) -> None:
        assert self._cell_log is not None
        self._cell_log.write(json.dumps(event) + "\n")
        self._cell_log.flush()

    # -- running --------------------------------------------------------------------------------

    async def wait_for_controller(self, timeout_s: float = 120.0) -> bool:
        """Wait until the controller says ONLINE (retained), so no unit passes unseen."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                async with aiomqtt.Client(self.broker_host, self.broker_port,
                                          identifier=f"sim-watch-{id(self)}") as client:
                    await client.subscribe(self.topics.connection, qos=1)
                    async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                        async for message in client.messages:
                            if message.payload in (b"ONLINE", "ONLINE"):
                                return True
            except (aiomqtt.MqttError, TimeoutError):
                await asyncio.sleep(0.5)
        return False

    async def run_units(self, count: int, progress: bool = True) -> None:
        """Induct `count` units (0: forever) at the scenario rate, then wait for the belt to clear."""
        period = 1.0 / self.scenario.rate_per_s
        upcoming: collections.deque[SimUnit] = collections.deque()

        def plan() -> None:
            # Frames rendered ahead of induction (the renderer is far slower than a camera); without
            # a lookahead each unit's frame starts rendering as it is inducted.
            while (len(upcoming) < max(1, self.scenario.camera_lookahead_units)
                   and (count == 0 or self.inducted + len(upcoming) < count)):
                unit = self.factory.next_unit()
                self.camera.prepare(unit.index, unit.appearance)
                upcoming.append(unit)

        plan()
        if self.scenario.camera_lookahead_units:
            await self.camera.wait_prepared()
        next_at = time.monotonic()
        while count == 0 or self.inducted < count:
            plan()
            unit = upcoming.popleft()
            self.conveyor.induct(unit.length_mm, unit)
            self.inducted += 1
            if progress:
                self.say(f"sim: inducted unit {self.inducted}{'/' + str(count) if count else ''}: "
                         f"{unit.item.sku} true grade {unit.true_grade}"
                         f"{' fault ' + unit.fault if unit.fault != 'none' else ''}")
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        while self.exited < self.inducted:
            await asyncio.sleep(0.05)

    async def wait_for_cells(self, expected: int, timeout_s: float = 15.0) -> int:
        """Wait until the simulated cells have finished `expected` orders; returns how many they did
        (orders to external cells are not counted: the simulator does not see them finish)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = sum(
                1 for cell in self.cells for order in cell.record.handled.values()
                if order.state in ("FINISHED", "FAILED")
            )
            if done >= expected:
                return done
            await asyncio.sleep(0.1)
        return done
