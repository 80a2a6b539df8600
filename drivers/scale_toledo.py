"""Mettler Toledo "standard continuous output": frame decoding (pure) and the passive driver.

Frame layout, as documented in the terminals' technical manuals (METTLER TOLEDO Wildcat technical
manual 12/00, Appendix 2 "Continuous Mode Output", Tables 6-8 to 6-11; the IND560/IND570/IND780
"Standard Continuous Output" tables say the same, and 8142/8530, Panther and compatible indicators
send it too):

    STX  SWA  SWB  SWC  WWWWWW  TTTTTT  CR  [CKS]

- SWA: bits 0-2 decimal point or dummy zeros (0: XXXX00, 1: XXXXX0, 2: XXXXXX, 3: XXXXX.X,
  4: XXXX.XX, 5: XXX.XXX, 6: XX.XXXX, 7: X.XXXXX), bits 3-4 increment size (bit 3 alone: x1,
  bit 4 alone: x2, both: x5), bit 5 always 1, bit 6 always 0.
- SWB: bit 0 net (1) / gross (0), bit 1 negative, bit 2 out of range, bit 3 motion, bit 4 kg (1) /
  lb (0), bit 5 always 1, bit 6 not zeroed since power-up.
- SWC: bits 0-2 unit (0: as SWB bit 4, 1: g, 2: metric t, 3: oz, 4: ozt, 5: dwt, 6: short ton,
  7: custom), bit 3 print request, bit 4 expanded display (x10), bit 5 always 1, bit 6 always 0.
- W: six digits of displayed weight, T: six digits of tare, no sign or decimal point; leading
  zeros may be blanked to spaces. Some indicators offer a short form without the tare field
  (Cardinal 225 "Format 1"), accepted as well.
- CKS (optional): two's complement of the seven low-order bits of the sum of every character from
  STX to CR inclusive.

Bit 7 of every byte is the parity bit on a 7E1 link and 0 on 8N1. A port opened 8N1 on a 7E1
terminal therefore still yields the frame once bit 7 is masked off; the decoder checks that bit 7
is then even parity throughout, so a wrong-baud stream is not mistaken for one.
"""

from __future__ import annotations

from drivers.scale_sics import UNIT_GRAMS
from drivers.scale_stream import (
    OVERLOAD,
    UNDERLOAD,
    Decoded,
    ScaleFault,
    ScaleSample,
    StreamScale,
)
from drivers.serial_port import SerialSettings

__all__ = ["ToledoDecoder", "ToledoScale", "decode_frame", "encode_toledo", "strip_parity", "toledo_checksum"]

STX = 0x02
CR = 0x0D
FRAME_LEN = 17  # STX, 3 status bytes, 6 weight, 6 tare, CR
SHORT_FRAME_LEN = 11  # STX, 3 status bytes, 6 weight, CR

_DECIMALS = {0: -2, 1: -1, 2: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}
# SWC unit code -> (unit name, grams per unit); code 0 defers to SWB bit 4.
_SWC_UNITS: dict[int, tuple[str, float]] = {
    1: ("g", 1.0),
    2: ("t", 1_000_000.0),
    3: ("oz", UNIT_GRAMS["oz"]),
    4: ("ozt", UNIT_GRAMS["ozt"]),
    5: ("dwt", UNIT_GRAMS["dwt"]),
    6: ("ton", 907_184.74),
}
_UNIT_CODES = {"lb": 0, "kg": 0, **{name: code for code, (name, _g) in _SWC_UNITS.items()}}
# SWA bits 3-4 -> increment size; 0 is not in the table (some clones send it) and means "not said".
_COUNT_BY = {0x08: 1, 0x10: 2, 0x18: 5}
# A stray STX followed by this much data without a valid frame is noise; the bound keeps memory flat.
_MAX_BUFFER = 4096
CUSTOM_UNIT = "not a weight: the terminal shows a custom unit, which cannot be converted to grams"


