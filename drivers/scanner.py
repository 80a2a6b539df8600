"""Serial barcode scanner: AIM-prefixed line framing (pure) and a reconnecting async transport.

Handheld and fixed-mount scanners in "serial/keyboard wedge off" mode send one line per read:
an optional AIM symbology identifier (ISO/IEC 15424, e.g. "]C1" for GS1-128), the data, and a
configured suffix (CR LF by default). A failed read is reported with a configurable no-read text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from drivers.serial_port import (
    FramingError,
    LineFramer,
    LinkState,
    PortUnavailable,
    SerialDevice,
    SerialSettings,
)

_log = logging.getLogger(__name__)

Suffix = Literal["crlf", "cr", "lf", "none"]
SUFFIX_BYTES: dict[str, bytes] = {"crlf": b"\r\n", "cr": b"\r", "lf": b"\n", "none": b""}

# Honeywell serial trigger commands (Honeywell "Serial Trigger Mode", SYN T CR / SYN U CR).
TRIGGER_ON = b"\x16T\r"
TRIGGER_OFF = b"\x16U\r"

__all__ = [
    "AIM_SYMBOLOGIES",
    "SUFFIX_BYTES",
    "TRIGGER_OFF",
    "TRIGGER_ON",
    "DuplicateFilter",
    "FramingError",
    "GarbageRead",
    "IdleFramer",
    "NoRead",
    "ScanRead",
    "ScannerFramer",
    "SerialScanner",
    "implausible",
    "symbology_for_aim",
]


@dataclass(frozen=True, slots=True)
class ScanRead:
    text: str
    aim: str
    symbology: str
    received_at: float
    raw: bytes


@dataclass(frozen=True, slots=True)
class NoRead:
    received_at: float
    raw: bytes


# ISO/IEC 15424 symbology identifiers, "]" + code character + modifier. Only the combinations a
# returns line meets are named; other modifiers fall back to the code character's family name.
AIM_SYMBOLOGIES: dict[str, str] = {
    "]A0": "Code 39",
    "]A1": "Code 39",  # check digit verified and transmitted
    "]A3": "Code 39",  # check digit verified and stripped
    "]A4": "Code 39 Full ASCII",
    "]A5": "Code 39 Full ASCII",
    "]A7": "Code 39 Full ASCII",
    "]C0": "Code 128",
    "]C1": "GS1-128",
    "]C2": "Code 128",  # FNC1 in second position (AIM application)
    "]C4": "Code 128",  # ISBT concatenation
    "]E0": "EAN-13",  # also UPC-A, sent as 13 digits
    "]E1": "EAN-13",  # two-digit add-on alone
    "]E2": "EAN-13",  # five-digit add-on alone
    "]E3": "EAN-13",  # with add-on
    "]E4": "EAN-8",
    "]d0": "DataMatrix",  # ECC 000-140
    "]d1": "DataMatrix",
    "]d2": "GS1 DataMatrix",
    "]d3": "DataMatrix",  # FNC1 in second position
    "]d4": "DataMatrix",  # with ECI
    "]d5": "GS1 DataMatrix",  # with ECI
    "]d6": "DataMatrix",
    "]Q0": "QR",  # model 1
    "]Q1": "QR",
    "]Q2": "QR",  # with ECI
    "]Q3": "GS1 QR",
    "]Q4": "GS1 QR",  # with ECI
    "]Q5": "QR",  # FNC1 in second position
    "]Q6": "QR",
    "]e0": "GS1 DataBar",
    "]e1": "GS1 DataBar",
    "]e2": "GS1 DataBar",
    "]e3": "GS1 DataBar",
    "]I0": "Interleaved 2 of 5",
    "]I1": "Interleaved 2 of 5",
    "]I3": "Interleaved 2 of 5",
    "]L0": "PDF417",
    "]L1": "PDF417",
    "]L2": "PDF417",
    "]z0": "Aztec",
    "]F0": "Codabar",
    "]G0": "Code 93",
    "]X0": "Other",
}

_AIM_FAMILIES: dict[str, str] = {
    "A": "Code 39",
    "C": "Code 128",
    "E": "EAN/UPC",
    "d": "DataMatrix",
    "Q": "QR",
    "e": "GS1 DataBar",
    "I": "Interleaved 2 of 5",
    "L": "PDF417",
    "z": "Aztec",
    "F": "Codabar",
    "G": "Code 93",
    "H": "Code 11",
    "M": "MSI",
    "X": "Other",
    "Z": "Other",
}


def symbology_for_aim(aim: str) -> str:
    """Readable symbology name for an AIM identifier; "Unknown" when there is none."""
    name = AIM_SYMBOLOGIES.get(aim)
    if name is not None:
        return name
    if len(aim) == 3 and aim[0] == "]":
        family = _AIM_FAMILIES.get(aim[1])
        if family is not None:
            return family
        return f"Unknown ({aim})"
    return "Unknown"


def _is_aim_prefix(line: bytes) -> bool:
    # "]" + ASCII letter + modifier character ("0"-"9", "A"-"Z" or "a"-"z") per ISO/IEC 15424.
    return (
        len(line) >= 3
        and line[0] == 0x5D
        and (0x41 <= line[1] <= 0x5A or 0x61 <= line[1] <= 0x7A)
        and (0x30 <= line[2] <= 0x39 or 0x41 <= line[2] <= 0x5A or 0x61 <= line[2] <= 0x7A)
    )


def _decode(data: bytes) -> str:
    # QR and DataMatrix may carry UTF-8; anything else still maps losslessly through Latin-1 so a
    # barcode is never rejected merely for its encoding (raw keeps the exact bytes regardless).
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@dataclass(frozen=True, slots=True)
class GarbageRead(FramingError):
    """A complete line that no scanner would send for a label: noise framed as a read (wrong baud
    rate, a floating line, a cable half in). Counted and alarmed, never given to identity."""


# What each symbology can carry, by AIM code character. Linear symbologies have small character
# sets, which is what makes noise easy to tell from a read.
_DIGITS = frozenset(b"0123456789")
_CODE39 = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ -.$/+%")
_CODABAR = frozenset(b"0123456789-$:/.+ABCDEabcdeTN*")
# Separators of GS1 element strings and ISO/IEC 15434 envelopes (EOT, FS, GS, RS, US); the framer
# has already taken CR/LF.
_SEPARATORS = frozenset(b"\x04\x1c\x1d\x1e\x1f")
_PRINTABLE = frozenset(range(0x20, 0x7F)) | _SEPARATORS
_CHARSETS: dict[str, frozenset[int]] = {"E": _DIGITS, "I": _DIGITS, "F": _CODABAR}
# 2D symbologies may carry UTF-8 text (and so may a scanner without AIM identifiers).
_UNICODE_CAPABLE = frozenset("dQzL")


def _gtin_check_ok(digits: str) -> bool:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:-1])))
    return (10 - total % 10) % 10 == int(digits[-1])


def implausible(aim: str, body: bytes, min_length: int = 1) -> str | None:
    """Why `body` (AIM prefix removed) cannot be a read of symbology `aim`; None when it can. Pure."""
    if len(body) < min_length:
        return f"{len(body)} byte(s), shorter than any label here ({min_length})"
    code = aim[1] if len(aim) == 3 else ""
    modifier = aim[2] if len(aim) == 3 else ""
    charset = _CHARSETS.get(code)
    if code == "A" and modifier in "0123":
        charset = _CODE39  # Code 39 without full ASCII
    if charset is not None:
        bad = next((b for b in body if b not in charset), None)
        if bad is not None:
            return f"byte {bad:#04x} cannot be encoded in {symbology_for_aim(aim)}"
        if code == "E" and modifier in "03" and len(body) >= 12:
            gtin = body[:13].decode("ascii") if modifier == "3" else body.decode("ascii")
            if len(gtin) in (12, 13) and not _gtin_check_ok(gtin):
                return f"EAN/UPC check digit wrong in {gtin}"
        if code == "E" and modifier == "4" and (len(body) != 8 or not _gtin_check_ok(body.decode("ascii"))):
            return "not a valid EAN-8 (8 digits with a check digit)"
        return None
    high = sum(1 for b in body if b >= 0x80)
    if high:
        # Code 128 reaches Latin-1 through FNC4 and 2D codes carry UTF-8, but a label is mostly
        # ASCII; a line mostly of bit-7 bytes is what a UART at the wrong speed produces.
        # Valid multi-byte UTF-8 is itself strong evidence: wrong-baud bytes almost never form it.
        if code and code not in _UNICODE_CAPABLE and code != "C":
            return f"bytes with bit 7 set cannot be encoded in {symbology_for_aim(aim)}"
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            if any(0x80 <= b < 0xA0 for b in body):
                return "C1 control bytes (0x80-0x9f) in a read: wrong baud rate or noise"
            if len(body) >= 4 and high * 2 > len(body):
                return f"{high} of {len(body)} bytes have bit 7 set: wrong baud rate or noise"
            text = body.decode("latin-1")
        if not all(ch.isprintable() or ord(ch) in _SEPARATORS for ch in text):
            return "unprintable characters: wrong baud rate or noise"
        return None
    bad = next((b for b in body if b not in _PRINTABLE), None)
    if bad is not None:
        return f"control byte {bad:#04x} in a read: wrong baud rate or noise"
    return None


class IdleFramer:
    """Frames a stream without terminators: a pause of `timeout_s` between bytes ends a read.

    Pure: time comes in with the bytes. `feed` closes the pending read first when the new chunk
    arrives after the pause; `flush(now)` closes it when nothing more arrived (the driver calls it
    from a timer). NUL and 0xFF are dropped as in `LineFramer`; overlong reads are dropped whole.
    """

    __slots__ = ("_buf", "_discarding", "_last_at", "max_line", "timeout_s")

    def __init__(self, timeout_s: float = 0.05, max_line: int = 512) -> None:
        if timeout_s <= 0 or max_line < 1:
            raise ValueError("timeout_s must be > 0 and max_line >= 1")
        self.timeout_s = timeout_s
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False
        self._last_at = 0.0

    def reset(self) -> None:
        self._buf.clear()
        self._discarding = False

    @property
    def pending(self) -> bool:
        return bool(self._buf) or self._discarding

    @property
    def last_byte_at(self) -> float:
        return self._last_at

    def flush(self, now: float) -> list[bytes | FramingError]:
        if not self.pending or now - self._last_at < self.timeout_s:
            return []
        out: list[bytes | FramingError] = [] if self._discarding else [bytes(self._buf)]
        self.reset()
        return out

    def feed(self, data: bytes, now: float) -> list[bytes | FramingError]:
        out = self.flush(now)
        data = bytes(data).translate(None, b"\x00\xff")
        if not data:
            return out
        self._last_at = now
        if self._discarding:
            return out
        if len(self._buf) + len(data) > self.max_line:
            out.append(FramingError(f"read longer than {self.max_line} bytes discarded", now,
                                    bytes((self._buf or data)[:32])))
            self._buf.clear()
            self._discarding = True
            return out
        self._buf += data
        return out


class DuplicateFilter:
    """Suppresses a symbol read again within `window_s` of its last accepted read. Pure.

    The window counts from the accepted read, not from the last repeat, so a label left under a
    presentation scanner is accepted again once per window instead of never; `clear` forgets
    everything (a new host trigger means a new unit, whose label may legitimately be the same).
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._accepted: dict[tuple[str, str], float] = {}

    def clear(self) -> None:
        self._accepted.clear()

    def accept(self, aim: str, text: str, now: float) -> bool:
        if self.window_s <= 0:
            return True
        if len(self._accepted) > 1024:
            self._accepted = {k: t for k, t in self._accepted.items() if now - t < self.window_s}
        key = (aim, text)
        last = self._accepted.get(key)
        if last is not None and 0 <= now - last < self.window_s:
            return False
        self._accepted[key] = now
        return True


