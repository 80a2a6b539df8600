"""Mettler Toledo MT-SICS (level 0/1) scale: reply parsing (pure) and an async command transport.

MT-SICS is line-based ASCII, one command per line, each answered by one line
"<command id> <status> [parameters]", e.g. "S S     123.45 g". Status "S"/"D" are stable/dynamic
weights, "I" not executable now, "+"/"-" over/underload, "A" done; "ES"/"ET"/"EL" are syntax,
transmission and logic errors for a command the scale could not even attribute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass

from drivers.serial_port import (
    FramingError,
    LineFramer,
    LinkState,
    PortUnavailable,
    SerialDevice,
    SerialSettings,
)

_log = logging.getLogger(__name__)

__all__ = [
    "UNIT_GRAMS",
    "ScaleError",
    "ScaleOverload",
    "ScaleProtocolError",
    "ScaleTimeout",
    "ScaleUnavailable",
    "ScaleUnderload",
    "ScaleUnstable",
    "SicsError",
    "SicsReply",
    "SicsScale",
    "WeightReading",
    "parse_sics_line",
]

# Grams per unit for the weighing units MT-SICS balances report.
UNIT_GRAMS: dict[str, float] = {
    "g": 1.0,
    "kg": 1000.0,
    "mg": 0.001,
    "lb": 453.59237,
    "oz": 28.349523125,
    "ozt": 31.1034768,
    "ct": 0.2,
    "dwt": 1.55517384,
    "GN": 0.06479891,
}
_UNIT_LOOKUP = {u.lower(): u for u in UNIT_GRAMS}

MAX_LINE = 256
# The reference format is a 10-character field; allow slack for firmware variants, but no balance
# prints weights with dozens of digits, so such a value is noise, not a weight.
MAX_VALUE_CHARS = 16
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
_COMMAND_ID = re.compile(r"^(?:[A-Z][A-Z0-9]{0,7}|@)$")
_TOKEN = re.compile(r'"[^"]*"|\S+')
_WEIGHT_COMMANDS = frozenset({"S", "SI", "SIR", "SNR", "SX"})
_ERROR_MESSAGES = {
    "ES": "syntax error: the scale did not recognise the command",
    "ET": "transmission error: the scale received a garbled command",
    "EL": "logical error: the command cannot be executed",
}
_STATUS_MESSAGES = {
    "I": "command not executable now (scale busy or not stable within its timeout)",
    "L": "command understood but a parameter is wrong",
    "+": "overload: weight above the weighing range",
    "-": "underload: weight below the weighing range (pan missing?)",
}


@dataclass(frozen=True, slots=True)
class WeightReading:
    stable: bool
    value: float
    unit: str
    grams: float
    received_at: float


@dataclass(frozen=True, slots=True)
class SicsReply:
    """Any non-weight, non-error answer, e.g. "Z A", "T S 12.00 g", 'I4 A "B021002593"'."""

    command: str
    status: str
    values: tuple[str, ...]
    received_at: float
    grams: float | None = None


@dataclass(frozen=True, slots=True)
class SicsError:
    """A failed command or an unreadable line, as a value.

    code is "ES"/"ET"/"EL", "<command> <status>" such as "S +" or "Z I", or "parse" for a line
    that is not MT-SICS at all.
    """

    code: str
    message: str
    command: str = ""
    received_at: float = 0.0
    raw: bytes = b""


def _tokens(text: str) -> list[str] | None:
    tokens = _TOKEN.findall(text)
    # An unterminated quote leaves a token starting with '"' that findall split on spaces.
    if text.count('"') % 2:
        return None
    return tokens


def _weight(params: list[str]) -> tuple[float, str] | str:
    """Parameters of a weight reply to (value, unit) or an error message."""
    if len(params) == 3 and params[0] in ("+", "-") and _NUMBER.match(params[1]):
        # Some firmware prints the sign in its own column: "S S -    1.23 g".
        params = [params[0] + params[1], params[2]]
    if len(params) != 2:
        return f"expected '<value> <unit>', got {len(params)} parameter(s)"
    value_text, unit_text = params
    if not _NUMBER.match(value_text):
        return f"weight value {value_text[:20]!r} is not a number"
    if len(value_text) > MAX_VALUE_CHARS:
        return f"weight value {value_text[:20]!r}... is out of range"
    unit = _UNIT_LOOKUP.get(unit_text.lower())
    if unit is None:
        return f"unknown weight unit {unit_text[:10]!r}"
    value = float(value_text)
    if not math.isfinite(value):
        return f"weight value {value_text[:20]!r} is out of range"
    return value, unit


def parse_sics_line(line: bytes, now: float) -> WeightReading | SicsReply | SicsError:
    """One MT-SICS reply line (with or without CR LF) to a value. Never raises."""
    raw = bytes(line[:MAX_LINE])
    if len(line) > MAX_LINE:
        return SicsError("parse", f"reply longer than {MAX_LINE} bytes", received_at=now, raw=raw)
    try:
        text = raw.decode("ascii").strip(" \t\r\n")
    except UnicodeDecodeError:
        return SicsError("parse", "reply is not ASCII", received_at=now, raw=raw)
    if not text:
        return SicsError("parse", "empty reply", received_at=now, raw=raw)
    if not text.isprintable():
        return SicsError("parse", "reply contains control characters", received_at=now, raw=raw)
    tokens = _tokens(text)
    if tokens is None:
        return SicsError("parse", "unterminated quoted string", received_at=now, raw=raw)
    command = tokens[0]
    if command in _ERROR_MESSAGES:
        if len(tokens) != 1:
            return SicsError("parse", f"unexpected data after {command}", received_at=now, raw=raw)
        return SicsError(command, _ERROR_MESSAGES[command], received_at=now, raw=raw)
    if not _COMMAND_ID.match(command):
        return SicsError("parse", f"not an MT-SICS reply: {text[:40]!r}", received_at=now, raw=raw)
    if len(tokens) < 2:
        return SicsError("parse", f"reply {command!r} has no status", received_at=now, raw=raw)
    status, params = tokens[1], tokens[2:]

    if status in _STATUS_MESSAGES:
        if params:
            return SicsError("parse", f"unexpected data after '{command} {status}'", received_at=now, raw=raw)
        return SicsError(
            f"{command} {status}", _STATUS_MESSAGES[status], command=command, received_at=now, raw=raw
        )

    if command in _WEIGHT_COMMANDS and status in ("S", "D"):
        parsed = _weight(params)
        if isinstance(parsed, str):
            return SicsError("parse", parsed, command=command, received_at=now, raw=raw)
        value, unit = parsed
        return WeightReading(
            stable=status == "S", value=value, unit=unit, grams=value * UNIT_GRAMS[unit], received_at=now
        )

    if status in ("A", "B", "S", "D"):
        values = tuple(p[1:-1] if len(p) >= 2 and p[0] == '"' else p for p in params)
        grams: float | None = None
        # Tare ("T S 12.0 g", "TA A 12.0 g") and immediate-zero replies carry a weight too.
        if len(params) in (2, 3) and not any(p.startswith('"') for p in params):
            parsed = _weight(params)
            if not isinstance(parsed, str):
                grams = parsed[0] * UNIT_GRAMS[parsed[1]]
        return SicsReply(command=command, status=status, values=values, received_at=now, grams=grams)

    return SicsError("parse", f"unknown status {status[:8]!r} for {command}", received_at=now, raw=raw)


class ScaleError(Exception):
    """Base of everything `SicsScale` raises; `reading` is the last weight seen, if any."""

    def __init__(self, message: str, reading: WeightReading | None = None) -> None:
        super().__init__(message)
        self.reading = reading


class ScaleTimeout(ScaleError):
    """The scale did not answer in time."""


class ScaleUnstable(ScaleError):
    """The scale answered, but never with a stable weight before the deadline."""


class ScaleOverload(ScaleError):
    """Weight above the scale's range ("+")."""


