"""A simulated conveyor PLC: belt physics plus a real Modbus server (pymodbus), TCP or RTU.

Over RTU the server listens on a serial port path (a pty from simulator.rtu_bus) and answers only
its own device id, as a drop on a real RS-485 bus does.

The PLC's own fail-safe: it watches the gateway heartbeat register; while that has not changed
for gateway_timeout_s it is "not armed": new divert requests are answered with status 5 (not
armed), so every unit without an accepted divert rides to the reject lane, and the armed bit
(0x0004) of status_word is clear. Diverts accepted before the trip stand: the controller had
already recorded and announced them, and voiding them would make its records wrong.

The PLC state lives in plain Python lists laid out by the register map. pymodbus 3.16 serves a
SimDevice whose `action` hook runs on every request: it copies our tables into the server's
block before a read and copies written values back into our tables, so the scan loop never
touches pymodbus internals and everything runs on one event loop without locks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from plc.register_map import BIT_TABLES, TABLES, RegisterMap, Table, Value, default_map
from plc.tracking import next_id

log = logging.getLogger(__name__)

ACK_ACCEPTED: Final = 1
ACK_TOO_LATE: Final = 2
ACK_UNKNOWN_ITEM: Final = 3
ACK_INVALID_LANE: Final = 4
ACK_NOT_ARMED: Final = 5

STATUS_RUNNING: Final = 0x0001
STATUS_JAM: Final = 0x0002
STATUS_ARMED: Final = 0x0004
FAULT_JAM: Final = 0x0001

_FC_TABLE: Final[dict[int, Table]] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete_input",
    3: "holding_register",
    6: "holding_register",
    16: "holding_register",
    22: "holding_register",
    23: "holding_register",
    4: "input_register",
}
# SimDevice tuple order: (coils, discrete inputs, holding registers, input registers).
_SIM_ORDER: Final[tuple[Table, ...]] = ("coil", "discrete_input", "holding_register", "input_register")
_HEARTBEAT_PERIOD_S: Final = 0.1
_RECENT_EXITS: Final = 1024


@dataclass
class _Unit:
    length_mm: float
    payload: object
    front_mm: float = 0.0  # leading edge position along the belt
    track_id: int | None = None
    lane: int = 0  # commanded lane; 0 rides to the belt end

    @property
    def back_mm(self) -> float:
        return self.front_mm - self.length_mm

    def covers(self, pos: float) -> bool:
        return self.back_mm <= pos <= self.front_mm


class _Tables:
    """PLC memory: one list per Modbus table, indexed from the table's base address."""

    def __init__(self, register_map: RegisterMap) -> None:
        self.map = register_map
        self.base: dict[Table, int] = {}
        self.data: dict[Table, list[int]] = {}
        for table in TABLES:
            span = register_map.table_span(table) or (0, 1)
            base = span[0]
            if table in BIT_TABLES:
                base -= base % 16  # pymodbus stores bits in 16-bit registers
            size = span[1] - base
            if table in BIT_TABLES:
                size += -size % 16
            self.base[table] = base
            self.data[table] = [0] * size

    def set(self, name: str, value: Value) -> None:
        if name not in self.map:
            return  # a custom map may leave out signals the physics produce
        sig = self.map[name]
        off = sig.address - self.base[sig.table]
        self.data[sig.table][off : off + sig.width] = sig.encode(value)

    def get(self, name: str) -> Value | None:
        if name not in self.map:
            return None
        sig = self.map[name]
        off = sig.address - self.base[sig.table]
        return sig.decode(self.data[sig.table][off : off + sig.width])

    def sim_device(self, action: Callable[..., object]) -> SimDevice:
        blocks: list[list[SimData]] = []
        for table in _SIM_ORDER:
            base, values = self.base[table], self.data[table]
            if table in BIT_TABLES:
                data = SimData(address=base, values=[bool(v) for v in values], datatype=DataType.BITS)
            else:
                data = SimData(address=base, values=list(values), datatype=DataType.REGISTERS)
            blocks.append([data])
        # id 0 answers every unit id, like most Modbus TCP PLCs do.
        simdata = (blocks[0], blocks[1], blocks[2], blocks[3])
        return SimDevice(id=0, simdata=simdata, action=action)  # type: ignore[arg-type]

    def mirror_to(self, table: Table, registers: list[int]) -> None:
        values = self.data[table]
        words = SimUtils.bitsToRegisters([bool(v) for v in values]) if table in BIT_TABLES else values
        registers[: len(words)] = words

    def apply_write(self, table: Table, address: int, values: list[int] | list[bool]) -> None:
        off = address - self.base[table]
        data = self.data[table]
        for i, v in enumerate(values):
            if 0 <= off + i < len(data):
                data[off + i] = int(v) & 0xFFFF