class ScannerFramer:
    """Bytes from the scanner in, `ScanRead` / `NoRead` / `FramingError` values out. No I/O.

    With `suffix="none"` reads are framed by an inter-character pause (`IdleFramer`); call
    `flush(now)` once the pause has passed to get the last read out.
    """

    def __init__(
        self,
        suffix: Suffix = "crlf",
        max_line: int = 512,
        no_read_messages: Iterable[str] = ("NR", "NOREAD", "NO READ"),
        intercharacter_timeout_s: float = 0.05,
        banner_patterns: Iterable[str] = (),
        *,
        aim_required: bool = False,
        min_length: int = 1,
    ) -> None:
        if suffix not in SUFFIX_BYTES:
            raise ValueError(f"suffix must be one of {sorted(SUFFIX_BYTES)}, not {suffix!r}")
        self.suffix: Suffix = suffix
        self._lines: LineFramer | IdleFramer = (
            IdleFramer(intercharacter_timeout_s, max_line) if suffix == "none" else LineFramer(max_line)
        )
        self._no_reads = frozenset(m.strip().upper() for m in no_read_messages if m.strip())
        # Power-up banners and firmware announcements: whole lines that are never barcode data.
        self._banners = [re.compile(p) for p in banner_patterns]
        self.banners_dropped = 0
        # Plausibility gate: a scanner set to send AIM identifiers sends one with every read.
        self.aim_required = aim_required
        self.min_length = max(1, min_length)

    def reset(self) -> None:
        self._lines.reset()

    @property
    def idle_framed(self) -> IdleFramer | None:
        return self._lines if isinstance(self._lines, IdleFramer) else None

    def flush(self, now: float) -> list[ScanRead | NoRead | FramingError]:
        if not isinstance(self._lines, IdleFramer):
            return []
        # A read is stamped with the time its last byte arrived, not when the pause was noticed.
        last = self._lines.last_byte_at
        return self._events(self._lines.flush(now), last)

    def feed(self, data: bytes, now: float) -> list[ScanRead | NoRead | FramingError]:
        if isinstance(self._lines, IdleFramer):
            return self.flush(now) + self._events(self._lines.feed(data, now), now)
        return self._events(self._lines.feed(data, now), now)

    def _events(self, items: list[bytes | FramingError], now: float) -> list[ScanRead | NoRead | FramingError]:
        out: list[ScanRead | NoRead | FramingError] = []
        for item in items:
            if isinstance(item, FramingError):
                out.append(item)
            else:
                event = self.parse_line(item, now)
                if isinstance(event, GarbageRead):
                    out.extend(self._salvage(item, event, now))
                elif event is not None:
                    out.append(event)
        return out

    def _salvage(self, line: bytes, garbage: GarbageRead, now: float) -> list[ScanRead | NoRead | FramingError]:
        """A good read glued behind noise (the line end was lost in the noise, as after a burst at
        the wrong baud rate): the first AIM identifier from which the rest of the line is a plausible
        read marks where the read begins (the first, so an identifier-like text inside the read is
        not mistaken for the start). Without AIM identifiers there is no such mark: all garbage."""
        for start in range(1, len(line) - 3):
            if line[start] != 0x5D or not _is_aim_prefix(line[start:]):
                continue
            tail = self.parse_line(line[start:], now)
            if isinstance(tail, ScanRead | NoRead):
                return [GarbageRead(f"{garbage.message} (a read followed it)", now, bytes(line[:min(start, 64)])),
                        tail]
        return [garbage]

    def parse_line(self, line: bytes, now: float) -> ScanRead | NoRead | FramingError | None:
        """One complete line (terminator removed) to an event; None for a blank line."""
        body = line
        # Some scanners wrap each read in STX ... ETX on top of the suffix.
        if body[:1] == b"\x02":
            body = body[1:]
        if body[-1:] == b"\x03":
            body = body[:-1]
        if not body.strip(b" \t"):
            return None
        if self._banners:
            shown = _decode(body)
            if any(p.search(shown) for p in self._banners):
                self.banners_dropped += 1
                return None
        aim = ""
        if _is_aim_prefix(body):
            aim = body[:3].decode("ascii")
            body = body[3:]
        text = _decode(body)
        if text.strip().upper() in self._no_reads:
            return NoRead(received_at=now, raw=bytes(line))
        if not text:
            return FramingError(f"AIM identifier {aim} without data", received_at=now, raw=bytes(line))
        if self.aim_required and not aim:
            return GarbageRead("garbage: no AIM identifier, which this scanner always sends", now, bytes(line[:64]))
        why = implausible(aim, body, self.min_length)
        if why is not None:
            return GarbageRead(f"garbage: {why}", now, bytes(line[:64]))
        symbology = symbology_for_aim(aim)
        return ScanRead(text=text, aim=aim, symbology=symbology, received_at=now, raw=bytes(line))


