"""What a scanned barcode says about a unit: GTIN, serial, IMEI, RMA, lot, expiry. Pure.

Input is whatever a scanner or the camera decoder produced, so it is treated as hostile: nothing
here raises on content. Every doubt (bad check digit, unknown GS1 AI, malformed date) becomes a
line in `problems` and leaves the affected field None, because a wrong identity would send a unit
to a wrong lane while a missing one only sends it to manual inspection.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass

__all__ = ["GS", "Identity", "gtin_check_digit", "luhn_valid", "parse_identity"]

GS = "\x1d"  # FNC1 as transmitted by scanners
MAX_TEXT = 1024

_GS1_SYMBOLOGIES = frozenset({"GS1-128", "GS1 DataMatrix", "GS1 QR", "GS1 DataBar"})
_GS1_AIM_PREFIXES = ("]C1", "]d2", "]Q3", "]e0", "]d5", "]Q4")
_DIGITS = frozenset("0123456789")

# GS1 application identifiers: AI -> (fixed length or None, maximum length, numeric only).
# Only AIs a returns line meets; anything else is reported rather than guessed at, since the
# length of an unknown AI (and therefore where the next one starts) cannot be known.
_AIS: dict[str, tuple[int | None, int, bool]] = {
    "00": (18, 18, True),  # SSCC
    "01": (14, 14, True),  # GTIN
    "02": (14, 14, True),  # GTIN of contained items
    "10": (None, 20, False),  # batch / lot
    "11": (6, 6, True),  # production date
    "12": (6, 6, True),
    "13": (6, 6, True),  # packaging date
    "15": (6, 6, True),  # best before
    "16": (6, 6, True),
    "17": (6, 6, True),  # expiry
    "20": (2, 2, True),  # variant
    "21": (None, 20, False),  # serial number
    "22": (None, 20, False),
    "240": (None, 30, False),  # additional product id
    "241": (None, 30, False),  # customer part number
    "250": (None, 30, False),  # secondary serial number
    "30": (None, 8, True),  # count
    "37": (None, 8, True),
    "400": (None, 30, False),  # customer purchase order
    "8004": (None, 30, False),  # GIAI
    "90": (None, 30, False),  # internal, mutually agreed
    **{str(n): (None, 90, False) for n in range(91, 100)},  # company internal
}
_DATE_AIS = frozenset({"11", "12", "13", "15", "16", "17"})
# GS1 character set 82 (ISO 646 subset); anything else in a GS1 field is an encoding fault.
_CSET82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
_IMEI_LABEL = re.compile(r"^\s*IMEI\s*[:#]?\s*", re.IGNORECASE)
_HRI_PART = re.compile(r"\((\d{2,4})\)([^()]*)")


@dataclass(frozen=True, slots=True)
class Identity:
    barcode: str
    symbology: str
    gtin: str | None
    serial: str | None
    imei: str | None
    rma: str | None
    lot: str | None
    expiry: str | None
    problems: tuple[str, ...]
    sscc: str | None = None
    # Every GS1 element string found, in order, for the audit trail.
    elements: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def known(self) -> bool:
        """Whether anything usable for a manifest look-up was recognised."""
        return any(v is not None for v in (self.gtin, self.serial, self.imei, self.rma, self.sscc))


def gtin_check_digit(body: str) -> int:
    """GS1 mod-10 check digit for the digits before the check digit (GTIN-8/12/13/14, SSCC).

    Weights 3,1,3,... from the rightmost body digit. Raises ValueError for non-digit input,
    since a caller passing that has a bug; parsing code checks digits before calling.
    """
    if not body or not all(c in _DIGITS for c in body):
        raise ValueError(f"GS1 check digit needs ASCII digits, got {body!r}")
    total = 0
    for i, ch in enumerate(reversed(body)):
        total += int(ch) * (3 if i % 2 == 0 else 1)
    return (10 - total % 10) % 10


def _gs1_valid(number: str) -> bool:
    return len(number) >= 2 and all(c in _DIGITS for c in number) and (
        gtin_check_digit(number[:-1]) == int(number[-1])
    )


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check over the whole string, check digit last; False for non-digits."""
    if len(digits) < 2 or not all(c in _DIGITS for c in digits):
        return False
    return _luhn_sum(digits) % 10 == 0


def _luhn_sum(digits: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


def _luhn_check_digit(body: str) -> int:
    return (10 - _luhn_sum(body + "0") % 10) % 10


@functools.lru_cache(maxsize=16)
def _compile(pattern: str) -> re.Pattern[str] | str:
    try:
        return re.compile(pattern)
    except (re.error, TypeError, ValueError, RecursionError) as exc:
        return f"RMA pattern {pattern!r} is not a valid regular expression: {exc}"


def _printable(text: str, limit: int = 40) -> str:
    shown = text[:limit].replace(GS, "<GS>")
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else "?" for c in shown)
    return shown + ("..." if len(text) > limit else "")