def toledo_checksum(frame: bytes) -> int:
    """The checksum byte for `frame` = STX ... CR (parity bits, if any, are not part of the sum)."""
    return (-sum(b & 0x7F for b in frame)) & 0x7F


def _field(data: bytes) -> int | None:
    text = data.replace(b" ", b"0")
    if not text.isdigit():
        return None
    return int(text)


def _even_parity(byte: int) -> bool:
    return bin(byte).count("1") % 2 == 0


def strip_parity(frame: bytes) -> bytes | None:
    """`frame` with bit 7 cleared, or None when bit 7 is set somewhere but is not even parity.

    A 7E1 terminal read by a port opened 8N1 (or 8E1 with the parity bit kept) shows even parity in
    bit 7; bytes with bit 7 set that fail that test are line noise, not a frame.
    """
    if not any(b & 0x80 for b in frame):
        return frame
    if not all(_even_parity(b) for b in frame):
        return None
    return bytes(b & 0x7F for b in frame)


def decode_frame(frame: bytes, now: float) -> ScaleSample | ScaleFault:
    """One complete frame (STX ... CR, checksum already checked and removed) to a value. Never raises."""
    raw = bytes(frame)
    if len(frame) not in (FRAME_LEN, SHORT_FRAME_LEN) or frame[0] & 0x7F != STX or frame[-1] & 0x7F != CR:
        return ScaleFault("not a Toledo continuous frame", now, raw)
    stripped = strip_parity(frame)
    if stripped is None:
        return ScaleFault("bit 7 set but not even parity: wrong baud rate or noise", now, raw)
    frame = stripped
    swa, swb, swc = frame[1], frame[2], frame[3]
    if swa & 0x60 != 0x20 or swb & 0x20 != 0x20 or swc & 0x60 != 0x20:
        return ScaleFault(
            f"status bytes {swa:#04x} {swb:#04x} {swc:#04x} have the fixed bits wrong", now, raw
        )
    weight = _field(frame[4:10])
    tare = _field(frame[10:16]) if len(frame) == FRAME_LEN else 0
    if weight is None or tare is None:
        return ScaleFault("weight or tare field is not six digits", now, raw)
    decimals = _DECIMALS[swa & 0x07]
    count_by = _COUNT_BY.get(swa & 0x18)
    division = None if count_by is None else round(count_by * 10.0 ** (-decimals), max(decimals, 0))
    net = bool(swb & 0x01)
    negative = bool(swb & 0x02)
    out_of_range = bool(swb & 0x04)
    motion = bool(swb & 0x08)
    unit_code = swc & 0x07
    if unit_code == 0:
        unit, per_unit = ("kg", 1000.0) if swb & 0x10 else ("lb", UNIT_GRAMS["lb"])
    elif unit_code in _SWC_UNITS:
        unit, per_unit = _SWC_UNITS[unit_code]
    else:
        # A well-formed frame, just not a weight the controller can use: a fault on the sample
        # (read_weight raises it), not framing garbage.
        return ScaleSample(now, False, None, "custom", None, net, CUSTOM_UNIT, raw)
    if swb & 0x40:
        return ScaleSample(now, False, None, unit, None, net, "not zeroed since power-up", raw, division)
    if out_of_range:
        return ScaleSample(now, False, None, unit, None, net, UNDERLOAD if negative else OVERLOAD, raw, division)
    value = round(weight * 10.0 ** (-decimals), max(decimals, 0))
    if negative:
        value = -value
    # The expanded (x10) display is a service mode: its extra digit is not a legal-for-trade weight.
    stable = not motion and not (swc & 0x10)
    return ScaleSample(now, stable, value, unit, value * per_unit, net, None, raw, division)


