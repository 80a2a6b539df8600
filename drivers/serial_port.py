"""Shared serial plumbing: line framing over bytes and a self-healing port connection.

The framing here is pure (bytes in, values out) so the scanner and scale drivers can be tested
without a port. `SerialLink` is the only place that touches pyserial: it opens the port with
pyserial-asyncio-fast, hands every received chunk to a callback, and reopens the port with capped,
jittered exponential backoff when the device vanishes (USB unplug, hub reset, pty closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import serial
import serial_asyncio_fast

_log = logging.getLogger(__name__)

LinkState = Literal["connecting", "online", "lost"]
Parity = Literal["N", "E", "O", "M", "S"]

_CR = 0x0D
_LF = 0x0A
# Line noise on power-up and some USB adapters' idle fill: never part of a barcode or a reply.
_JUNK = bytes([0x00, 0xFF])


@dataclass(frozen=True, slots=True)
class FramingError:
    """A framing problem as a value: the stream keeps going after it."""

    message: str
    received_at: float
    raw: bytes = b""


class LineFramer:
    """Splits a byte stream into lines at CR and/or LF.

    Any CR or LF ends a line, so "crlf", "cr" and "lf" devices all frame the same way and a line is
    complete as soon as its first terminator byte arrives (no waiting for the LF of a CR LF pair).
    Empty lines, which is what the second byte of CR LF produces, are skipped.
    A line longer than `max_line` is dropped whole, reported once, and framing resyncs at the next
    terminator, so a device spewing garbage cannot grow memory without bound.
    """

    __slots__ = ("_buf", "_discarding", "max_line")

    def __init__(self, max_line: int = 512) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    def reset(self) -> None:
        """Forget a partial line, e.g. after the port was reopened."""
        self._buf.clear()
        self._discarding = False

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def feed(self, data: bytes, now: float) -> list[bytes | FramingError]:
        out: list[bytes | FramingError] = []
        if not data:
            return out
        data = bytes(data).translate(None, _JUNK)
        start = 0
        n = len(data)
        while start < n:
            end = _next_terminator(data, start)
            if end < 0:
                self._append(data[start:], now, out)
                break
            self._append(data[start:end], now, out)
            if self._discarding:
                self._discarding = False
            elif self._buf:
                out.append(bytes(self._buf))
            self._buf.clear()
            start = end + 1
        return out

    def _append(self, chunk: bytes, now: float, out: list[bytes | FramingError]) -> None:
        if self._discarding or not chunk:
            return
        if len(self._buf) + len(chunk) > self.max_line:
            head = bytes(self._buf[:32]) if self._buf else chunk[:32]
            out.append(
                FramingError(f"line longer than {self.max_line} bytes discarded", received_at=now, raw=head)
            )
            self._buf.clear()
            self._discarding = True
            return
        self._buf += chunk


def _next_terminator(data: bytes, start: int) -> int:
    cr = data.find(b"\r", start)
    lf = data.find(b"\n", start)
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)


@dataclass(frozen=True, slots=True)
class SerialSettings:
    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1


class Backoff:
    """Capped exponential backoff with "equal jitter": half fixed, half random.

    The fixed half keeps reconnect storms from hammering a dead port; the random half keeps two
    controllers (or a scanner and a scale on one hub) from retrying in lockstep.
    """

    def __init__(self, initial_s: float = 0.05, max_s: float = 5.0, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max(max_s, initial_s)
        self._attempt = 0
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        # Cap the exponent too, so a port missing for days cannot overflow the float.
        ceiling = min(self.max_s, self.initial_s * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)


class PortUnavailable(ConnectionError):
    """Raised by `SerialLink.write` while the port is not open."""


async def _open(settings: SerialSettings) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # open_serial_connection opens the device in an executor thread; if we are cancelled meanwhile
    # the thread still finishes and would leak an open fd, so shield it and close what arrives late.
    task = asyncio.ensure_future(
        serial_asyncio_fast.open_serial_connection(
            url=settings.port,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
        )
    )
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_close_late_open)
        raise


def _close_late_open(task: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    _reader, writer = task.result()
    writer.close()


class SerialLink:
    """Keeps one serial port open for as long as the context is entered.

    `on_data(chunk, now)` gets every received chunk with the loop time it arrived; `on_state`
    is told about every state change. Both run in the event loop and must not block.
    Errors are counted in `errors` by kind ("open", "lost", ...) and never escape the background task.
    """

    def __init__(
        self,
        settings: SerialSettings,
        *,
        name: str,
        on_data: Callable[[bytes, float], None],
        on_state: Callable[[LinkState], None] | None = None,
        reconnect_initial_s: float = 0.05,
        reconnect_max_s: float = 5.0,
        errors: Counter[str] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.errors: Counter[str] = errors if errors is not None else Counter()
        self._on_data = on_data
        self._on_state = on_state
        self._backoff = Backoff(reconnect_initial_s, reconnect_max_s)
        self._state: LinkState = "connecting"
        self._changed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.connects = 0

    @property
    def state(self) -> LinkState:
        return self._state

    def _set_state(self, state: LinkState) -> None:
        if state == self._state:
            return
        self._state = state
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_state is not None:
            self._on_state(state)

    async def wait_for_state(self, state: LinkState, timeout: float | None = None) -> None:
        """Wait until the link is in `state`; raises TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while self._state != state:
                await self._changed.wait()

    def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or self._state != "online" or writer.is_closing():
            raise PortUnavailable(f"{self.name}: port {self.settings.port} is not open")
        writer.write(data)

    async def drain(self) -> None:
        writer = self._writer
        if writer is None:
            raise PortUnavailable(f"{self.name}: port {self.settings.port} is not open")
        await writer.drain()

    async def __aenter__(self) -> SerialLink:
        if self._task is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._task = asyncio.create_task(self._run(), name=f"serial-link:{self.name}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = False
        while True:
            try:
                reader, writer = await _open(self.settings)
            except (serial.SerialException, OSError, ValueError) as exc:
                self.errors["open"] += 1
                # One log line per outage, not one per retry.
                if not quiet:
                    _log.warning("%s: cannot open %s: %s", self.name, self.settings.port, exc)
                    quiet = True
                await asyncio.sleep(self._backoff.next_delay())
                continue
            quiet = False
            self._backoff.reset()
            self._writer = writer
            self.connects += 1
            _log.info("%s: %s open", self.name, self.settings.port)
            self._set_state("online")
            try:
                while True:
                    chunk = await reader.read(4096)
                    if not chunk:
                        raise ConnectionError("end of stream")
                    try:
                        self._on_data(chunk, loop.time())
                    except Exception:
                        # A bug in a parser callback must not take the port down with it.
                        self.errors["internal"] += 1
                        _log.exception("%s: data handler failed", self.name)
            except (serial.SerialException, OSError) as exc:
                # OSError covers ConnectionError; both mean the device went away under us.
                self.errors["lost"] += 1
                _log.warning("%s: lost %s: %s", self.name, self.settings.port, exc)
            finally:
                self._writer = None
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            self._set_state("lost")
            await asyncio.sleep(self._backoff.next_delay())


class SerialDevice:
    """The common front of a driver that owns one `SerialLink` (scanner, scales)."""

    _link: SerialLink
    errors: Counter[str]

    def _make_link(self, settings: SerialSettings, name: str, reconnect_max_s: float) -> SerialLink:
        """The link feeding this device's `_on_data` and `_on_state`, counting into `errors`."""
        return SerialLink(
            settings,
            name=name,
            on_data=self._on_data,  # type: ignore[attr-defined]
            on_state=self._on_state,  # type: ignore[attr-defined]
            reconnect_max_s=reconnect_max_s,
            errors=self.errors,
        )

    @property
    def state(self) -> LinkState:
        return self._link.state

    async def wait_for_state(self, state: LinkState, timeout: float | None = None) -> None:
        await self._link.wait_for_state(state, timeout)