@dataclass(slots=True)
class _Fields:
    gtin: str | None = None
    serial: str | None = None
    imei: str | None = None
    rma: str | None = None
    lot: str | None = None
    expiry: str | None = None
    sscc: str | None = None


def _date(ai: str, value: str, problems: list[str]) -> str | None:
    yy, mm, dd = int(value[0:2]), int(value[2:4]), int(value[4:6])
    # GS1 allows DD = 00 meaning "end of month"; the century window is fixed at 2000-2099, which
    # is right for anything a returns line sees this century.
    year = 2000 + yy
    if not 1 <= mm <= 12:
        problems.append(f"GS1 AI ({ai}) date {value} has month {mm:02d}")
        return None
    last = calendar.monthrange(year, mm)[1]
    if dd == 0:
        dd = last
    elif dd > last:
        problems.append(f"GS1 AI ({ai}) date {value} has day {dd:02d}")
        return None
    return f"{year:04d}-{mm:02d}-{dd:02d}"


def _parse_gs1(data: str, problems: list[str]) -> tuple[_Fields, list[tuple[str, str]]]:
    """Element string (FNC1 = GS, leading FNC1/AIM already removed) to fields."""
    fields = _Fields()
    elements: list[tuple[str, str]] = []
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == GS:
            # Separators after fixed-length AIs are redundant but common; skip them.
            pos += 1
            continue
        ai = next((data[pos : pos + k] for k in (2, 3, 4) if data[pos : pos + k] in _AIS), None)
        if ai is None:
            problems.append(f"unknown GS1 application identifier at {_printable(data[pos:pos + 4])!r}")
            break
        fixed, max_len, numeric = _AIS[ai]
        start = pos + len(ai)
        if fixed is not None:
            value = data[start : start + fixed]
            pos = start + fixed
            if len(value) < fixed or GS in value:
                problems.append(f"GS1 AI ({ai}) needs {fixed} characters, got {_printable(value)!r}")
                break
        else:
            end = data.find(GS, start)
            end = n if end < 0 else end
            value = data[start:end]
            pos = end
            if not value:
                problems.append(f"GS1 AI ({ai}) is empty")
                continue
            if len(value) > max_len:
                problems.append(f"GS1 AI ({ai}) is {len(value)} characters long, at most {max_len} allowed")
                continue
        if numeric and not all(c in _DIGITS for c in value):
            problems.append(f"GS1 AI ({ai}) must be numeric, got {_printable(value)!r}")
            continue
        if not all(c in _CSET82 for c in value):
            problems.append(f"GS1 AI ({ai}) has characters outside GS1 set 82: {_printable(value)!r}")
            continue
        elements.append((ai, value))
        _apply_ai(ai, value, fields, problems)
    return fields, elements


def _apply_ai(ai: str, value: str, fields: _Fields, problems: list[str]) -> None:
    if ai in ("00", "01"):
        if not _gs1_valid(value):
            name = "SSCC" if ai == "00" else "GTIN"
            problems.append(f"{name} {value} has an invalid check digit")
            return
        if ai == "00":
            fields.sscc = value
        else:
            fields.gtin = value
    elif ai == "10":
        fields.lot = value
    elif ai == "21":
        fields.serial = value
    elif ai in _DATE_AIS:
        date = _date(ai, value, problems)
        if ai == "17":
            fields.expiry = date


def _parse_hri(text: str) -> str | None:
    """Human-readable "(01)...(21)..." form, as typed in or printed under labels, to an element string."""
    parts = _HRI_PART.findall(text)
    if not parts or "".join(f"({ai}){v}" for ai, v in parts) != text:
        return None
    return GS.join(ai + value for ai, value in parts)


ENVELOPE_HEADER = "[)>\x1e"
RS = "\x1e"
EOT = "\x04"
# ANSI MH10.8.2 data identifiers we map (format 06). Longest first: "25S" must win over "S".
_MH10_IDENTIFIERS = (("25S", "serial"), ("8P", "gtin"), ("1T", "lot"), ("S", "serial"), ("T", "lot"))