class ScaleUnderload(ScaleError):
    """Weight below the scale's range ("-"): usually the weighing pan is off."""


class ScaleProtocolError(ScaleError):
    """A reply that makes no sense for the command sent, or an ES/EL error."""


class ScaleUnavailable(ScaleError):
    """The serial port is not open (device missing or reconnecting)."""


_Reply = WeightReading | SicsReply | SicsError


def _reply_command(reply: _Reply) -> str | None:
    if isinstance(reply, WeightReading):
        return "S"
    if isinstance(reply, SicsReply):
        return reply.command
    if reply.code in _ERROR_MESSAGES or reply.code == "parse":
        return None  # cannot be attributed: take it as the answer to whatever is outstanding
    return reply.command


class SicsScale(SerialDevice):
    """An MT-SICS scale on a serial port, kept open for as long as the context is entered.

    Commands are strictly one at a time (the protocol has no request ids), serialised by a lock.
    Replies that arrive with no command waiting, or for a different command, are stale answers to a
    command that already timed out; they are dropped and counted rather than mistaken for fresh ones.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        timeout_s: float = 0.3,
        *,
        poll_interval_s: float = 0.02,
        reconnect_max_s: float = 1.0,
        name: str = "scale",
    ) -> None:
        self.port = port
        self.name = name
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.errors: Counter[str] = Counter()
        self.last_reading: WeightReading | None = None
        self._framer = LineFramer(MAX_LINE)
        self._lock = asyncio.Lock()
        self._replies: asyncio.Queue[_Reply] = asyncio.Queue(maxsize=64)
        self._link = self._make_link(SerialSettings(port, baudrate, bytesize, parity, stopbits), name, reconnect_max_s)

    async def __aenter__(self) -> SicsScale:
        await self._link.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._link.__aexit__(*exc_info)

    def _on_state(self, state: LinkState) -> None:
        if state != "online":
            self._framer.reset()

    def _on_data(self, chunk: bytes, now: float) -> None:
        for line in self._framer.feed(chunk, now):
            if isinstance(line, FramingError):
                self.errors["framing"] += 1
                continue
            reply = parse_sics_line(line, now)
            if isinstance(reply, SicsError) and reply.code == "parse":
                self.errors["parse"] += 1
                _log.warning("%s: %s (%r)", self.name, reply.message, reply.raw[:40])
            if self._replies.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._replies.get_nowait()
                self.errors["stale"] += 1
            self._replies.put_nowait(reply)

    def _drain_stale(self) -> None:
        while not self._replies.empty():
            self._replies.get_nowait()
            self.errors["stale"] += 1

    async def _command(self, command: str, timeout_s: float) -> _Reply:
        """Send one command and wait for its reply; caller holds the lock."""
        self._drain_stale()
        try:
            self._link.write(command.encode("ascii") + b"\r\n")
        except PortUnavailable as exc:
            self.errors["unavailable"] += 1
            raise ScaleUnavailable(str(exc)) from None
        expected = "S" if command in _WEIGHT_COMMANDS else command.split(" ", 1)[0]
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                self.errors["timeout"] += 1
                raise ScaleTimeout(f"{self.name}: no reply to {command!r} within {timeout_s:.3f} s")
            try:
                async with asyncio.timeout(remaining):
                    reply = await self._replies.get()
            except TimeoutError:
                continue
            attributed = _reply_command(reply)
            if attributed is None or attributed == expected:
                return reply
            self.errors["stale"] += 1

    def _raise_for(self, reply: SicsError, reading: WeightReading | None) -> None:
        status = reply.code.rsplit(" ", 1)[-1]
        if status == "+":
            self.errors["overload"] += 1
            raise ScaleOverload(f"{self.name}: {reply.message}", reading)
        if status == "-":
            self.errors["underload"] += 1
            raise ScaleUnderload(f"{self.name}: {reply.message}", reading)
        self.errors["protocol"] += 1
        raise ScaleProtocolError(f"{self.name}: {reply.code}: {reply.message}", reading)

    async def read_weight(self, stable_only: bool = True, deadline_s: float = 0.25) -> WeightReading:
        """Poll with SI until a stable weight (or any weight if not `stable_only`) or the deadline."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        async with self._lock:
            last: WeightReading | None = None
            busy = False
            while True:
                remaining = end - loop.time()
                if remaining <= 0:
                    break
                try:
                    reply = await self._command("SI", min(self.timeout_s, remaining))
                except ScaleTimeout:
                    continue  # one lost reply is not fatal while the deadline allows another try
                if isinstance(reply, WeightReading):
                    last = reply
                    self.last_reading = reply
                    if reply.stable or not stable_only:
                        return reply
                elif isinstance(reply, SicsError):
                    status = reply.code.rsplit(" ", 1)[-1]
                    if reply.code == "ET" or status == "I":
                        # Garbled in transit or scale busy (taring): worth asking again.
                        busy = busy or status == "I"
                        self.errors["retry"] += 1
                    else:
                        self._raise_for(reply, last)
                else:
                    self.errors["protocol"] += 1
                    raise ScaleProtocolError(f"{self.name}: unexpected reply {reply!r} to SI", last)
                await asyncio.sleep(min(self.poll_interval_s, max(0.0, end - loop.time())))
            if last is not None:
                self.errors["unstable"] += 1
                raise ScaleUnstable(
                    f"{self.name}: no stable weight within {deadline_s:.3f} s (last {last.grams:.2f} g)", last
                )
            self.errors["timeout"] += 1
            why = "scale busy" if busy else "no weight reply"
            raise ScaleTimeout(f"{self.name}: {why} within {deadline_s:.3f} s")

    async def _simple(self, command: str, ok_status: str, timeout_s: float) -> SicsReply:
        async with self._lock:
            reply = await self._command(command, timeout_s)
        if isinstance(reply, SicsReply) and reply.status == ok_status:
            return reply
        if isinstance(reply, SicsError):
            if reply.code.endswith(" I"):
                self.errors["unstable"] += 1
                raise ScaleUnstable(f"{self.name}: {command} not executed: {reply.message}")
            self._raise_for(reply, None)
        self.errors["protocol"] += 1
        raise ScaleProtocolError(f"{self.name}: unexpected reply {reply!r} to {command}")

    async def zero(self, timeout_s: float = 2.0) -> None:
        """Set zero ("Z"); the scale answers only once stable, hence the longer default timeout."""
        await self._simple("Z", "A", timeout_s)

    async def tare(self, timeout_s: float = 2.0) -> float | None:
        """Tare ("T"); returns the tare weight in grams."""
        return (await self._simple("T", "S", timeout_s)).grams

    async def serial_number(self, timeout_s: float = 0.5) -> str:
        """The scale's serial number ("I4")."""
        reply = await self._simple("I4", "A", timeout_s)
        return reply.values[0] if reply.values else ""
