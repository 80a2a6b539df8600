"""PlcLink: the controller's Modbus master for the conveyor PLC.

One connection, shared by three users: the poll loop (snapshot of every mapped signal, unit
arrivals), the heartbeat writer, and divert commands. pymodbus serialises requests on the
connection, so they interleave without extra locking; divert commands additionally share one
mailbox (request registers) and so hold their own lock.

pymodbus' own reconnect is disabled: it does not retry a failed first connect, and we want one
place that decides backoff, state and counters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from struct import error as struct_error
from types import TracebackType
from typing import Any, Final, Literal, Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from plc.exits import ExitEvent, ExitTracker
from plc.positions import PositionTracker
from plc.register_map import BIT_TABLES, RegisterMap, Table, Value
from plc.tracking import ArrivalTracker

log = logging.getLogger(__name__)

LinkState = Literal["connecting", "online", "offline"]
# Why diverts are refused while the line is not armed; None in `PlcLink.fault` means armed.
Fault = Literal["link_down", "heartbeat_stale", "plc_not_armed", "rearming"]
DivertStatus = Literal[
    "accepted",
    "too_late",
    "unknown_item",
    "invalid_lane",
    "no_ack",
    "link_down",
    "heartbeat_stale",
    "plc_not_armed",
    "rearming",
]

ACK_STATUS: Final[dict[int, DivertStatus]] = {
    1: "accepted",
    2: "too_late",
    3: "unknown_item",
    4: "invalid_lane",
    5: "plc_not_armed",
}
# status_word bit the PLC sets while it sees our heartbeat and will execute diverts.
STATUS_ARMED_BIT: Final = 0x0004
REQUIRED_SIGNALS: Final = (
    "scan_item_id",
    "plc_heartbeat",
    "gateway_heartbeat",
    "divert_request_seq",
    "divert_request_item_id",
    "divert_request_lane",
    "divert_ack_seq",
    "divert_ack_status",
)
# Reading coils/holding registers back is only for telemetry; they are ours to write, so
# sampling them every cycle would double bus load for nothing.
_INPUT_TABLES: Final[frozenset[str]] = frozenset({"discrete_input", "input_register"})


@dataclass(frozen=True, slots=True)
class Arrival:
    """A unit the PLC reported at the scan point. seen_at is time.monotonic() of the poll reply."""

    item_id: int
    seen_at: float


@dataclass(frozen=True, slots=True)
class DivertResult:
    """Outcome of a divert command; seq is 0 when nothing was sent to the PLC."""

    status: DivertStatus
    seq: int


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library swallowed.

    Python 3.11's asyncio.wait_for (used inside pymodbus) returns the result instead of raising
    when the reply and the cancel arrive together; the task stays "cancelling" but runs on, so a
    loop that never checks would keep the link's __aexit__ waiting forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _RequestFailed(Exception):
    """A Modbus request did not produce usable data; `kind` names the counter to bump."""

    def __init__(self, kind: Literal["exceptions", "timeouts", "malformed", "disconnected"], msg: str):
        super().__init__(msg)
        self.kind = kind


class PlcLink:
    """Modbus TCP link to the conveyor PLC. Use as an async context manager.

    Subclass and override `_make_client` for a serial (RTU) line; everything else is transport
    independent.
    """

    def __init__(
        self,
        host: str,
        port: int,
        register_map: RegisterMap,
        poll_period_s: float = 0.01,
        heartbeat_period_s: float = 0.1,
        timeout_s: float = 0.2,
        reconnect_max_s: float = 5.0,
        *,
        reconnect_min_s: float = 0.05,
        plc_heartbeat_timeout_s: float | None = None,
        slow_poll_every: int = 10,
        max_failed_polls: int = 3,
        name: str = "plc",
        rearm_delay_s: float = 0.5,
        require_plc_armed: bool = True,
        write_heartbeat: bool = True,
        positions: PositionTracker | None = None,
        exits: ExitTracker | None = None,
        record_cycles: int = 0,
    ) -> None:
        register_map.require(REQUIRED_SIGNALS)
        seq_sig = register_map["divert_request_seq"]
        item_sig = register_map["divert_request_item_id"]
        lane_sig = register_map["divert_request_lane"]
        # The brief mandates one FC16 write for [seq, item, lane] so the PLC never sees a new
        # seq with a stale item or lane; that only works if they are adjacent holding registers.
        for offset, sig in enumerate((seq_sig, item_sig, lane_sig)):
            if sig.table != "holding_register" or sig.address != seq_sig.address + offset or sig.width != 1:
                raise ValueError(
                    "divert_request_seq, divert_request_item_id, divert_request_lane must be three "
                    f"consecutive 16-bit holding registers (problem at {sig.name!r})"
                )
        if poll_period_s <= 0 or heartbeat_period_s <= 0 or timeout_s <= 0:
            raise ValueError("poll_period_s, heartbeat_period_s and timeout_s must be > 0")
        self.host = host
        self.port = port
        self.register_map = register_map
        self.poll_period_s = poll_period_s
        self.heartbeat_period_s = heartbeat_period_s
        self.timeout_s = timeout_s
        self.reconnect_min_s = min(reconnect_min_s, reconnect_max_s)
        self.reconnect_max_s = reconnect_max_s
        self.plc_heartbeat_timeout_s = (
            plc_heartbeat_timeout_s if plc_heartbeat_timeout_s is not None else 3.5 * heartbeat_period_s
        )
        self.slow_poll_every = max(1, slow_poll_every)
        self.max_failed_polls = max(1, max_failed_polls)
        self.name = name
        self.rearm_delay_s = max(0.0, rearm_delay_s)
        # A PLC program that never reports the armed bit leaves the line unarmed: safe, and
        # loud (alarm), which is what an integrator wiring a new PLC should see first.
        self.require_plc_armed = require_plc_armed and "status_word" in register_map
        self.write_heartbeat = write_heartbeat
        self.positions = positions
        self.exits = exits
        # Exit eye signal per lane, for the lanes the exit tracker knows and the map wires.
        self._exit_eyes: dict[int, str] = {}
        if exits is not None:
            for lane in (0, *exits.geometry.diverter_mm):
                eye = "reject_eye" if lane == 0 else f"divert_eye_{lane}"
                if eye in register_map:
                    self._exit_eyes[lane] = eye
            missing = sorted(set((0, *exits.geometry.diverter_mm)) - set(self._exit_eyes))
            if missing:
                # Units of an unwired lane would all be reported as never seen leaving.
                log.warning("%s: no exit eye mapped for lane(s) %s: exit confirmation off", self.name, missing)
                self.exits = None
        # Departure conclusions for the daemon to journal; bounded so a link nobody reads from
        # cannot grow without limit (the oldest are dropped and counted).
        self.departures: asyncio.Queue[ExitEvent] = asyncio.Queue(maxsize=4096)
        # (scheduled start, actual start, end) of recent poll cycles, loop clock; for benchmarks.
        self.cycles: collections.deque[tuple[float, float, float]] | None = (
            collections.deque(maxlen=record_cycles) if record_cycles > 0 else None
        )

        self.state: LinkState = "connecting"
        self.signals: dict[str, Value] = {}
        self.arrivals: asyncio.Queue[Arrival] = asyncio.Queue()
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "reads",
                "read_errors",
                "exceptions",
                "timeouts",
                "malformed",
                "missed_arrivals",
                "resyncs",
                "reconnects",
                "writes",
                "write_errors",
                "diverts",
                "divert_no_ack",
                "divert_refused",
                "late_refused",
                "failsafe_trips",
                "divert_cancels",
                "cancel_failed",
                "departures",
                "divert_mismatch",
                "unit_not_seen_leaving",
                "unmatched_exits",
                "departures_dropped",
                "requests_withheld",
            ),
            0,
        )
        self.tracker = ArrivalTracker()
        self.last_poll_at: float | None = None

        self._blocks = register_map.blocks()
        self._ack_sigs = sorted(
            (
                register_map[n]
                for n in ("divert_ack_seq", "divert_ack_item_id", "divert_ack_lane", "divert_ack_status")
                if n in register_map
            ),
            key=lambda s: (s.table, s.address),
        )
        self._client: ModbusBaseClient | None = None
        self._connected_once = False
        self._seq = 0
        self._gateway_hb = 0
        self._plc_hb_value: Value | None = None
        self._plc_hb_changed_at: float | None = None
        self._divert_lock = asyncio.Lock()
        self._online = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._healthy_since: float | None = None
        self._was_armed = False
        self._closing = False
        # On a shared medium (an RS-485 bus) every unanswered request stalls the other devices for
        # a whole timeout. Such a link therefore marks itself `_suspect` after a poll times out:
        # until a poll succeeds again only the poll loop's own task talks to the device, and it
        # waits `_failure_pause_s` between attempts so the other devices get the bus in between.
        self._shared_medium = False
        self._suspect = False
        self._poll_task: asyncio.Task[Any] | None = None
        self._sample_slack_mm = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._runner = asyncio.create_task(self._run(), name=f"{self.name}-link")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._drop_client()
        self._set_state("offline")

    async def _run(self) -> None:
        # Both loops live in one task group: if either dies of a bug the other stops too, and
        # the failure surfaces from this runner task instead of a silently half-working link.
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._connection_loop(), name=f"{self.name}-poll")
                tg.create_task(self._heartbeat_loop(), name=f"{self.name}-heartbeat")
        except Exception:
            log.exception("%s: link loops crashed", self.name)
            self._set_state("offline")
            raise

    async def wait_online(self, timeout_s: float | None = None) -> None:
        """Wait until the link is online (raises TimeoutError)."""
        async with asyncio.timeout(timeout_s):
            await self._online.wait()

    @property
    def plc_heartbeat_ok(self) -> bool:
        """True while online and the PLC's heartbeat register changed recently."""
        if self.state != "online" or self._plc_hb_changed_at is None:
            return False
        return time.monotonic() - self._plc_hb_changed_at <= self.plc_heartbeat_timeout_s

    @property
    def plc_armed(self) -> bool:
        """The PLC reports (status_word armed bit) that it sees our heartbeat and takes diverts."""
        if not self.require_plc_armed:
            return True
        word = self.signals.get("status_word")
        return isinstance(word, int) and bool(word & STATUS_ARMED_BIT)

    def _health_fault(self) -> Fault | None:
        if self.state != "online":
            return "link_down"
        if not self.plc_heartbeat_ok:
            return "heartbeat_stale"
        if not self.plc_armed:
            return "plc_not_armed"
        return None

    @property
    def fault(self) -> Fault | None:
        """Why diverts are refused right now, or None when the line is armed.

        Armed needs both heartbeats alive, the PLC's armed bit, and all of that continuously for
        rearm_delay_s: a link that flaps must not re-arm on the first good poll.
        """
        fault = self._health_fault()
        if fault is not None:
            return fault
        if self._healthy_since is None:
            return "rearming"
        # The hold-off guards against a flapping link; the very first arm has nothing to flap from.
        delay = self.rearm_delay_s if self.counters["failsafe_trips"] else 0.0
        if time.monotonic() - self._healthy_since < delay:
            return "rearming"
        return None

    @property
    def armed(self) -> bool:
        return self.fault is None

    @property
    def safety_state(self) -> str:
        """"armed" or the fault: what the daemon's device watcher alarms on."""
        return self.fault or "armed"

    async def wait_armed(self, timeout_s: float | None = None) -> None:
        """Wait until diverts are accepted (raises TimeoutError)."""
        async with asyncio.timeout(timeout_s):
            while not self.armed:
                await asyncio.sleep(min(self.poll_period_s, 0.01))

    def _update_health(self, now: float) -> None:
        if self._health_fault() is None:
            if self._healthy_since is None:
                self._healthy_since = now
        else:
            self._healthy_since = None
        armed = self.armed
        if armed != self._was_armed and not self._closing:
            if not armed:
                self.counters["failsafe_trips"] += 1
                log.warning("%s: diverts disarmed (%s): units go to the reject lane", self.name, self.fault)
            else:
                log.info("%s: diverts armed", self.name)
            self._was_armed = armed

    # -- transport ---------------------------------------------------------------------------

    def _make_client(self) -> ModbusBaseClient:
        """Build an unconnected pymodbus client; the one override point for other transports."""
        return AsyncModbusTcpClient(
            self.host,
            port=self.port,
            name=self.name,
            timeout=self.timeout_s,
            retries=0,  # a retried poll is just a late poll; the next cycle is already due
            reconnect_delay=0,  # we own reconnecting, see module docstring
        )

    async def _open(self) -> bool:
        """Make `self._client` usable; return whether it is. Override point for shared buses."""
        client = self._make_client()
        self._client = client
        try:
            ok = await client.connect()
        except Exception:  # connect must never kill the loop, whatever the library raises
            log.exception("%s: connect to %s raised", self.name, self.endpoint)
            ok = False
        if not ok or not client.connected:
            self._drop_client()
            return False
        return True

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _set_state(self, state: LinkState) -> None:
        if state == self.state:
            return
        log.info("%s: link %s -> %s", self.name, self.state, state)
        self.state = state
        self._update_health(time.monotonic())
        if state == "online":
            self._online.set()
        else:
            self._online.clear()

    async def _request(self, call: Any) -> Any:
        """Await one pymodbus request; turn every failure mode into _RequestFailed."""
        client = self._client
        if client is None or not client.connected:
            raise _RequestFailed("disconnected", "not connected")
        if self._suspect and asyncio.current_task() is not self._poll_task:
            # Not sent at all, so "disconnected": a divert refused here is known not to have landed.
            self.counters["requests_withheld"] += 1
            raise _RequestFailed("disconnected", "device not answering; request withheld from the shared bus")
        try:
            # pymodbus enforces timeout_s itself; the outer bound only guards against a
            # library bug leaving the future pending forever.
            async with asyncio.timeout(self.timeout_s * 2 + 0.05):
                reply = await call(client)
        except TimeoutError as exc:
            raise _RequestFailed("timeouts", "request timed out") from exc
        except ConnectionException as exc:
            raise _RequestFailed("disconnected", str(exc)) from exc
        except ModbusIOException as exc:
            # pymodbus reports "no response within timeout" as an IO exception.
            raise _RequestFailed("timeouts", str(exc)) from exc
        except ModbusException as exc:
            raise _RequestFailed("malformed", str(exc)) from exc
        except (OSError, ValueError, struct_error) as exc:
            raise _RequestFailed("malformed", repr(exc)) from exc
        if reply is None:
            raise _RequestFailed("malformed", "empty reply")
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            raise _RequestFailed("exceptions", f"exception response code {code}")
        return reply

    async def _read(self, table: Table, address: int, count: int) -> list[int] | list[bool]:
        dev = self.register_map.device_id
        if table == "coil":
            reply = await self._request(lambda c: c.read_coils(address, count=count, device_id=dev))
        elif table == "discrete_input":
            reply = await self._request(lambda c: c.read_discrete_inputs(address, count=count, device_id=dev))
        elif table == "input_register":
            reply = await self._request(lambda c: c.read_input_registers(address, count=count, device_id=dev))
        else:
            reply = await self._request(
                lambda c: c.read_holding_registers(address, count=count, device_id=dev)
            )
        values = list(reply.bits if table in BIT_TABLES else reply.registers)
        # Bit replies are padded up to a whole byte, so only "too short" is malformed.
        if len(values) < count:
            raise _RequestFailed("malformed", f"{table}@{address}: asked {count}, got {len(values)}")
        return values[:count]

    async def _write_registers(self, address: int, words: list[int]) -> None:
        dev = self.register_map.device_id
        self.counters["writes"] += 1
        try:
            await self._request(lambda c: c.write_registers(address, words, device_id=dev))
        except _RequestFailed:
            self.counters["write_errors"] += 1
            raise

    async def write_signal(self, name: str, value: Value) -> None:
        """Write one coil or holding-register signal (raises ConnectionError on failure)."""
        sig = self.register_map[name]
        words = sig.encode(value)
        try:
            if sig.table == "holding_register":
                await self._write_registers(sig.address, words)
            elif sig.table == "coil":
                dev = self.register_map.device_id
                self.counters["writes"] += 1
                try:
                    await self._request(lambda c: c.write_coil(sig.address, bool(words[0]), device_id=dev))
                except _RequestFailed:
                    self.counters["write_errors"] += 1
                    raise
            else:
                raise ValueError(f"signal {name!r} is in read-only table {sig.table}")
        except _RequestFailed as exc:
            raise ConnectionError(f"{self.name}: writing {name!r} failed: {exc}") from exc

    # -- connection and polling ----------------------------------------------------------------

    def _failure_pause_s(self) -> float:
        """Gap before re-polling a device that just timed out on a shared bus: long enough for every
        other device on the bus to be polled at least once before it can cost them another timeout."""
        return max(self.poll_period_s, 2 * self.timeout_s)

    def _backoff(self, attempt: int) -> float:
        # Equal jitter: at least half the exponential delay, so several gateways restarted by
        # the same power blip do not hammer the PLC in lockstep.
        delay = min(self.reconnect_max_s, self.reconnect_min_s * (2 ** min(attempt, 30)))
        return delay / 2 + random.uniform(0, delay / 2)

    async def _connection_loop(self) -> None:
        self._poll_task = asyncio.current_task()
        attempt = 0
        while True:
            _raise_if_cancelled()
            if not await self._open():
                delay = self._backoff(attempt)
                attempt += 1
                log.debug("%s: connect to %s failed, retry in %.2fs", self.name, self.endpoint, delay)
                await asyncio.sleep(delay)
                continue
            if self._connected_once:
                self.counters["reconnects"] += 1
            self._connected_once = True
            log.info("%s: connected to %s", self.name, self.endpoint)
            try:
                if await self._poll_until_failure():
                    attempt = 0
            finally:
                self._drop_client()
            # Anything the PLC scanned while we were blind must not be reported as an arrival.
            self.tracker.mark_gap()
            if self.exits is not None:
                self.exits.mark_gap()
            self._set_state("offline")
            delay = self._backoff(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    async def _poll_until_failure(self) -> bool:
        """Poll until the connection is unusable; return whether any poll cycle succeeded."""
        # Liveness must be proven afresh on every connection, not inherited from the last one.
        self._plc_hb_value = None
        self._plc_hb_changed_at = None
        await self._sync_sequence()
        failed = 0
        any_ok = False
        cycle = 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            _raise_if_cancelled()
            client = self._client
            if client is None or not client.connected:
                log.warning("%s: connection lost", self.name)
                return any_ok
            slow = cycle % self.slow_poll_every == 0
            cycle += 1
            began = loop.time()
            ok, fatal = await self._poll_once(include_outputs=slow)
            if self.cycles is not None:
                self.cycles.append((next_at, began, loop.time()))
            if ok:
                failed = 0
                any_ok = True
                self._suspect = False
                self._set_state("online")
            else:
                failed += 1
                if fatal and self._shared_medium:
                    self._suspect = True
                if failed >= self.max_failed_polls:
                    self._set_state("offline")
                    if fatal:
                        # Timeouts on an open socket: the peer is wedged or gone without a FIN.
                        # A fresh connection is the only way to find out.
                        log.warning("%s: %d failed polls, reconnecting", self.name, failed)
                        return any_ok
                if self._suspect:
                    next_at = loop.time() + self._failure_pause_s() - self.poll_period_s
            next_at += self.poll_period_s
            now = loop.time()
            if next_at < now:
                next_at = now  # fell behind; don't burst to catch up
            await asyncio.sleep(next_at - now)

    async def _poll_once(self, include_outputs: bool) -> tuple[bool, bool]:
        """Read every block once. Returns (all blocks read, failure warrants reconnect)."""
        snapshot: dict[str, Value] = {}
        fatal = False
        ok = True
        for table, blocks in self._blocks.items():
            if not include_outputs and table not in _INPUT_TABLES:
                continue
            for address, count in blocks:
                self.counters["reads"] += 1
                try:
                    values = await self._read(table, address, count)
                    snapshot.update(self.register_map.decode(table, address, values))
                except _RequestFailed as exc:
                    ok = False
                    self.counters["read_errors"] += 1
                    if exc.kind != "disconnected":
                        self.counters[exc.kind] += 1
                    fatal = fatal or exc.kind in ("timeouts", "disconnected")
                    log.debug("%s: read %s@%d x%d failed: %s", self.name, table, address, count, exc)
                    if exc.kind in ("timeouts", "disconnected"):
                        return False, True
                except ValueError as exc:  # decode of a reply that made no sense
                    ok = False
                    self.counters["read_errors"] += 1
                    self.counters["malformed"] += 1
                    log.warning("%s: undecodable %s@%d: %s", self.name, table, address, exc)
        now = time.monotonic()
        self.signals.update(snapshot)
        # Belt travel since the previous poll: how stale an edge or an arrival seen now may be.
        speed = snapshot.get("belt_speed_mm_s", self.signals.get("belt_speed_mm_s"))
        gap_s = now - self.last_poll_at if self.last_poll_at is not None else self.poll_period_s
        known_speed = isinstance(speed, int | float) and not isinstance(speed, bool) and speed > 0
        self._sample_slack_mm = float(speed) * gap_s if known_speed else 0.0  # type: ignore[arg-type]
        if snapshot:
            self.last_poll_at = now
        self._observe(snapshot, now)
        self._update_health(now)
        return ok, fatal

    def _observe(self, snapshot: dict[str, Value], now: float) -> None:
        hb = snapshot.get("plc_heartbeat")
        if hb is not None and hb != self._plc_hb_value:
            # The first value seen after (re)connecting proves nothing about liveness.
            if self._plc_hb_value is not None:
                self._plc_hb_changed_at = now
            self._plc_hb_value = hb
        scan = snapshot.get("scan_item_id")
        if isinstance(scan, int) and not isinstance(scan, bool):
            try:
                ids, missed = self.tracker.update(scan)
            except ValueError as exc:
                self.counters["malformed"] += 1
                log.warning("%s: bad scan_item_id: %s", self.name, exc)
                return
            resyncs = self.tracker.resyncs
            if resyncs != self.counters["resyncs"]:
                log.warning("%s: scan_item_id went backwards (PLC restart?), resynced", self.name)
                self.counters["resyncs"] = resyncs
            if missed:
                self.counters["missed_arrivals"] += missed
                log.warning("%s: %d arrivals missed (scan_item_id jumped to %d)", self.name, missed, scan)
            if ids and self.positions is not None:
                encoder = snapshot.get("encoder_count")
                if isinstance(encoder, int) and not isinstance(encoder, bool):
                    # Every id of a burst gets this poll's count: the older ones are then judged
                    # later than they are, never earlier, which errs towards the reject lane.
                    for item_id in ids:
                        self.positions.on_arrival(item_id, encoder)
            if ids and self.exits is not None:
                encoder = snapshot.get("encoder_count")
                if isinstance(encoder, int) and not isinstance(encoder, bool):
                    for item_id in ids:
                        self.exits.on_arrival(item_id, encoder, self._sample_slack_mm)
            for item_id in ids:
                self.arrivals.put_nowait(Arrival(item_id=item_id, seen_at=now))
        self._observe_exits(snapshot)

    def _observe_exits(self, snapshot: dict[str, Value]) -> None:
        exits = self.exits
        encoder = snapshot.get("encoder_count")
        if exits is None or not isinstance(encoder, int) or isinstance(encoder, bool):
            return
        eyes = {lane: bool(snapshot[name]) for lane, name in self._exit_eyes.items() if name in snapshot}
        try:
            events = exits.observe(eyes, encoder, self._sample_slack_mm)
        except ValueError as exc:
            self.counters["malformed"] += 1
            log.warning("%s: exit tracking: %s", self.name, exc)
            return
        for event in events:
            if event.kind == "departed":
                self.counters["departures"] += 1
                if not event.confirmed:
                    self.counters["divert_mismatch"] += 1
                    log.error(
                        "%s: unit %s left by lane %s, expected %s",
                        self.name, event.item_id, event.lane, list(event.expected),
                    )
            elif event.kind == "not_seen_leaving":
                self.counters["unit_not_seen_leaving"] += 1
                log.error("%s: unit %s was never seen leaving (expected lane %s)",
                          self.name, event.item_id, list(event.expected))
            else:
                self.counters["unmatched_exits"] += 1
                log.warning("%s: lane %s exit eye saw a unit nobody tracked", self.name, event.lane)
            if self.departures.full():
                self.departures.get_nowait()
                self.counters["departures_dropped"] += 1
            self.departures.put_nowait(event)

    def _note_divert_outcome(self, item_id: int, lane: int, status: str) -> None:
        """Tell the exit tracker which lanes the unit may now leave by, from what the PLC answered."""
        exits = self.exits
        before = exits.expected(item_id) if exits is not None else None
        if exits is None or before is None:
            return
        if status == "accepted":
            exits.expect(item_id, frozenset({lane}))
        elif status == "uncertain":
            exits.expect(item_id, before | {lane, 0})  # the request or its cancel may have landed
        elif status == "no_ack":
            # For lane > 0 a confirmed cancel followed; a lane-0 request has none and may have landed.
            exits.expect(item_id, frozenset({0}) if lane != 0 else before | {0})
        # Refusals (too late, not armed, ...) leave the unit on the lane it already had.

    async def _sync_sequence(self) -> None:
        """Continue the divert sequence from what the PLC last saw, so a restarted gateway never
        writes a seq the PLC would ignore as "not new" or match against a stale ack."""
        seq_sig = self.register_map["divert_request_seq"]
        try:
            words = await self._read("holding_register", seq_sig.address, 1)
        except _RequestFailed as exc:
            log.warning("%s: could not read divert_request_seq on connect: %s", self.name, exc)
            return
        self._seq = int(words[0]) & 0xFFFF

    # -- heartbeat -------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_period_s)
            _raise_if_cancelled()
            if self.state != "online" or not self.write_heartbeat:
                continue
            if self._plc_hb_changed_at is not None and not self.plc_heartbeat_ok:
                # Going quiet on our side makes the PLC fall back to its own safe default (units
                # in flight to the reject lane) even if only its heartbeat counter is stuck.
                continue
            self._gateway_hb = (self._gateway_hb + 1) & 0xFFFF
            try:
                await self.write_signal("gateway_heartbeat", self._gateway_hb)
            except ConnectionError as exc:
                log.debug("%s: heartbeat write failed: %s", self.name, exc)

    # -- divert ----------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        stale_ack = self.signals.get("divert_ack_seq")
        while True:
            seq = 1 if seq >= 0xFFFF else seq + 1
            # A seq equal to the ack already showing would be "acknowledged" before the PLC
            # even saw it.
            if seq != stale_ack:
                return seq

    async def divert(self, item_id: int, lane: int, timeout_s: float = 0.2) -> DivertResult:
        """Ask the PLC to divert unit `item_id` into `lane` and wait for its acknowledgement."""
        result = await self._divert(item_id, lane, timeout_s)
        self._note_divert_outcome(item_id, lane, result.status)
        return result

    async def _divert(self, item_id: int, lane: int, timeout_s: float) -> DivertResult:
        if not isinstance(item_id, int) or not 1 <= item_id <= 0xFFFF:
            return DivertResult("unknown_item", 0)
        if not isinstance(lane, int) or not 0 <= lane <= 0xFFFF:
            return DivertResult("invalid_lane", 0)
        async with self._divert_lock:
            fault = self.fault
            if fault is not None:
                self.counters["divert_refused"] += 1
                return DivertResult(fault, 0)
            if lane != 0 and self.positions is not None and not self._in_time(item_id, lane, timeout_s):
                self.counters["late_refused"] += 1
                return DivertResult("too_late", 0)
            seq = self._next_seq()
            self.counters["diverts"] += 1
            seq_sig = self.register_map["divert_request_seq"]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            try:
                await self._write_registers(seq_sig.address, [seq, item_id, lane])
            except _RequestFailed as exc:
                log.warning("%s: divert write seq=%d failed: %s", self.name, seq, exc)
                if exc.kind == "disconnected":
                    return DivertResult("link_down", 0)
                # A timed-out write may still have landed; burn the seq so it is never reused.
                self._seq = seq
                self.counters["divert_no_ack"] += 1
                if lane != 0 and not await self._cancel(item_id, timeout_s):
                    return DivertResult("uncertain", seq)
                return DivertResult("no_ack", seq)
            self._seq = seq
            result = await self._await_ack(seq, item_id, lane, deadline)
            if result.status == "no_ack":
                self.counters["divert_no_ack"] += 1
                if lane != 0 and not await self._cancel(item_id, timeout_s):
                    # The first request may have landed and the cancel did not: the unit is in
                    # `lane` or in the reject lane, and nobody can say which.
                    return DivertResult("uncertain", seq)
            return result

    async def _cancel(self, item_id: int, timeout_s: float) -> bool:
        """Re-point a unit whose divert went unacknowledged at the reject lane.

        The request may have landed even though we never saw the ack, and the controller is about
        to record the unit as rejected: without this the PLC could still fire the paddle. Returns
        True only when the PLC confirmed the unit rides to the reject lane.
        """
        seq = self._next_seq()
        seq_sig = self.register_map["divert_request_seq"]
        deadline = asyncio.get_running_loop().time() + timeout_s
        self.counters["divert_cancels"] += 1
        try:
            await self._write_registers(seq_sig.address, [seq, item_id, 0])
        except _RequestFailed as exc:
            log.error("%s: cancel of unit %d failed: %s", self.name, item_id, exc)
            self.counters["cancel_failed"] += 1
            if exc.kind != "disconnected":
                self._seq = seq
            return False
        self._seq = seq
        ack = await self._await_ack(seq, item_id, 0, deadline)
        if ack.status in ("accepted", "plc_not_armed"):
            return True  # re-pointed, or a disarmed PLC sends every unit to the reject lane
        if ack.status != "accepted":
            # unknown_item / too_late mean the unit is no longer on the PLC's books: nothing to
            # re-point. Anything else leaves the unit's lane uncertain, which must be loud.
            level = logging.INFO if ack.status in ("unknown_item", "too_late") else logging.ERROR
            log.log(level, "%s: cancel of unit %d: %s", self.name, item_id, ack.status)
            if level == logging.ERROR:
                self.counters["cancel_failed"] += 1
        return False

    def _in_time(self, item_id: int, lane: int, ack_budget_s: float) -> bool:
        positions = self.positions
        encoder = self.signals.get("encoder_count")
        if positions is None:
            return True
        if not isinstance(encoder, int) or isinstance(encoder, bool) or self.last_poll_at is None:
            return False
        speed = self.signals.get("belt_speed_mm_s")
        speed_mm_s = float(speed) if isinstance(speed, int | float) and not isinstance(speed, bool) else None
        verdict = positions.check(
            item_id,
            lane,
            encoder,
            age_s=time.monotonic() - self.last_poll_at,
            speed_mm_s=speed_mm_s,
            # Until the PLC sees the request the belt keeps moving: one write, one poll, the ack.
            lead_s=min(ack_budget_s, 3 * self.poll_period_s + self.timeout_s),
            poll_period_s=self.poll_period_s,
        )
        if verdict != "in_time":
            log.warning("%s: divert item=%d lane=%d refused locally: %s", self.name, item_id, lane, verdict)
        return verdict == "in_time"

    async def open_once(self) -> bool:
        """Connect without starting the poll and heartbeat loops (one-shot tools such as the probe).

        Do not mix with `async with`; undo with `close_once`.
        """
        return await self._open()

    def close_once(self) -> None:
        self._drop_client()

    async def read_all(self) -> tuple[dict[str, Value], list[str]]:
        """Read every block of every table once (outputs included): values and per-block errors."""
        values: dict[str, Value] = {}
        errors: list[str] = []
        for table, blocks in self._blocks.items():
            for address, count in blocks:
                try:
                    raw = await self._read(table, address, count)
                    values.update(self.register_map.decode(table, address, raw))
                except _RequestFailed as exc:
                    errors.append(f"{table}@{address} x{count}: {exc.kind}: {exc}")
                except ValueError as exc:
                    errors.append(f"{table}@{address} x{count}: malformed: {exc}")
        return values, errors

    async def _await_ack(self, seq: int, item_id: int, lane: int, deadline: float) -> DivertResult:
        loop = asyncio.get_running_loop()
        first, last = self._ack_sigs[0], self._ack_sigs[-1]
        span_contiguous = len({s.table for s in self._ack_sigs}) == 1 and last.end - first.address == sum(
            s.width for s in self._ack_sigs
        )
        interval = min(self.poll_period_s, 0.005)
        while True:
            _raise_if_cancelled()
            ack = await self._read_ack(first.address, last.end - first.address, span_contiguous)
            if ack is not None and ack.get("divert_ack_seq") == seq:
                echo_item = ack.get("divert_ack_item_id", item_id)
                echo_lane = ack.get("divert_ack_lane", lane)
                if echo_item != item_id or echo_lane != lane:
                    # Someone else is writing the mailbox; trusting this ack could confirm a
                    # divert we never asked for.
                    log.error(
                        "%s: ack seq=%d echoes item=%s lane=%s, expected item=%d lane=%d",
                        self.name,
                        seq,
                        echo_item,
                        echo_lane,
                        item_id,
                        lane,
                    )
                    return DivertResult("no_ack", seq)
                status = ack.get("divert_ack_status")
                mapped = ACK_STATUS.get(status) if isinstance(status, int) else None
                if mapped is None:
                    log.error("%s: ack seq=%d has unknown status %r", self.name, seq, status)
                    return DivertResult("no_ack", seq)
                return DivertResult(mapped, seq)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return DivertResult("no_ack", seq)
            await asyncio.sleep(min(interval, remaining))

    async def _read_ack(self, address: int, count: int, contiguous: bool) -> dict[str, Value] | None:
        if not contiguous:
            # Scattered ack registers: rely on the poll loop's snapshot rather than N reads.
            return {s.name: self.signals[s.name] for s in self._ack_sigs if s.name in self.signals}
        try:
            values = await self._read(self._ack_sigs[0].table, address, count)
            return self.register_map.decode(self._ack_sigs[0].table, address, values)
        except _RequestFailed as exc:
            log.debug("%s: ack read failed: %s", self.name, exc)
            return None
        except ValueError:
            self.counters["malformed"] += 1
            return None