class SimulatedConveyor:
    """A belt with a scan point, N diverters and a reject end, behind a Modbus TCP server."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        lanes: int = 5,
        belt_speed_mm_s: float = 1000.0,
        scan_point_mm: float = 500.0,
        first_divert_mm: float = 1500.0,
        divert_spacing_mm: float = 300.0,
        scan_cycle_s: float = 0.005,
        register_map: RegisterMap | None = None,
        *,
        min_gap_mm: float = 50.0,
        divert_lead_mm: float = 0.0,
        jam_eye_mm: float | None = None,
        transport: Literal["tcp", "rtu"] = "tcp",
        serial_port: str | None = None,
        baudrate: int = 19200,
        parity: Literal["N", "E", "O"] = "E",
        gateway_timeout_s: float = 0.5,
    ) -> None:
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        if not 0 < scan_point_mm < first_divert_mm:
            raise ValueError("scan point must lie between the infeed and the first diverter")
        self.host = host
        self.port = port
        self.lanes = lanes
        self.belt_speed_mm_s = belt_speed_mm_s
        self.scan_point_mm = scan_point_mm
        self.first_divert_mm = first_divert_mm
        self.divert_spacing_mm = divert_spacing_mm
        self.scan_cycle_s = scan_cycle_s
        self.min_gap_mm = min_gap_mm
        # How far upstream of its diverter a unit must still be for the paddle to make it.
        self.divert_lead_mm = divert_lead_mm
        self.belt_end_mm = self.diverter_mm(lanes) + divert_spacing_mm
        self.jam_eye_mm = jam_eye_mm if jam_eye_mm is not None else (scan_point_mm + first_divert_mm) / 2
        self.register_map = register_map or default_map(lanes=max(lanes, 5))
        if transport == "rtu" and not serial_port:
            raise ValueError("an RTU conveyor needs serial_port (e.g. a pty path)")
        self.transport = transport
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.parity = parity
        self.gateway_timeout_s = gateway_timeout_s
        self.armed = False
        self.replies_suppressed = 0
        self._request_device: int | None = None

        self.on_scan: Callable[[int, object], None] | None = None
        self.on_exit: Callable[[int, object, int], None] | None = None
        self.results: dict[int, int] = {}
        self.freeze_heartbeat = False
        self.jammed = False
        self.estop = False
        # Faults: a diverter whose paddle does not fire (its units ride on to the belt end), and an
        # exit eye that never sees anything (dirty lens, cut wire).
        self.stuck_diverters: set[int] = set()
        self.blind_exit_eyes: set[int] = set()

        self._tables = _Tables(self.register_map)
        self._belt: list[_Unit] = []  # ordered downstream first
        self._infeed_queue: collections.deque[_Unit] = collections.deque()
        # Units sliding out through a lane exit: [lane, travel left before they clear its eye].
        self._leaving: list[list[float]] = []
        self._recent_exits: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._last_track_id = 0
        self._item_counter = 0
        self._diverted = 0
        self._rejected = 0
        self._travel_mm = 0.0
        self._heartbeat = 0
        self._last_request_seq: int = 0
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._gateway_hb: int | None = None
        self._gateway_hb_at = 0.0
        self._scan_task: asyncio.Task[None] | None = None

        self._tables.set("estop_healthy", True)
        self._tables.set("belt_run", True)  # a real PLC would boot with the belt commanded on
        self._tables.set("belt_speed_mm_s", min(int(belt_speed_mm_s), 0xFFFF))

    # -- geometry --------------------------------------------------------------------------------

    def diverter_mm(self, lane: int) -> float:
        """Position of lane `lane`'s diverter (lane 0 is the belt end)."""
        if lane == 0:
            return self.belt_end_mm
        return self.first_divert_mm + self.divert_spacing_mm * (lane - 1)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start_server()
        self._last_tick = time.monotonic()
        self._scan_task = asyncio.create_task(self._scan_loop(), name="sim-conveyor-scan")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._scan_task = self._scan_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.stop_server()

    async def start_server(self) -> None:
        """Start (or restart) serving Modbus TCP; the belt keeps its state across restarts."""
        if self._server is not None:
            return
        device = self._tables.sim_device(self._on_request)
        if self.transport == "rtu":
            serial = ModbusSerialServer(
                device,
                framer=FramerType.RTU,
                port=self.serial_port or "",
                baudrate=self.baudrate,
                parity=self.parity,
                trace_packet=self._rtu_only_own_id,
                trace_pdu=self._note_request_device,
            )
            await serial.serve_forever(background=True)
            self._server = serial
            log.info(
                "simulated conveyor PLC serving RTU device %d on %s",
                self.register_map.device_id,
                self.serial_port,
            )
            return
        server = ModbusTcpServer(device, address=(self.host, self.port))
        await server.serve_forever(background=True)
        self._server = server
        sockets = getattr(server.transport, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]  # keep the same port across restarts
        log.info("simulated conveyor PLC serving on %s:%s", self.host, self.port)

    def _rtu_only_own_id(self, sending: bool, packet: bytes) -> bytes:
        # The pymodbus simulator answers every device id (and 3.16's ignore_missing_devices does
        # not work with a SimDevice), but on a shared bus a drop must stay silent for other ids.
        if sending and packet and packet[0] != self.register_map.device_id:
            self.replies_suppressed += 1
            return b""
        return packet

    def _note_request_device(self, sending: bool, pdu: Any) -> Any:
        # Requests arrive one at a time on a bus (the master waits for each reply or its timeout),
        # so the id of the last request received is the one the action hook is handling.
        if not sending:
            self._request_device = getattr(pdu, "dev_id", None)
        return pdu

    async def stop_server(self) -> None:
        """Stop serving and drop client connections (the belt keeps running)."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        table = _FC_TABLE.get(function_code)
        if table is None:
            return
        if self.transport == "rtu" and self._request_device != self.register_map.device_id:
            # Addressed to another drop on the bus: a real PLC ignores it, writes included.
            return
        if set_values:
            self._tables.apply_write(table, address, set_values)
        self._tables.mirror_to(table, registers)

    # -- Python API for the line simulator ----------------------------------------------------

    def induct(self, length_mm: float, payload: object) -> None:
        """Put a unit on the belt at the infeed, or queue it until the infeed is clear."""
        if length_mm <= 0:
            raise ValueError("length_mm must be > 0")
        unit = _Unit(length_mm=float(length_mm), payload=payload)
        if not self._infeed_queue and self._infeed_clear():
            self._belt.append(unit)
        else:
            self._infeed_queue.append(unit)

    @property
    def units_on_belt(self) -> int:
        return len(self._belt)

    @property
    def units_queued(self) -> int:
        return len(self._infeed_queue)

    def inject_jam(self) -> None:
        """Stop the belt with the jam eye blocked, as a stuck unit would."""
        self.jammed = True

    def clear_jam(self) -> None:
        self.jammed = False

    def inject_estop(self) -> None:
        """Press the e-stop: the belt stops and estop_healthy drops until `reset_estop`."""
        self.estop = True

    def reset_estop(self) -> None:
        self.estop = False

    def signal(self, name: str) -> Value | None:
        """Current value of any mapped signal, as the PLC holds it."""
        return self._tables.get(name)

    def position_of(self, track_id: int) -> float | None:
        """Leading-edge position of a tracked unit still on the belt."""
        for unit in self._belt:
            if unit.track_id == track_id:
                return unit.front_mm
        return None

    # -- PLC scan ----------------------------------------------------------------------------------

    def _infeed_clear(self) -> bool:
        return all(u.back_mm >= self.min_gap_mm for u in self._belt)

    async def _scan_loop(self) -> None:
        next_hb = time.monotonic() + _HEARTBEAT_PERIOD_S
        while True:
            await asyncio.sleep(self.scan_cycle_s)
            now = time.monotonic()
            # A stalled event loop must not teleport units by seconds in one step.
            dt = min(now - self._last_tick, 0.5)
            self._last_tick = now
            try:
                self.scan(dt)
            except Exception:
                log.exception("simulated PLC scan failed")
            if now >= next_hb:
                next_hb = max(next_hb + _HEARTBEAT_PERIOD_S, now)
                if not self.freeze_heartbeat:
                    self._heartbeat = (self._heartbeat + 1) & 0xFFFF
                    self._tables.set("plc_heartbeat", self._heartbeat)

    def scan(self, dt: float) -> None:
        """One PLC scan: requests, belt motion, eyes, registers. Public so tests can step it."""
        self._watch_gateway()
        self._handle_divert_request()
        commanded = self._tables.get("belt_run") if "belt_run" in self.register_map else True
        running = bool(commanded) and not self.jammed and not self.estop
        if running:
            self._move(self.belt_speed_mm_s * dt)
        while self._infeed_queue and self._infeed_clear():
            self._belt.append(self._infeed_queue.popleft())
        self._update_outputs(running)

    def _watch_gateway(self) -> None:
        now = time.monotonic()
        hb = self._tables.get("gateway_heartbeat")
        if isinstance(hb, int) and hb != self._gateway_hb:
            if self._gateway_hb is not None:
                self._gateway_hb_at = now
            self._gateway_hb = hb
        armed = self._gateway_hb_at > 0 and now - self._gateway_hb_at <= self.gateway_timeout_s
        if self.armed and not armed:
            log.warning("simulated PLC: gateway heartbeat stale, undecided units go to the reject lane")
        self.armed = armed

    def _handle_divert_request(self) -> None:
        seq = self._tables.get("divert_request_seq")
        if not isinstance(seq, int) or seq == self._last_request_seq:
            return
        self._last_request_seq = seq
        item = int(self._tables.get("divert_request_item_id") or 0)
        lane = int(self._tables.get("divert_request_lane") or 0)
        status = self._decide(item, lane)
        self._tables.set("divert_ack_item_id", item)
        self._tables.set("divert_ack_lane", lane)
        self._tables.set("divert_ack_status", status)
        self._tables.set("divert_ack_seq", seq)

    def _decide(self, item: int, lane: int) -> int:
        if not self.armed:
            return ACK_NOT_ARMED
        unit = next((u for u in self._belt if u.track_id == item and item != 0), None)
        if unit is None:
            return ACK_TOO_LATE if item in self._recent_exits else ACK_UNKNOWN_ITEM
        if not 0 <= lane <= self.lanes:
            return ACK_INVALID_LANE
        if lane != 0 and unit.front_mm + self.divert_lead_mm >= self.diverter_mm(lane):
            return ACK_TOO_LATE
        unit.lane = lane
        return ACK_ACCEPTED

    def _move(self, dx: float) -> None:
        self._travel_mm += dx
        for exiting in self._leaving:
            exiting[1] -= dx
        self._leaving = [e for e in self._leaving if e[1] > 0]
        leaving: list[tuple[_Unit, int]] = []
        for unit in self._belt:
            before = unit.front_mm
            unit.front_mm += dx
            if unit.track_id is None and before < self.scan_point_mm <= unit.front_mm:
                self._assign_id(unit)
            lane = 0 if unit.lane in self.stuck_diverters else unit.lane
            if unit.front_mm >= self.diverter_mm(lane):
                leaving.append((unit, lane))
        for unit, lane in leaving:
            self._belt.remove(unit)
            self._exit(unit, lane)

    def _assign_id(self, unit: _Unit) -> None:
        self._last_track_id = next_id(self._last_track_id)
        unit.track_id = self._last_track_id
        self._item_counter = (self._item_counter + 1) & 0xFFFF
        self._tables.set("scan_item_id", unit.track_id)
        self._tables.set("item_counter", self._item_counter)
        if self.on_scan is not None:
            try:
                self.on_scan(unit.track_id, unit.payload)
            except Exception:
                log.exception("on_scan callback failed")

    def _exit(self, unit: _Unit, lane: int) -> None:
        # The lane exit eye sits where the unit leaves the belt; it stays blocked while the unit's
        # length passes it (the chute moves at belt speed).
        self._leaving.append([lane, unit.length_mm])
        if lane == 0:
            self._rejected = (self._rejected + 1) & 0xFFFF
        else:
            self._diverted = (self._diverted + 1) & 0xFFFF
        track_id = unit.track_id if unit.track_id is not None else 0
        if track_id:
            self.results[track_id] = lane
            self._recent_exits[track_id] = lane
            while len(self._recent_exits) > _RECENT_EXITS:
                self._recent_exits.popitem(last=False)
        if self.on_exit is not None:
            try:
                self.on_exit(track_id, unit.payload, lane)
            except Exception:
                log.exception("on_exit callback failed")

    def _update_outputs(self, running: bool) -> None:
        t = self._tables
        t.set("infeed_eye", any(u.covers(0.0) for u in self._belt))
        t.set("scan_eye", any(u.covers(self.scan_point_mm) for u in self._belt))
        t.set("jam_eye", self.jammed or any(u.covers(self.jam_eye_mm) for u in self._belt))
        blocked = {int(lane) for lane, _ in self._leaving} - self.blind_exit_eyes
        for k in range(1, self.lanes + 1):
            t.set(f"divert_eye_{k}", k in blocked)
        t.set("reject_eye", 0 in blocked)
        t.set("belt_running", running)
        t.set("estop_healthy", not self.estop)
        t.set(
            "status_word",
            (STATUS_RUNNING if running else 0)
            | (STATUS_JAM if self.jammed else 0)
            | (STATUS_ARMED if self.armed else 0),
        )
        t.set("fault_word", FAULT_JAM if self.jammed else 0)
        t.set("encoder_count", int(self._travel_mm) & 0xFFFFFFFF)
        t.set("diverted_count", self._diverted)
        t.set("rejected_count", self._rejected)