class SerialScanner(SerialDevice):
    """A serial barcode scanner kept online for as long as the context is entered.

    Reads and no-reads go to `events` (bounded: when nobody consumes, the oldest are dropped and
    counted, because a stale read is worth less than a fresh one). Framing errors and port trouble
    are counted in `errors` by kind; none of them ends the background task.
    The reconnect cap is 1 s so a replugged scanner is read again within 2 s.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        suffix: Suffix = "crlf",
        reconnect_max_s: float = 1.0,
        *,
        max_line: int = 512,
        no_read_messages: Iterable[str] = ("NR", "NOREAD", "NO READ"),
        intercharacter_timeout_s: float = 0.05,
        banner_patterns: Iterable[str] = (),
        aim_required: bool = False,
        min_length: int = 1,
        duplicate_window_s: float = 0.0,
        trigger_window_s: float = 0.3,
        queue_size: int = 256,
        name: str = "scanner",
    ) -> None:
        self.port = port
        self.name = name
        self.framer = ScannerFramer(
            suffix=suffix, max_line=max_line, no_read_messages=no_read_messages,
            intercharacter_timeout_s=intercharacter_timeout_s, banner_patterns=banner_patterns,
            aim_required=aim_required, min_length=min_length,
        )
        self.duplicates = DuplicateFilter(duplicate_window_s)
        self.trigger_window_s = trigger_window_s
        self._flush_timer: asyncio.TimerHandle | None = None
        self._untrigger_timer: asyncio.TimerHandle | None = None
        self.events: asyncio.Queue[ScanRead | NoRead] = asyncio.Queue(maxsize=max(1, queue_size))
        self.errors: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.last_event_at: float | None = None
        self._link = self._make_link(SerialSettings(port, baudrate, bytesize, parity, stopbits), name, reconnect_max_s)

    async def __aenter__(self) -> SerialScanner:
        await self._link.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for timer in (self._flush_timer, self._untrigger_timer):
            if timer is not None:
                timer.cancel()
        await self._link.__aexit__(*exc_info)

    async def trigger(self) -> None:
        """Start a read (Honeywell SYN T CR) and stop it after `trigger_window_s` (SYN U CR).

        The scanner stops by itself on a good read; the stop command covers a unit without a
        readable label so the aimer is not left on. Raises PortUnavailable while the port is down.
        """
        self.duplicates.clear()
        self._link.write(TRIGGER_ON)
        self.counts["trigger"] += 1
        if self._untrigger_timer is not None:
            self._untrigger_timer.cancel()
        loop = asyncio.get_running_loop()
        self._untrigger_timer = loop.call_later(self.trigger_window_s, self._untrigger)
        await self._link.drain()

    def _untrigger(self) -> None:
        self._untrigger_timer = None
        try:
            self._link.write(TRIGGER_OFF)
        except PortUnavailable:
            self.errors["unavailable"] += 1

    def _on_state(self, state: LinkState) -> None:
        # A partial line from before a reconnect would glue onto the next read and corrupt it.
        if state != "online":
            self.framer.reset()

    def _flush_idle(self) -> None:
        self._flush_timer = None
        self._deliver(self.framer.flush(asyncio.get_running_loop().time()))

    def _on_data(self, chunk: bytes, now: float) -> None:
        self._deliver(self.framer.feed(chunk, now))
        idle = self.framer.idle_framed
        if idle is not None and idle.pending:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            # Slightly past the timeout so the flush sees the pause as complete.
            self._flush_timer = asyncio.get_running_loop().call_later(idle.timeout_s * 1.05, self._flush_idle)

    def _deliver(self, events: list[ScanRead | NoRead | FramingError]) -> None:
        for event in events:
            if isinstance(event, GarbageRead):
                self.errors["garbage"] += 1
                _log.warning("%s: %s (starts %r)", self.name, event.message, event.raw[:32])
                continue
            if isinstance(event, FramingError):
                self.errors["framing"] += 1
                _log.warning("%s: %s (starts %r)", self.name, event.message, event.raw)
                continue
            if isinstance(event, ScanRead) and not self.duplicates.accept(event.aim, event.text, event.received_at):
                self.counts["duplicate"] += 1
                continue
            self.counts["read" if isinstance(event, ScanRead) else "no_read"] += 1
            self.last_event_at = event.received_at
            if self.events.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.events.get_nowait()
                self.errors["overflow"] += 1
            self.events.put_nowait(event)
