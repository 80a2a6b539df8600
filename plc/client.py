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

from plc.register_map import BIT_TABLES, RegisterMap, Table, Value
from plc.tracking import ArrivalTracker

log = logging.getLogger(__name__)

LinkState = Literal["connecting", "online", "offline"]
DivertStatus = Literal["accepted", "too_late", "unknown_item", "invalid_lane", "no_ack", "link_down"]

ACK_STATUS: Final[dict[int, DivertStatus]] = {
    1: "accepted",
    2: "too_late",
    3: "unknown_item",
    4: "invalid_lane",
}
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
        if state == "online":
            self._online.set()
        else:
            self._online.clear()

    async def _request(self, call: Any) -> Any:
        """Await one pymodbus request; turn every failure mode into _RequestFailed."""
        client = self._client
        if client is None or not client.connected:
            raise _RequestFailed("disconnected", "not connected")
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

    def _backoff(self, attempt: int) -> float:
        # Equal jitter: at least half the exponential delay, so several gateways restarted by
        # the same power blip do not hammer the PLC in lockstep.
        delay = min(self.reconnect_max_s, self.reconnect_min_s * (2 ** min(attempt, 30)))
        return delay / 2 + random.uniform(0, delay / 2)

    async def _connection_loop(self) -> None:
        attempt = 0
        while True:
            client = self._make_client()
            self._client = client
            ok = False
            try:
                ok = await client.connect()
            except Exception:  # connect must never kill the loop, whatever the library raises
                log.exception("%s: connect to %s:%s raised", self.name, self.host, self.port)
            if not ok or not client.connected:
                self._drop_client()
                delay = self._backoff(attempt)
                attempt += 1
                log.debug(
                    "%s: connect to %s:%s failed, retry in %.2fs", self.name, self.host, self.port, delay
                )
                await asyncio.sleep(delay)
                continue
            if self._connected_once:
                self.counters["reconnects"] += 1
            self._connected_once = True
            log.info("%s: connected to %s:%s", self.name, self.host, self.port)
            try:
                if await self._poll_until_failure():
                    attempt = 0
            finally:
                self._drop_client()
            # Anything the PLC scanned while we were blind must not be reported as an arrival.
            self.tracker.mark_gap()
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
            client = self._client
            if client is None or not client.connected:
                log.warning("%s: connection lost", self.name)
                return any_ok
            slow = cycle % self.slow_poll_every == 0
            cycle += 1
            ok, fatal = await self._poll_once(include_outputs=slow)
            if ok:
                failed = 0
                any_ok = True
                self._set_state("online")
            else:
                failed += 1
                if failed >= self.max_failed_polls:
                    self._set_state("offline")
                    if fatal:
                        # Timeouts on an open socket: the peer is wedged or gone without a FIN.
                        # A fresh connection is the only way to find out.
                        log.warning("%s: %d failed polls, reconnecting", self.name, failed)
                        return any_ok
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
        if snapshot:
            self.last_poll_at = now
        self._observe(snapshot, now)
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
            for item_id in ids:
                self.arrivals.put_nowait(Arrival(item_id=item_id, seen_at=now))

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
            if self.state != "online":
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
        if not isinstance(item_id, int) or not 1 <= item_id <= 0xFFFF:
            return DivertResult("unknown_item", 0)
        if not isinstance(lane, int) or not 0 <= lane <= 0xFFFF:
            return DivertResult("invalid_lane", 0)
        async with self._divert_lock:
            if self.state != "online":
                return DivertResult("link_down", 0)
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
                return DivertResult("no_ack", seq)
            self._seq = seq
            result = await self._await_ack(seq, item_id, lane, deadline)
            if result.status == "no_ack":
                self.counters["divert_no_ack"] += 1
            return result

    async def _await_ack(self, seq: int, item_id: int, lane: int, deadline: float) -> DivertResult:
        loop = asyncio.get_running_loop()
        first, last = self._ack_sigs[0], self._ack_sigs[-1]
        span_contiguous = len({s.table for s in self._ack_sigs}) == 1 and last.end - first.address == sum(
            s.width for s in self._ack_sigs
        )
        interval = min(self.poll_period_s, 0.005)
        while True:
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
