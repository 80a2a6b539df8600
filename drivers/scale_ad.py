"""A&D and CAS style "header,data" weight lines: decoding (pure) and the driver.

A&D standard format, as the A&D balance manuals print it (EK-i/EW-i and EJ instruction manuals,
"Data format"; FX-i/FZ-i "A&D standard format"; GX/GF "Data Format Examples"): a two-letter header,
a comma, 9 characters of data with sign and decimal point, 3 characters of unit, CR LF, e.g.
``ST,+00123.45  g``. Headers: ST stable weighing data (percent data too), QT stable counting data,
US unstable data (weighing, counting or percent), OL out of range (``OL,+999999.9  g``; the
FX-i/GX families send ``OL,+9999999E+19``). Units: ``  g``, `` PC`` (pieces), ``  %``, `` oz``,
`` lb``, ``ozt``, `` ct``, ``mom``, ``dwt``, `` GN``, `` tl`` (tael), ``  t`` (tola, not tonnes),
`` kg``. Piece counts and percentages are not weights and are never converted to grams.
Commands (same manuals, "Command list"): ``Q`` (weight now), ``S`` (weight once stable), ``SI``,
``SIR``, each ended by CR LF; a balance answers a bad command with ``EC,Exx``.

CAS indicators (CI-series "Data Format") add a second header for gross/net: ``ST,GS,+  12.34kg``,
``US,NT,+0012.34 kg``. Both stream continuously, or answer ``Q`` when polled (`AdScale(polled=True)`).
"""

from __future__ import annotations

import re

from drivers.scale_sics import UNIT_GRAMS
from drivers.scale_stream import (
    OVERLOAD,
    UNDERLOAD,
    Decoded,
    LineDecoder,
    ScaleFault,
    ScaleNotice,
    ScaleSample,
    StreamScale,
)
from drivers.serial_port import SerialSettings

__all__ = ["POLL_COMMAND", "AdDecoder", "AdScale", "decode_line", "encode_ad"]

MAX_LINE = 64
POLL_COMMAND = b"Q\r\n"
_DATA = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z%]{0,3})\s*$")
_HEADERS = {"ST": True, "US": False, "OL": False, "WT": True, "QT": True}
_GROSS_NET = {"GS": False, "NT": True, "GR": False, "NE": True}
# A&D unit codes beyond the MT-SICS table; "t" is the tola here, never the metric tonne.
_AD_UNIT_GRAMS = {**UNIT_GRAMS, "mom": 3.75, "t": 11.6638038}
_UNIT_LOOKUP = {u.lower(): u for u in _AD_UNIT_GRAMS if u != "t"}
# Displays that are not a mass, and why: these must never reach grading as grams.
_NOT_A_WEIGHT = {
    "pc": "counting mode (pieces)",
    "pcs": "counting mode (pieces)",
    "%": "percent mode",
    "tl": "tael, whose gram value differs by region",
    "n": "force in newtons",
    "ds": "density",
}
# A&D error codes (command list, "Error code"): the balance's own words, shortened.
_ERRORS = {
    "E00": "communications error",
    "E01": "undefined command",
    "E02": "not ready",
    "E03": "timeout",
    "E04": "excess characters",
    "E06": "format error",
    "E07": "parameter setting error",
}


def _not_a_weight(now: float, header: str, why: str, net: bool, raw: bytes) -> ScaleSample:
    return ScaleSample(now, False, None, "", None, net, f"not a weight: scale is in {why} ({header})", raw)


def decode_line(line: bytes, now: float) -> ScaleSample | ScaleFault | ScaleNotice | None:
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
    if header == "EC" and len(fields) == 2:
        code = fields[1].upper()
        return ScaleNotice("error", now, f"balance reports {code}: {_ERRORS.get(code, 'error')}", raw)
    if header == "AK" or text == "\x06":
        return ScaleNotice("acknowledged", now, None, raw)
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
    unit_text = match.group(3)
    if header == "QT":
        return _not_a_weight(now, header, _NOT_A_WEIGHT["pc"], net, raw)
    why = _NOT_A_WEIGHT.get(unit_text.lower())
    if why is not None:
        return _not_a_weight(now, header, why, net, raw)
    unit = "t" if unit_text == "t" else _UNIT_LOOKUP.get(unit_text.lower())
    if unit is None:
        return ScaleFault(f"unit {unit_text!r} is not a weight unit", now, raw)
    value = float(match.group(2))
    if match.group(1) == "-":
        value = -value
    return ScaleSample(now, _HEADERS[header], value, unit, value * _AD_UNIT_GRAMS[unit], net, None, raw)


class AdDecoder(LineDecoder):
    """A&D / CAS lines to samples, whatever the chunking. No I/O."""

    max_line = MAX_LINE

    def decode(self, line: bytes, now: float) -> list[Decoded]:
        item = decode_line(line, now)
        return [] if item is None else [item]


def encode_ad(value: float, *, unit: str = "g", decimals: int = 2, stable: bool = True, over: bool = False,
              under: bool = False, gross_net: str | None = None, header: str | None = None) -> bytes:
    """An A&D standard-format line (or a CAS line with `gross_net` "GS"/"NT"), CR LF included.

    Out of range is sent as the EK-i manual shows it: nines in the data field, the unit kept.
    `header` overrides ST/US (e.g. "QT" for a piece count with unit "PC").
    """
    if over or under:
        header, data = "OL", ("-" if under else "+") + ("999999.9" if decimals else "99999999")
    else:
        header = header or ("ST" if stable else "US")
        sign = "-" if value < 0 else "+"
        data = sign + f"{abs(value):0{8}.{decimals}f}"
    middle = f"{gross_net}," if gross_net else ""
    return f"{header},{middle}{data}{unit:>3}\r\n".encode("ascii")


class AdScale(StreamScale):
    """An A&D/CAS scale: read passively in stream mode, or asked with "Q" every `poll_interval_s`
    when `polled` (a balance set to command mode sends nothing unasked)."""

    def __init__(self, settings: SerialSettings, *, polled: bool = False, **kwargs: object) -> None:
        if polled:
            kwargs.setdefault("poll_command", POLL_COMMAND)
        super().__init__(settings, AdDecoder, **kwargs)  # type: ignore[arg-type]
