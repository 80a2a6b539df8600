"""NCI / Avery Weigh-Tronix SCP-01 ("NCI standard", 3825/7600/7800 family): decoding (pure) and driver.

Follows the NCI standard protocol (Avery Weigh-Tronix control document SCP-01), as reproduced in
the scales' manuals (NCI 7800 User's Manual "NCI Serial Communications Protocol"; Avery
Weigh-Tronix 7821 User Instructions section 6.3; ZM400 Service Manual section 7.3; Brecknell
3700LP "NCI Protocol"):

    W<CR>  ->  <LF>xxxx.xxuu<CR><LF>hh...<CR><ETX>     weight, units (lb kg oz g, lower case), status
               <LF>xxlb<SP>xx.xoz<CR><LF>hh...<CR><ETX> pound-ounce weight
               <LF>ccccccc<CR><LF>hh...<CR><ETX>       display text other than a weight
    H<CR>  ->  as W, at ten times the resolution
    U<CR>  ->  as W, after switching to the next unit of measure
    S<CR>  ->  <LF>hh...<CR><ETX>                       status only
    Z<CR>  ->  <LF>hh...<CR><ETX>                       zero, answered with the status
    other  ->  <LF>?<CR><ETX>  (some indicators: <CR>?<LF>)

Status bytes (bits 4 and 5 always 1, bit 7 parity, bit 6 "another byte follows" from byte 2 on):
byte 1: bit 0 motion, bit 1 at zero, bit 2 RAM error, bit 3 EEPROM error;
byte 2: bit 0 under capacity, bit 1 over capacity, bit 2 ROM error, bit 3 faulty calibration;
byte 3 (optional): bits 0-1 range, bit 2 net weight, bit 3 initial zero error;
byte 4 (optional): bit 0 weight changed, bit 1 zero seen, bit 2 metric (1) / English (0).
The SCP-02 variant puts an "S" before the status bytes; it is accepted too.
"""

from __future__ import annotations

import re

from drivers.scale_sics import UNIT_GRAMS
from drivers.scale_stream import (
    OVERLOAD,
    UNDERLOAD,
    Decoded,
    ScaleFault,
    ScaleNotice,
    ScaleSample,
    StreamScale,
)
from drivers.serial_port import SerialSettings

__all__ = ["NciDecoder", "NciScale", "NciStatus", "decode_message", "encode_nci_status", "encode_nci_weight"]

LF = 0x0A
CR = 0x0D
ETX = 0x03
MAX_MESSAGE = 64

_WEIGHT = re.compile(r"^([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]{1,3})$")
_LB_OZ = re.compile(r"^([+-]?)\s*(\d+)\s*lb\s+(\d+(?:\.\d*)?)\s*oz$", re.IGNORECASE)
_UNITS = {"lb": "lb", "kg": "kg", "oz": "oz", "g": "g"}


class NciStatus:
    """Decoded status bytes."""

    __slots__ = ("at_zero", "errors", "motion", "net", "over", "under")

    def __init__(self, status: bytes) -> None:
        b1 = status[0]
        b2 = status[1]
        b3 = status[2] if len(status) > 2 else 0x30
        self.motion = bool(b1 & 0x01)
        self.at_zero = bool(b1 & 0x02)
        self.under = bool(b2 & 0x01)
        self.over = bool(b2 & 0x02)
        self.net = bool(b3 & 0x04)
        errors = []
        for flag, name in ((b1 & 0x04, "RAM error"), (b1 & 0x08, "EEPROM error"), (b2 & 0x04, "ROM error"),
                           (b2 & 0x08, "faulty calibration"), (b3 & 0x08, "initial zero error")):
            if flag:
                errors.append(name)
        self.errors = tuple(errors)

    @property
    def fault(self) -> str | None:
        if self.over:
            return OVERLOAD
        if self.under:
            return UNDERLOAD
        return ", ".join(self.errors) if self.errors else None


def _status(field: bytes) -> NciStatus | str:
    if field[:1] == b"S" and len(field) >= 3:
        field = field[1:]  # SCP-02 style "S" prefix
    status = bytes(b & 0x7F for b in field)  # bit 7 is parity by definition of these bytes
    if not 2 <= len(status) <= 4:
        return f"expected 2 to 4 status bytes, got {len(status)}"
    if any(b & 0x30 != 0x30 for b in status):
        return "status byte without its fixed bits 4 and 5"
    return NciStatus(status)