class ToledoDecoder:
    """Finds frames in a continuous-output stream, whatever the chunking. No I/O.

    With `checksum=True` every frame must be followed by a correct checksum byte. A candidate frame
    that fails any check (shape, checksum, parity, fixed bits, digits) is reported and the search
    resumes one byte after its STX, so a frame hidden behind a stray STX is still found.
    """

    def __init__(self, checksum: bool = False) -> None:
        self.checksum = checksum
        self._buf = bytearray()

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes, now: float) -> list[Decoded]:
        out: list[Decoded] = []
        self._buf += data
        extra = 1 if self.checksum else 0
        buf = self._buf
        while True:
            start = _find_stx(buf)
            if start < 0:
                if buf:
                    out.append(ScaleFault(f"{len(buf)} byte(s) outside any frame", now, bytes(buf[:32])))
                buf.clear()
                break
            if start > 0:
                out.append(ScaleFault(f"{start} byte(s) outside any frame", now, bytes(buf[:min(start, 32)])))
                del buf[:start]
            # The short form ends with CR where the full form has its first tare digit.
            if len(buf) < SHORT_FRAME_LEN + extra:
                break
            length = SHORT_FRAME_LEN if buf[SHORT_FRAME_LEN - 1] & 0x7F == CR else FRAME_LEN
            if len(buf) < length + extra:
                break
            frame = bytes(buf[:length])
            problem = None
            if frame[-1] & 0x7F != CR:
                problem = f"frame does not end with CR at byte {FRAME_LEN}"
            elif self.checksum and buf[length] & 0x7F != toledo_checksum(frame):
                problem = f"checksum {buf[length]:#04x} does not match {toledo_checksum(frame):#04x}"
            decoded = decode_frame(frame, now) if problem is None else ScaleFault(problem, now, frame)
            if isinstance(decoded, ScaleFault):
                # Resume one byte on: the candidate's STX may have been noise hiding a real frame.
                out.append(decoded)
                del buf[:1]
                continue
            del buf[:length + extra]
            out.append(decoded)
        if len(buf) > _MAX_BUFFER:
            del buf[:-(FRAME_LEN + extra)]
        return out


def _find_stx(buf: bytearray) -> int:
    # STX is 0x02 on 8N1 and 0x82 with even parity in bit 7 (7E1 read as 8 bits).
    hits = [i for i in (buf.find(STX), buf.find(STX | 0x80)) if i >= 0]
    return min(hits) if hits else -1


def encode_toledo(
    value: float,
    *,
    unit: str = "kg",
    decimals: int = 2,
    tare: float = 0.0,
    net: bool = False,
    motion: bool = False,
    out_of_range: bool = False,
    not_zeroed: bool = False,
    checksum: bool = False,
    count_by: int = 1,
    short: bool = False,
) -> bytes:
    """A continuous-output frame for a simulated terminal and for fixtures (`short`: no tare field)."""
    dp_code = {d: c for c, d in _DECIMALS.items()}[decimals]
    swa = 0x20 | {c: bits for bits, c in _COUNT_BY.items()}[count_by] | dp_code
    swb = 0x20 | (0x01 if net else 0) | (0x02 if value < 0 else 0) | (0x04 if out_of_range else 0)
    swb |= (0x08 if motion else 0) | (0x10 if unit == "kg" else 0) | (0x40 if not_zeroed else 0)
    swc = 0x20 | _UNIT_CODES[unit]
    digits = round(abs(value) * 10**decimals)
    tare_digits = round(abs(tare) * 10**decimals)
    if digits > 999_999 or tare_digits > 999_999:
        raise ValueError("weight does not fit the six-digit field")
    fields = f"{digits:06d}" if short else f"{digits:06d}{tare_digits:06d}"
    frame = bytes([STX, swa, swb, swc]) + fields.encode("ascii") + bytes([CR])
    return frame + (bytes([toledo_checksum(frame)]) if checksum else b"")


class ToledoScale(StreamScale):
    """A Toledo terminal in continuous-output mode: read passively, never written to."""

    def __init__(self, settings: SerialSettings, *, checksum: bool = False, **kwargs: object) -> None:
        super().__init__(settings, lambda: ToledoDecoder(checksum=checksum), **kwargs)  # type: ignore[arg-type]
