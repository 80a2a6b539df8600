"""Modbus RTU: PlcLink over a serial line, with several devices sharing one bus.

An RS-485 bus has one master and one serial port, so every link on it shares one pymodbus serial
client (`RtuBus`). pymodbus serialises requests on a client, so the links' poll loops interleave on
the wire without extra locking. A dead device answers nothing, which costs the bus one request
timeout per attempt; its link therefore probes with a single short read and backs off between
probes instead of polling it every cycle, so the live devices keep their poll rate. A device that
dies mid-run is not retried back to back either: after its first timed-out poll only its poll loop
may use the bus (heartbeat writes and diverts are withheld) and it waits 2 x timeout between polls,
so it costs the others one timeout at a time. `RtuBus.history` records what each request cost.

Noise on the bus is counted on the bus (`RtuBus.noise`), in two kinds. Bytes that arrive while no
request waits for a reply (line noise, a device answering late, a second master) never reach a
poll: pymodbus drops them when the next request starts (`stray_receptions`). Bytes that arrive for
a request but never make a valid reply (a burst that spoiled it, a CRC that does not match) end in
a timeout, like a device that is not there (`garbled_replies` tells them apart).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any, Literal, Self

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.client.base import ModbusBaseClient

from plc.client import PlcLink, _RequestFailed
from plc.register_map import RegisterMap

log = logging.getLogger(__name__)

Parity = Literal["N", "E", "O"]


class RtuBus:
    """One serial port shared by every PlcLink on it. Opened lazily by the first link that needs it."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 19200,
        bytesize: int = 8,
        parity: Parity = "E",
        stopbits: int = 1,
        timeout_s: float = 0.1,
        name: str = "rtu",
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self.timeout_s = timeout_s
        self.name = name
        self.opens = 0
        self.users = 0
        # (device id, outcome) of the latest requests that went on the wire, oldest first: what
        # each device cost the bus, for diagnostics and tests (outcome: "ok" or a failure kind).
        self.history: collections.deque[tuple[int, str]] = collections.deque(maxlen=4096)
        # Receptions (one per chunk the serial port delivered) while no request waited for a reply.
        self.stray_receptions = 0
        # Requests that timed out with bytes received that made no valid reply.
        self.garbled_replies = 0
        self._client: AsyncModbusSerialClient | None = None
        self._lock = asyncio.Lock()

    def attach(self) -> None:
        """A link starts using the bus (see `detach`)."""
        self.users += 1

    def detach(self) -> None:
        """A link stopped using the bus; the last one out closes the port."""
        self.users = max(0, self.users - 1)
        if self.users == 0:
            self.close()

    @property
    def client(self) -> AsyncModbusSerialClient | None:
        client = self._client
        return client if client is not None and client.connected else None

    async def ensure_open(self) -> AsyncModbusSerialClient | None:
        """The connected client, opening the port if needed; None when it cannot be opened."""
        async with self._lock:
            if self.client is not None:
                return self._client
            self.close()
            client = AsyncModbusSerialClient(
                self.port,
                framer=FramerType.RTU,
                baudrate=self.baudrate,
                bytesize=self.bytesize,
                parity=self.parity,
                stopbits=self.stopbits,
                timeout=self.timeout_s,
                retries=0,  # a retried poll is a late poll; the links own retrying
                reconnect_delay=0,  # the links own reconnecting, with backoff
                name=self.name,
                trace_packet=self._watch_packet,
            )
            try:
                ok = await client.connect()
            except Exception:  # an unplugged adapter raises all sorts; the links retry
                log.exception("%s: opening %s raised", self.name, self.port)
                ok = False
            if not ok or not client.connected:
                with contextlib.suppress(Exception):
                    client.close()
                return None
            self.opens += 1
            self._client = client
            log.info("%s: opened %s at %d baud", self.name, self.port, self.baudrate)
            return client

    @property
    def noise(self) -> int:
        """Everything on the wire that was not a valid frame when one was due."""
        return self.stray_receptions + self.garbled_replies

    def _transaction(self) -> Any:
        """pymodbus 3.16 internals (pinned), in one place: the client's transaction manager (`ctx`),
        which holds the receive buffer and the future of the request in flight (done once answered
        or timed out; `request_dev_id` stays 0 until the first request went out). None when closed."""
        return getattr(self._client, "ctx", None)

    def bytes_waiting(self) -> int:
        """Bytes received since the current request went out that made no frame yet."""
        return len(getattr(self._transaction(), "recv_buffer", b"") or b"")

    def _watch_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus' packet hook: counts bytes that arrive when no request is waiting for them."""
        if not sending:
            ctx = self._transaction()
            future = getattr(ctx, "response_future", None)
            if ctx is None or getattr(ctx, "request_dev_id", 0) == 0 or future is None or future.done():
                self.stray_receptions += 1
        return data

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


class RtuPlcLink(PlcLink):
    """PlcLink for one device (register_map.device_id) on an RtuBus."""

    def __init__(self, bus: RtuBus, register_map: RegisterMap, *, owns_bus: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("timeout_s", bus.timeout_s)
        kwargs.setdefault("name", f"plc@{register_map.device_id}")
        super().__init__(bus.port, 0, register_map, **kwargs)
        self.bus = bus
        self.owns_bus = owns_bus
        self._shared_medium = True

    async def _request(self, call: Any) -> Any:
        device_id = self.register_map.device_id
        try:
            reply = await super()._request(call)
        except _RequestFailed as exc:
            if exc.kind == "timeouts" and self.bus.bytes_waiting():
                # Read before anything else can use the bus: the next request clears the buffer.
                self.bus.garbled_replies += 1
            if exc.kind != "disconnected":  # "disconnected" never reached the wire
                self.bus.history.append((device_id, exc.kind))
            raise
        self.bus.history.append((device_id, "ok"))
        return reply

    async def __aenter__(self) -> Self:
        if self.owns_bus:
            self.bus.attach()
        return await super().__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await super().__aexit__(*exc_info)
        finally:
            if self.owns_bus:
                # Shared by every link the factory put on this port: the last one out closes it.
                self.bus.detach()

    @property
    def endpoint(self) -> str:
        return f"{self.bus.port}#{self.register_map.device_id}"

    def _make_client(self) -> ModbusBaseClient:  # pragma: no cover - the bus builds the client
        raise NotImplementedError("RTU links share their bus' client")

    async def _open(self) -> bool:
        client = await self.bus.ensure_open()
        if client is None:
            return False
        self._client = client
        # One short read tells a live device from a dead one before we commit to polling it.
        sig = self.register_map["scan_item_id"]
        try:
            await self._read(sig.table, sig.address, sig.width)
        except _RequestFailed as exc:
            self._client = None
            if exc.kind != "exceptions":
                log.debug("%s: no answer from device %d: %s", self.name, self.register_map.device_id, exc)
                if exc.kind == "timeouts":
                    self.counters["timeouts"] += 1
                return False
            # An exception response is an answer: the device is alive, the map may be off.
            self._client = client
        return True

    def _drop_client(self) -> None:
        # Never close the shared port because one device went quiet; a port that really failed
        # shows up as not connected and the next _open reopens it for everyone.
        self._client = None