def decode_message(message: bytes, now: float) -> Decoded:
    """One message from LF to ETX inclusive to a value. Never raises."""
    raw = bytes(message)
    if len(message) < 3 or message[0] != LF or message[-1] != ETX or message[-2] != CR:
        return ScaleFault("not an SCP-01 message (<LF> ... <CR><ETX>)", now, raw)
    parts = message[1:-2].split(b"\r\n")
    if parts == [b"?"]:
        return ScaleNotice("unrecognised_command", now, "scale did not recognise the command", raw)
    if len(parts) == 1:
        status = _status(parts[0])
        if isinstance(status, str):
            return ScaleFault(status, now, raw)
        return ScaleNotice("status", now, status.fault, raw)
    if len(parts) != 2:
        return ScaleFault(f"expected weight and status lines, got {len(parts)} lines", now, raw)
    status = _status(parts[1])
    if isinstance(status, str):
        return ScaleFault(status, now, raw)
    try:
        text = parts[0].decode("ascii").strip()
    except UnicodeDecodeError:
        return ScaleFault("weight field is not ASCII", now, raw)
    fault = status.fault
    match = _WEIGHT.match(text)
    lb_oz = _LB_OZ.match(text)
    if fault is not None:
        # Over/under capacity shows dashes or bars instead of digits: the status is what counts.
        return ScaleSample(now, False, None, "", None, status.net, fault, raw)
    if lb_oz is not None:
        sign = -1.0 if lb_oz.group(1) == "-" else 1.0
        pounds = int(lb_oz.group(2)) + float(lb_oz.group(3)) / 16.0
        return ScaleSample(now, not status.motion, sign * pounds, "lb", sign * pounds * UNIT_GRAMS["lb"],
                           status.net, None, raw)
    if match is None:
        return ScaleFault(f"display shows {text[:20]!r}, not a weight", now, raw)
    unit = _UNITS.get(match.group(3).lower())
    if unit is None:
        return ScaleFault(f"unknown unit {match.group(3)!r}", now, raw)
    value = float(match.group(2))
    if match.group(1) == "-":
        value = -value
    return ScaleSample(now, not status.motion, value, unit, value * UNIT_GRAMS[unit], status.net, None, raw)


class NciDecoder:
    """Splits the reply stream into LF ... ETX messages, whatever the chunking. No I/O."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_message = False
        self._outside = bytearray(2)

    def reset(self) -> None:
        self._buf.clear()
        self._in_message = False
        self._outside = bytearray(2)

    def feed(self, data: bytes, now: float) -> list[Decoded]:
        out: list[Decoded] = []
        junk = 0
        for byte in data:
            if not self._in_message:
                if byte == LF:
                    if self._outside == b"\r?":
                        # The "<CR>?<LF>" form of "unrecognised command". Its LF is also taken as a
                        # possible message start: the resync below drops it if a real LF follows.
                        junk = max(0, junk - 2)
                        out.append(ScaleNotice("unrecognised_command", now, "scale did not recognise the command",
                                               b"\r?\n"))
                    self._in_message = True
                    self._buf = bytearray(b"\n")
                else:
                    junk += 1
                    self._outside = self._outside[1:] + bytes([byte])
                continue
            if byte == LF and CR not in self._buf:
                # A first line never holds an LF before its CR: what came before was not a message.
                junk += len(self._buf) - 1
                self._buf = bytearray(b"\n")
                continue
            self._buf.append(byte)
            if byte == ETX:
                out.append(decode_message(bytes(self._buf), now))
                self._in_message = False
                self._outside = bytearray(2)
            elif len(self._buf) > MAX_MESSAGE:
                out.append(ScaleFault(f"message longer than {MAX_MESSAGE} bytes", now, bytes(self._buf[:32])))
                self._in_message = False
        if junk > 0:
            out.append(ScaleFault(f"{junk} byte(s) outside any message", now, b""))
        return out


def encode_nci_status(
    *, motion: bool = False, at_zero: bool = False, under: bool = False, over: bool = False, net: bool | None = None
) -> bytes:
    b1 = 0x30 | (0x01 if motion else 0) | (0x02 if at_zero else 0)
    b2 = 0x30 | (0x01 if under else 0) | (0x02 if over else 0)
    if net is None:
        return bytes([b1, b2])
    return bytes([b1, b2 | 0x40, 0x30 | (0x04 if net else 0)])


def encode_nci_weight(value: float, unit: str = "lb", decimals: int = 2, **status: bool | None) -> bytes:
    """The reply to W (and H, U), as the scale sends it: weight right-aligned in the display's width,
    then the unit in lower case as the manuals print it ("lb", "kg", "oz", "g")."""
    over, under = status.get("over", False), status.get("under", False)
    text = ("^" if over else "_") * 7 if over or under else f"{value:7.{decimals}f}"
    body = text.encode("ascii") + unit.lower().encode("ascii")
    return b"\n" + body + b"\r\n" + encode_nci_status(**status) + b"\r\x03"


class NciScale(StreamScale):
    """An SCP-01 scale, polled with "W" every `poll_interval_s`."""

    def __init__(self, settings: SerialSettings, **kwargs: object) -> None:
        kwargs.setdefault("poll_command", b"W\r")
        super().__init__(settings, NciDecoder, **kwargs)  # type: ignore[arg-type]

    async def zero(self) -> None:
        """Zero the scale ("Z"); the answer is a status message, counted in `counts`."""
        self.write(b"Z\r")

    async def change_units(self) -> None:
        """Step the scale to its next unit of measure ("U"). The answer is a weight in the new unit;
        weights are normalised to grams whatever the unit, so grading is unaffected."""
        self.write(b"U\r")
