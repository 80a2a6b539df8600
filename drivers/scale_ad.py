"""A&D and CAS style "header,data" weight lines: decoding (pure) and the passive driver.

A&D standard format (A&D balance manuals, e.g. FX-i/FZ-i "Data Format: A&D standard format"): 15
characters and CR LF: a two-letter header, a comma, 9 characters of signed data with its decimal
point, 3 characters of unit, e.g. ``ST,+00123.45  g``. Headers: ST stable, US unstable, QT
counting (pieces), OL out of range (data ``+9999999E+19`` over, ``-9999999E+19`` under).
CAS indicators (CI-series "Data Format") add a second header for gross/net: ``ST,GS,+  12.34kg``,
``US,NT,+0012.34 kg``. Both stream continuously or answer "Q"/"R" on request; read passively here.
"""

from __future__ import annotations

import re

from drivers.scale_sics import UNIT_GRAMS
from drivers.scale_stream import OVERLOAD, UNDERLOAD, Decoded, LineDecoder, ScaleFault, ScaleSample, StreamScale
from drivers.serial_port import SerialSettings

__all__ = ["AdDecoder", "AdScale", "decode_line", "encode_ad"]

MAX_LINE = 64
_DATA = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]{0,3})\s*$")
_HEADERS = {"ST": True, "US": False, "OL": False, "WT": True, "QT": True}
_GROSS_NET = {"GS": False, "NT": True, "GR": False, "NE": True}
_UNIT_LOOKUP = {u.lower(): u for u in UNIT_GRAMS}


def decode_line(line: bytes, now: float) -> ScaleSample | ScaleFault | None:
    """One line (terminator removed) to a value; None for a blank line. Never raises."""
    raw = bytes(line)
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return ScaleFault("line is not ASCII", now, raw)
    if not text:
        return None
    fields = [f.strip() for f in text.split(",")]
    header = fields[0].upper()
    if header not in _HEADERS:
        return ScaleFault(f"unknown header {fields[0][:8]!r}", now, raw)
    net = False
    rest = fields[1:]
    if len(rest) == 2 and rest[0].upper() in _GROSS_NET:
        net = _GROSS_NET[rest[0].upper()]
        rest = rest[1:]
    if len(rest) != 1:
        return ScaleFault(f"expected '<header>,[GS|NT,]<data>', got {len(fields)} fields", now, raw)
    data = rest[0]
    if header == "OL":
        sign = data.lstrip()[:1]
        return ScaleSample(now, False, None, "", None, net, UNDERLOAD if sign == "-" else OVERLOAD, raw)
    match = _DATA.match(data)
    if match is None:
        return ScaleFault(f"data {data[:20]!r} is not a number and a unit", now, raw)
    if header == "QT":
        return ScaleFault("scale is in counting mode (QT): no weight", now, raw)
    unit = _UNIT_LOOKUP.get(match.group(3).lower())
    if unit is None:
        return ScaleFault(f"unit {match.group(3)!r} is not a weight unit", now, raw)
    value = float(match.group(2))
    if match.group(1) == "-":
        value = -value
    return ScaleSample(now, _HEADERS[header], value, unit, value * UNIT_GRAMS[unit], net, None, raw)


class AdDecoder(LineDecoder):
    """A&D / CAS lines to samples, whatever the chunking. No I/O."""

    max_line = MAX_LINE

    def decode(self, line: bytes, now: float) -> list[Decoded]:
        item = decode_line(line, now)
        return [] if item is None else [item]


def encode_ad(value: float, *, unit: str = "g", decimals: int = 2, stable: bool = True, over: bool = False,
              under: bool = False, gross_net: str | None = None) -> bytes:
    """An A&D standard-format line (or a CAS line with `gross_net` "GS"/"NT"), CR LF included."""
    if over or under:
        header, data = "OL", ("-" if under else "+") + "9999999E+19"
        tail = ""
    else:
        header = "ST" if stable else "US"
        sign = "-" if value < 0 else "+"
        data = sign + f"{abs(value):0{8}.{decimals}f}"
        tail = f"{unit:>3}"
    middle = f"{gross_net}," if gross_net else ""
    return f"{header},{middle}{data}{tail}\r\n".encode("ascii")


class AdScale(StreamScale):
    """An A&D/CAS scale in stream mode, read passively."""

    def __init__(self, settings: SerialSettings, **kwargs: object) -> None:
        super().__init__(settings, AdDecoder, **kwargs)  # type: ignore[arg-type]