def _parse_envelope(body: str, fields: _Fields, problems: list[str]) -> list[tuple[str, str]]:
    """ISO/IEC 15434 message envelope: `[)>` RS, then format blocks `NN` GS ... RS, then EOT.

    Format 05 carries GS1 element strings; format 06 carries ANSI MH10.8.2 data identifiers.
    """
    content = body[len(ENVELOPE_HEADER):]
    if not content.endswith(EOT):
        problems.append("ISO/IEC 15434 envelope without its EOT trailer")
    content = content.rstrip(EOT)
    elements: list[tuple[str, str]] = []
    for block in filter(None, content.split(RS)):
        fmt, _, data = block.partition(GS)
        if fmt == "05":
            parsed, found = _parse_gs1(data, problems)
            for name in ("gtin", "serial", "lot", "expiry", "sscc"):
                if getattr(parsed, name) is not None:
                    setattr(fields, name, getattr(parsed, name))
            elements.extend(found)
        elif fmt == "06":
            for element in filter(None, data.split(GS)):
                for identifier, name in _MH10_IDENTIFIERS:
                    if element.startswith(identifier) and len(element) > len(identifier):
                        value = element[len(identifier):]
                        if name == "gtin":
                            if value.isdigit() and len(value) in (8, 12, 13, 14) and _gs1_valid(value):
                                fields.gtin = value.rjust(14, "0")
                            else:
                                problems.append(f"GTIN {_printable(value)!r} in data identifier 8P is not valid")
                        else:
                            setattr(fields, name, value)
                        elements.append((identifier, value))
                        break
        else:
            problems.append(f"ISO/IEC 15434 format {_printable(fmt)!r} is not supported")
    return elements


def _plain(text: str, fields: _Fields, problems: list[str]) -> None:
    """A non-GS1 barcode: bare GTIN (EAN/UPC), IMEI / IMEISV, or nothing recognised."""
    candidate = _IMEI_LABEL.sub("", text, count=1)
    imei_labelled = candidate != text
    if imei_labelled:
        # IMEI labels often print the number in groups: 35-209900-176148-1.
        candidate = candidate.replace(" ", "").replace("-", "")
    if not candidate or not all(c in _DIGITS for c in candidate):
        if imei_labelled:
            problems.append(f"IMEI label without a valid number: {_printable(text)!r}")
        return
    length = len(candidate)
    if length == 15:
        if luhn_valid(candidate):
            fields.imei = candidate
        else:
            problems.append(f"IMEI {candidate} has an invalid check digit")
    elif length == 16:
        # IMEISV = TAC + serial + 2-digit software version, no check digit; the IMEI is the first
        # 14 digits plus their Luhn digit.
        body = candidate[:14]
        fields.imei = body + str(_luhn_check_digit(body))
    elif length in (8, 12, 13, 14) and not imei_labelled:
        if _gs1_valid(candidate):
            fields.gtin = candidate.rjust(14, "0")
        else:
            problems.append(f"GTIN {candidate} has an invalid check digit")
    elif imei_labelled:
        problems.append(f"IMEI must have 15 digits (16 for IMEISV), got {length}")


def parse_identity(text: str, symbology: str, rma_pattern: str = r"^RMA-?\d{6,10}$") -> Identity:
    """Interpret one barcode's text. Never raises on content; doubts go to `problems`."""
    problems: list[str] = []
    text = text if isinstance(text, str) else str(text)
    symbology = symbology if isinstance(symbology, str) else str(symbology)
    barcode = text
    if len(text) > MAX_TEXT:
        problems.append(f"barcode is {len(text)} characters long, only the first {MAX_TEXT} were read")
        text = text[:MAX_TEXT]

    fields = _Fields()
    elements: list[tuple[str, str]] = []
    body = text.strip(" \t\r\n")

    # A caller may hand over the text with its AIM prefix still on; GS1 is then certain.
    aim_gs1 = body.startswith(_GS1_AIM_PREFIXES)
    if aim_gs1:
        body = body[3:]
    hri = _parse_hri(body) if body.startswith("(") else None

    rma = _compile(rma_pattern)
    if isinstance(rma, str):
        problems.append(rma)
    elif rma.fullmatch(body):
        fields.rma = body

    if fields.rma is not None:
        pass
    elif body.startswith(ENVELOPE_HEADER):
        elements = _parse_envelope(body, fields, problems)
    elif hri is not None:
        fields, elements = _parse_gs1(hri, problems)
    elif aim_gs1 or symbology in _GS1_SYMBOLOGIES or body.startswith(GS):
        fields, elements = _parse_gs1(body.lstrip(GS), problems)
        if not elements and not problems:
            problems.append("GS1 barcode without element strings")
    else:
        _plain(body, fields, problems)

    return Identity(
        barcode=barcode,
        symbology=symbology,
        gtin=fields.gtin,
        serial=fields.serial,
        imei=fields.imei,
        rma=fields.rma,
        lot=fields.lot,
        expiry=fields.expiry,
        problems=tuple(problems),
        sscc=fields.sscc,
        elements=tuple(elements),
    )
