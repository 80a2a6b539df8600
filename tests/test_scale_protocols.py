"""Toledo continuous output, NCI SCP-01 and A&D/CAS scales: decoders (pure, byte-exact fixtures and
property tests), the stability window, and the drivers against the simulated scales over real ptys."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.scale_ad import AdDecoder, AdScale, decode_line, encode_ad
from drivers.scale_nci import NciDecoder, NciScale, decode_message, encode_nci_weight
from drivers.scale_sics import (
    ScaleOverload,
    ScaleProtocolError,
    ScaleTimeout,
    ScaleUnavailable,
    ScaleUnderload,
    ScaleUnstable,
)
from drivers.scale_stream import ScaleFault, ScaleNotice, ScaleSample, StableWindow
from drivers.scale_toledo import ToledoDecoder, ToledoScale, decode_frame, encode_toledo, toledo_checksum
from drivers.scales import open_scale
from drivers.serial_port import SerialSettings
from edge.config import ScaleSettings
from simulator.scales import SimulatedAdScale, SimulatedNciScale, SimulatedToledoScale

# -- Toledo standard continuous output ---------------------------------------------------------------
# Frames written from the format table of the Toledo "Standard Continuous Output" (IND560/IND780
# technical manual, continuous-output appendix: STX, SWA, SWB, SWC, 6 weight digits, 6 tare digits,
# CR, optional checksum). SWA 0x2C = fixed bit 5 + count-by 1 + decimal point code 4 (XXXX.XX).


@pytest.mark.parametrize(
    ("frame", "stable", "value", "unit", "grams", "net"),
    [
        # SWB 0x30: kg, gross, positive, no motion
        (b"\x02,0 012345000000\r", True, 123.45, "kg", 123450.0, False),
        # SWB 0x38: motion
        (b"\x02,8 012345000000\r", False, 123.45, "kg", 123450.0, False),
        # SWB 0x21: lb, net; tare field 000250 = 2.50 lb
        (b"\x02,! 000123000250\r", True, 1.23, "lb", 1.23 * 453.59237, True),
        # SWB 0x23: lb, net, negative
        (b"\x02,# 000123000250\r", True, -1.23, "lb", -1.23 * 453.59237, True),
        # SWA 0x2A: decimal code 2 (no decimal point); SWC 0x21: grams
        (b"\x02*0!001250000000\r", True, 1250.0, "g", 1250.0, False),
        # SWA 0x2D: code 5 (XXX.XXX) kg; leading zeros blanked to spaces
        (b"\x02-0   2345     0\r", True, 2.345, "kg", 2345.0, False),
        # SWA 0x28: code 0 (XXXX00): digits times 100, lb
        (b"\x02(  000012000000\r", True, 1200.0, "lb", 1200.0 * 453.59237, False),
        # SWC 0x23: ounces
        (b"\x02+0#000125000000\r", True, 12.5, "oz", 12.5 * 28.349523125, False),
    ],
)
def test_toledo_frames(frame: bytes, stable: bool, value: float, unit: str, grams: float, net: bool) -> None:
    sample = decode_frame(frame, 2.0)
    assert isinstance(sample, ScaleSample)
    assert (sample.stable, sample.value, sample.unit, sample.net, sample.fault) == (stable, value, unit, net, None)
    assert sample.grams == pytest.approx(grams)
    assert sample.received_at == 2.0 and sample.raw == frame


@pytest.mark.parametrize(
    ("frame", "fault"),
    [
        (b"\x02,4 000000000000\r", "overload"),  # SWB bit 2 out of range, positive
        (b"\x02,6 000000000000\r", "underload"),  # out of range and negative
        (b"\x02,p 000000000000\r", "not zeroed since power-up"),  # SWB 0x70: bit 6
    ],
)
def test_toledo_range_faults(frame: bytes, fault: str) -> None:
    sample = decode_frame(frame, 1.0)
    assert isinstance(sample, ScaleSample)
    assert (sample.fault, sample.grams, sample.usable) == (fault, None, False)


def test_toledo_expanded_display_is_not_a_grading_weight() -> None:
    sample = decode_frame(b"\x02,0\x30012345000000\r", 1.0)  # SWC 0x30: bit 4, expanded x10
    assert isinstance(sample, ScaleSample) and not sample.stable


def test_toledo_checksum_byte_exact() -> None:
    frame = b"\x02,0 012345000000\r"
    cks = toledo_checksum(frame)
    assert (sum(frame) + cks) & 0x7F == 0
    assert encode_toledo(123.45, unit="kg", decimals=2, checksum=True) == frame + bytes([cks])
    decoder = ToledoDecoder(checksum=True)
    out = decoder.feed(frame + bytes([cks]) + frame + bytes([(cks + 1) & 0x7F]), 0.0)
    assert isinstance(out[0], ScaleSample) and not any(isinstance(x, ScaleSample) for x in out[1:])
    assert "checksum" in out[1].message


def _with_even_parity(frame: bytes) -> bytes:
    return bytes(b | (0x80 if bin(b).count("1") % 2 else 0) for b in frame)


def test_toledo_7e1_read_as_8n1_is_recovered_from_the_parity_bit() -> None:
    frame = b"\x02,0 012345000000\r"
    # Even parity in bit 7, as an 8N1 port receives a 7E1 terminal: the 7 data bits are intact.
    cks = toledo_checksum(frame)
    wire = _with_even_parity(frame + bytes([cks])) * 3
    out = ToledoDecoder(checksum=True).feed(wire, 0.0)
    assert [x.grams for x in out if isinstance(x, ScaleSample)] == [123450.0] * 3
    assert not any(isinstance(x, ScaleFault) for x in out)


def test_toledo_high_bit_without_even_parity_is_noise_not_a_weight() -> None:
    frame = bytearray(_with_even_parity(b"\x02,0 012345000000\r"))
    frame[5] ^= 0x80  # one byte with odd parity: not a 7E1 byte, not an 8N1 frame
    out = ToledoDecoder().feed(bytes(frame), 0.0)
    assert out and all(isinstance(x, ScaleFault) for x in out)
    assert any("parity" in x.message for x in out if isinstance(x, ScaleFault))


# Status bytes built bit by bit from the Wildcat technical manual (12/00) Tables 6-9 to 6-11, which
# the IND560/IND570 "Standard Continuous Output" tables repeat: SWA bits 3-4 increment size
# (x1: bit 3, x2: bit 4, x5: both), SWC bits 0-2 unit code.
@pytest.mark.parametrize(
    ("frame", "value", "unit", "grams", "division"),
    [
        (b"\x02;0 001235000000\r", 123.5, "kg", 123500.0, 0.5),  # SWA 0x3B: x5, XXXXX.X
        (b"\x024  001234000000\r", 12.34, "lb", 12.34 * 453.59237, 0.02),  # SWA 0x34: x2, XXXX.XX
        (b"\x02)0 001230000000\r", 12300.0, "kg", 12300000.0, 10.0),  # SWA 0x29: x1, XXXXX0
        (b"\x02* \"001500000000\r", 1500.0, "t", 1.5e9, 1.0),  # SWC 0x22: metric tons
        (b"\x02,0 001234\r", 12.34, "kg", 12340.0, 0.01),  # short form, no tare field
    ],
)
def test_toledo_increment_size_units_and_short_form(
    frame: bytes, value: float, unit: str, grams: float, division: float
) -> None:
    out = ToledoDecoder().feed(frame, 2.0)
    assert len(out) == 1 and isinstance(out[0], ScaleSample), out
    sample = out[0]
    assert (sample.value, sample.unit, sample.division, sample.fault) == (value, unit, division, None)
    assert sample.grams == pytest.approx(grams)


def test_toledo_custom_unit_is_never_grams() -> None:
    out = ToledoDecoder().feed(b"\x02,0'001234000000\r", 0.0)  # SWC 0x27: custom unit
    assert len(out) == 1 and isinstance(out[0], ScaleSample)
    assert out[0].grams is None and not out[0].usable and "custom unit" in (out[0].fault or "")


def test_toledo_encoder_count_by_and_short_form() -> None:
    assert encode_toledo(123.5, decimals=1, count_by=5) == b"\x02;0 001235000000\r"
    assert encode_toledo(12.34, short=True) == b"\x02,0 001234\r"


def test_toledo_bad_fixed_bits_and_digits() -> None:
    assert isinstance(decode_frame(b"\x02\x0c0 012345000000\r", 0.0), ScaleFault)  # SWA bit 5 clear
    assert isinstance(decode_frame(b"\x02,0 0123X5000000\r", 0.0), ScaleFault)
    assert isinstance(decode_frame(b"\x02,0!01234500000\r", 0.0), ScaleFault)  # too short


def test_toledo_encoder_matches_fixture() -> None:
    assert encode_toledo(123.45, unit="kg", decimals=2) == b"\x02,0 012345000000\r"
    assert encode_toledo(-1.23, unit="lb", decimals=2, net=True, tare=2.5) == b"\x02,# 000123000250\r"


# -- NCI / Weigh-Tronix SCP-01 -------------------------------------------------------------------------
# Messages written from Weigh-Tronix document 8408-14788-01 (SCP-01), "Request weight" and "Request
# status" message formats and the status byte table.


@pytest.mark.parametrize(
    ("message", "stable", "value", "unit", "grams", "net"),
    [
        (b"\n   1.25lb\r\n00\r\x03", True, 1.25, "lb", 1.25 * 453.59237, False),
        (b"\n   1.25lb\r\n10\r\x03", False, 1.25, "lb", 1.25 * 453.59237, False),  # byte 1 bit 0: motion
        (b"\n  0.567kg\r\n00\r\x03", True, 0.567, "kg", 567.0, False),
        (b"\n  -0.12kg\r\n00\r\x03", True, -0.12, "kg", -120.0, False),
        (b"\n  12.5 OZ\r\n00\r\x03", True, 12.5, "oz", 12.5 * 28.349523125, False),
        (b"\n 250 G\r\n00\r\x03", True, 250.0, "g", 250.0, False),
        (b"\n 1lb 2.0oz\r\n00\r\x03", True, 1.125, "lb", 1.125 * 453.59237, False),  # lb-oz
        (b"\n   1.25lb\r\n0p4\r\x03", True, 1.25, "lb", 1.25 * 453.59237, True),  # 3 bytes, net
        (b"\n   1.25lb\r\nS00\r\x03", True, 1.25, "lb", 1.25 * 453.59237, False),  # SCP-02 "S" prefix
    ],
)
def test_nci_weight_messages(message: bytes, stable: bool, value: float, unit: str, grams: float, net: bool) -> None:
    sample = decode_message(message, 1.0)
    assert isinstance(sample, ScaleSample)
    assert (sample.stable, sample.value, sample.unit, sample.net, sample.fault) == (stable, value, unit, net, None)
    assert sample.grams == pytest.approx(grams)


@pytest.mark.parametrize(
    ("message", "fault"),
    [
        (b"\n^^^^^^^lb\r\n02\r\x03", "overload"),  # byte 2 bit 1
        (b"\n_______lb\r\n01\r\x03", "underload"),  # byte 2 bit 0
        (b"\n   0.00lb\r\n40\r\x03", "RAM error"),  # byte 1 bit 2 (0x34)
        (b"\n   0.00lb\r\n08\r\x03", "faulty calibration"),  # byte 2 bit 3 (0x38)
    ],
)
def test_nci_faults(message: bytes, fault: str) -> None:
    sample = decode_message(message, 1.0)
    assert isinstance(sample, ScaleSample)
    assert sample.fault == fault and not sample.usable


def test_nci_status_unknown_command_and_garbage() -> None:
    status = decode_message(b"\n00\r\x03", 1.0)
    assert isinstance(status, ScaleNotice) and status.kind == "status" and status.fault is None
    over = decode_message(b"\n02\r\x03", 1.0)
    assert isinstance(over, ScaleNotice) and over.fault == "overload"
    unknown = decode_message(b"\n?\r\x03", 1.0)
    assert isinstance(unknown, ScaleNotice) and unknown.kind == "unrecognised_command"
    assert isinstance(decode_message(b"\nHELLO\r\nAB\r\x03", 1.0), ScaleFault)  # status bits 4/5 clear
    assert isinstance(decode_message(b"\n ERR   \r\n00\r\x03", 1.0), ScaleFault)  # display text, no weight
    assert isinstance(decode_message(b"\n   1.25XY\r\n00\r\x03", 1.0), ScaleFault)


# Replies transcribed from the NCI 7800 manual ("Standard Commands": <LF>xxxx.xxuu<CR><LF>hh<CR><ETX>)
# and the Brecknell 3700LP "NCI Protocol" table (grams shown as "_XXXXg_", spaces around).
@pytest.mark.parametrize(
    ("message", "value", "unit", "grams"),
    [
        (b"\n0012.50lb\r\n00\r\x03", 12.5, "lb", 12.5 * 453.59237),
        (b"\n 12.50kg\r\n00\r\x03", 12.5, "kg", 12500.0),
        (b"\n 12.50oz\r\n00\r\x03", 12.5, "oz", 12.5 * 28.349523125),
        (b"\n 1250g \r\n00\r\x03", 1250.0, "g", 1250.0),
        (b"\n 1lb 4.0oz\r\n00\r\x03", 1.25, "lb", 1.25 * 453.59237),  # pound-ounce display
        (b"\n 12.50kg\r\n00p4\r\x03", 12.5, "kg", 12500.0),  # 4 status bytes, byte 4 bit 2: metric
    ],
)
def test_nci_documented_replies(message: bytes, value: float, unit: str, grams: float) -> None:
    out = NciDecoder().feed(message, 3.0)
    assert len(out) == 1 and isinstance(out[0], ScaleSample), out
    assert (out[0].value, out[0].unit, out[0].stable, out[0].fault) == (value, unit, True, None)
    assert out[0].grams == pytest.approx(grams)


def test_nci_unrecognised_command_in_both_documented_forms() -> None:
    for reply in (b"\n?\r\x03", b"\r?\n"):
        out = NciDecoder().feed(reply + b"\n 12.50kg\r\n00\r\x03", 0.0)
        kinds = [(type(x).__name__, getattr(x, "kind", None)) for x in out]
        assert kinds == [("ScaleNotice", "unrecognised_command"), ("ScaleSample", None)], out


def test_nci_encoder_matches_fixture() -> None:
    assert encode_nci_weight(1.25, "lb") == b"\n   1.25lb\r\n00\r\x03"
    assert encode_nci_weight(1.25, "lb", motion=True) == b"\n   1.25lb\r\n10\r\x03"
    assert encode_nci_weight(0.0, "lb", over=True) == b"\n^^^^^^^lb\r\n02\r\x03"


# -- A&D / CAS lines -------------------------------------------------------------------------------------
# A&D standard format (A&D FX-i/GX balance manuals, "Data Format": header, comma, 9 data characters,
# 3 unit characters, CR LF) and CAS CI-series indicator format (two headers).


@pytest.mark.parametrize(
    ("line", "stable", "value", "unit", "grams", "net"),
    [
        (b"ST,+00123.45  g\r\n", True, 123.45, "g", 123.45, False),
        (b"US,+00123.47  g\r\n", False, 123.47, "g", 123.47, False),
        (b"ST,-00001.20  g\r\n", True, -1.2, "g", -1.2, False),
        (b"ST,+0012.345 kg\r\n", True, 12.345, "kg", 12345.0, False),
        (b"ST,+00012.34  kg\r\n", True, 12.34, "kg", 12340.0, False),  # as quoted in issue 3
        (b"ST,+000.1234 lb\r\n", True, 0.1234, "lb", 0.1234 * 453.59237, False),
        (b"ST,GS,+  12.34kg\r\n", True, 12.34, "kg", 12340.0, False),  # CAS
        (b"US,NT,+0012.340kg\r\n", False, 12.34, "kg", 12340.0, True),  # CAS net, unstable
        (b"WT,+00100.00  g\r\n", True, 100.0, "g", 100.0, False),
    ],
)
def test_ad_lines(line: bytes, stable: bool, value: float, unit: str, grams: float, net: bool) -> None:
    sample = AdDecoder().feed(line, 4.0)
    assert len(sample) == 1 and isinstance(sample[0], ScaleSample)
    s = sample[0]
    assert (s.stable, s.value, s.unit, s.net, s.fault, s.received_at) == (stable, value, unit, net, None, 4.0)
    assert s.grams == pytest.approx(grams)


def test_ad_overload_underload_and_non_weights() -> None:
    over = decode_line(b"OL,+9999999E+19", 1.0)
    under = decode_line(b"OL,-9999999E+19", 1.0)
    assert isinstance(over, ScaleSample) and over.fault == "overload"
    assert isinstance(under, ScaleSample) and under.fault == "underload"
    assert isinstance(decode_line(b"XX,+00000123  g", 1.0), ScaleFault)
    assert isinstance(decode_line(b"ST,+000abc.3  g", 1.0), ScaleFault)
    assert isinstance(decode_line(b"ST,+000123.4 Nm", 1.0), ScaleFault)
    assert decode_line(b"   ", 1.0) is None


# Lines transcribed from the A&D EK-i / EJ instruction manuals, "Data format" (examples of output
# data: weighing, counting, percentage, out of range for grams and for pieces).
@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"QT,+00012345 PC\r\n", "counting"),  # stable counting data
        (b"US,+00012345 PC\r\n", "counting"),  # unstable counting data
        (b"ST,+000123.4  %\r\n", "percent"),  # percentage data (header ST)
        (b"US,+000123.4  %\r\n", "percent"),
        (b"ST,+00012.34 tl\r\n", "tael"),
    ],
)
def test_ad_counting_and_percent_are_never_grams(line: bytes, why: str) -> None:
    out = AdDecoder().feed(line, 1.0)
    assert len(out) == 1 and isinstance(out[0], ScaleSample)
    sample = out[0]
    assert sample.grams is None and sample.value is None and not sample.usable
    assert sample.fault is not None and sample.fault.startswith("not a weight") and why in sample.fault


@pytest.mark.parametrize(
    ("line", "fault"),
    [
        (b"OL,+999999.9  g\r\n", "overload"),  # out of range "gram" (+)
        (b"OL,-99999999 PC\r\n", "underload"),  # out of range "pcs" (-)
    ],
)
def test_ad_documented_out_of_range(line: bytes, fault: str) -> None:
    out = AdDecoder().feed(line, 1.0)
    assert len(out) == 1 and isinstance(out[0], ScaleSample) and out[0].fault == fault


@pytest.mark.parametrize(
    ("line", "unit", "grams"),
    [
        (b"ST,+001234.5  g\r\n", "g", 1234.5),  # the manual's weighing example
        (b"ST,+0012.345 oz\r\n", "oz", 12.345 * 28.349523125),
        (b"ST,+0012.345ozt\r\n", "ozt", 12.345 * 31.1034768),
        (b"ST,+00100.00mom\r\n", "mom", 375.0),
        (b"ST,+00010.00  t\r\n", "t", 116.638038),  # A&D "t" is the tola, not the tonne
        (b"ST,+00050.00 GN\r\n", "GN", 50 * 0.06479891),
    ],
)
def test_ad_documented_units(line: bytes, unit: str, grams: float) -> None:
    out = AdDecoder().feed(line, 1.0)
    assert len(out) == 1 and isinstance(out[0], ScaleSample) and out[0].unit == unit
    assert out[0].grams == pytest.approx(grams)


def test_ad_error_code_reply_is_a_notice() -> None:
    out = AdDecoder().feed(b"EC,E01\r\n", 1.0)
    assert len(out) == 1 and isinstance(out[0], ScaleNotice) and "undefined command" in (out[0].fault or "")


def test_ad_encoder_matches_fixture() -> None:
    assert encode_ad(123.45) == b"ST,+00123.45  g\r\n"
    assert encode_ad(123.47, stable=False) == b"US,+00123.47  g\r\n"
    assert encode_ad(0, over=True) == b"OL,+999999.9  g\r\n"
    assert encode_ad(12345, unit="PC", decimals=0, header="QT") == b"QT,+00012345 PC\r\n"
    assert encode_ad(123.4, unit="%", decimals=1) == b"ST,+000123.4  %\r\n"


# -- properties: arbitrary bytes in arbitrary chunks ----------------------------------------------------


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def _samples(decoder: object, stream: bytes, cuts: list[int]) -> list[ScaleSample | ScaleFault | ScaleNotice]:
    out = []
    for chunk in _chunked(stream, cuts):
        out.extend(decoder.feed(chunk, 0.0))  # type: ignore[attr-defined]
    return out


def _key(x: object) -> tuple:
    return (type(x).__name__, getattr(x, "raw", None), getattr(x, "grams", None), getattr(x, "fault", None))


_CUTS = st.lists(st.integers(min_value=0, max_value=6000), max_size=40)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), cuts=_CUTS, checksum=st.booleans())
def test_toledo_arbitrary_bytes(data: bytes, cuts: list[int], checksum: bool) -> None:
    whole = ToledoDecoder(checksum).feed(data, 0.0)
    pieces = _samples(ToledoDecoder(checksum), data, cuts)
    for x in pieces:
        assert isinstance(x, ScaleSample | ScaleFault)
    # Samples do not depend on chunking (faults about loose bytes may be split differently).
    assert [_key(x) for x in pieces if isinstance(x, ScaleSample)] == [
        _key(x) for x in whole if isinstance(x, ScaleSample)
    ]


_TOLEDO_FRAME = st.builds(
    lambda v, motion, net, unit, count_by, short: encode_toledo(
        v / 100, unit=unit, decimals=2, motion=motion, net=net, count_by=count_by, short=short
    ),
    st.integers(min_value=-999_999, max_value=999_999),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["kg", "lb", "g", "oz", "t"]),
    st.sampled_from([1, 2, 5]),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(_TOLEDO_FRAME, min_size=1, max_size=12),
    noise=st.lists(
        st.binary(max_size=20).map(lambda b: b.replace(b"\x02", b"").replace(b"\x82", b"")), min_size=12, max_size=12
    ),
    cuts=_CUTS,
    checksum=st.booleans(),
    seven_e_one=st.booleans(),
)
def test_toledo_every_frame_found(
    frames: list[bytes], noise: list[bytes], cuts: list[int], checksum: bool, seven_e_one: bool
) -> None:
    wire = [f + (bytes([toledo_checksum(f)]) if checksum else b"") for f in frames]
    if seven_e_one:  # a 7E1 terminal read by an 8N1 port
        wire = [_with_even_parity(w) for w in wire]
    stream = b"".join(n + f for f, n in zip(wire, noise, strict=False))
    found = [x.raw for x in _samples(ToledoDecoder(checksum), stream, cuts) if isinstance(x, ScaleSample)]
    assert found == [w[: len(f)] for w, f in zip(wire, frames, strict=True)]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), cuts=_CUTS)
def test_nci_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    whole = NciDecoder().feed(data, 0.0)
    pieces = _samples(NciDecoder(), data, cuts)
    keep = (ScaleSample, ScaleNotice)
    assert [_key(x) for x in pieces if isinstance(x, keep)] == [_key(x) for x in whole if isinstance(x, keep)]


_NCI_MESSAGE = st.builds(
    lambda v, unit, motion, over, net: encode_nci_weight(v / 100, unit, motion=motion, over=over, net=net),
    st.integers(min_value=-99_999, max_value=999_999), st.sampled_from(["lb", "kg", "oz", "g"]), st.booleans(),
    st.booleans(), st.sampled_from([None, False, True]),  # None: two status bytes, else three
)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(_NCI_MESSAGE, min_size=1, max_size=12),
    noise=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), min_size=12, max_size=12),
    cuts=_CUTS,
)
def test_nci_every_message_found(frames: list[bytes], noise: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(n + f for f, n in zip(frames, noise, strict=False))
    found = [x.raw for x in _samples(NciDecoder(), stream, cuts) if isinstance(x, ScaleSample)]
    assert found == frames


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), cuts=_CUTS)
def test_ad_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    whole = AdDecoder().feed(data, 0.0)
    pieces = _samples(AdDecoder(), data, cuts)
    assert [_key(x) for x in pieces] == [_key(x) for x in whole]


_AD_LINE = st.builds(
    lambda v, unit, stable, gn: encode_ad(v / 100, unit=unit, stable=stable, gross_net=gn),
    st.integers(min_value=-9_999_999, max_value=9_999_999),
    st.sampled_from(["g", "kg", "lb", "oz", "ozt", "mom", "t", "PC", "%"]),
    st.booleans(),
    st.sampled_from([None, "GS", "NT"]),
)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(_AD_LINE, min_size=1, max_size=12),
    noise=st.lists(
        st.sampled_from([b"", b"\x00", b"\xff", b"\r\n", b"\n", b"noise\xfe\r\n"]), min_size=12, max_size=12
    ),
    cuts=_CUTS,
)
def test_ad_every_line_found(frames: list[bytes], noise: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(n + f for f, n in zip(frames, noise, strict=False))
    found = [x.raw for x in _samples(AdDecoder(), stream, cuts) if isinstance(x, ScaleSample)]
    assert found == [f[:-2] for f in frames]


# -- stability window (pure) ------------------------------------------------------------------------------


def _s(at: float, grams: float, stable: bool = True, fault: str | None = None) -> ScaleSample:
    return ScaleSample(at, stable, grams, "g", None if fault else grams, False, fault)


def test_window_needs_steady_run_of_the_full_length() -> None:
    window = StableWindow(0.1, tolerance_g=0.0)
    run = [_s(0.00, 5.0), _s(0.05, 5.0), _s(0.10, 5.0)]
    assert window.stable_reading(run, since=0.0) == run[-1]
    assert window.stable_reading(run[1:], since=0.0) is None  # only 0.05 s covered
    assert window.stable_reading([_s(0.0, 5.0), _s(0.05, 5.0, stable=False), _s(0.1, 5.0)], 0.0) is None
    assert window.stable_reading([_s(0.0, 5.0), _s(0.05, 5.5), _s(0.1, 5.0)], 0.0) is None
    assert StableWindow(0.1, 0.5).stable_reading([_s(0.0, 5.0), _s(0.05, 5.4), _s(0.1, 5.0)], 0.0) is not None
    assert window.stable_reading(run, since=0.2) is None  # nothing fresh
    gap = StableWindow(0.1, max_gap_s=0.03)
    assert gap.stable_reading(run, 0.0) is None  # frames lost in between
    assert StableWindow(0.0).stable_reading([_s(1.0, 7.0)], 0.5) is not None


# -- drivers over real ptys ---------------------------------------------------------------------------------

PROTOCOLS = ["toledo", "nci", "ad"]


def _sim(protocol: str, link: str):  # type: ignore[no-untyped-def]
    if protocol == "toledo":
        return SimulatedToledoScale(link_path=link, unit="kg", decimals=3)
    if protocol == "nci":
        return SimulatedNciScale(link_path=link, unit="kg", decimals=3)
    return SimulatedAdScale(link_path=link, unit="g", decimals=2)


def _driver(protocol: str, link: str, window: float = 0.1):  # type: ignore[no-untyped-def]
    return open_scale(ScaleSettings(protocol=protocol, port=link, stability_window_s=window, poll_interval_s=0.02))


_WEIGHTS = {"toledo": 1234.0, "nci": 1500.0, "ad": 187.25}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stable_weight_in_grams(tmp_path: Path, protocol: str) -> None:
    link = str(tmp_path / protocol)
    async with _sim(protocol, link) as sim, _driver(protocol, link) as scale:
        await scale.wait_for_state("online", 2.0)
        sim.set_load(_WEIGHTS[protocol], settle_s=0.15)
        loop = asyncio.get_running_loop()
        began = loop.time()
        reading = await scale.read_weight(stable_only=True, deadline_s=2.0)
        assert reading.stable and reading.grams == pytest.approx(_WEIGHTS[protocol], abs=0.01)
        # Not before the load settled plus the stability window.
        assert loop.time() - began >= 0.15 + 0.1 - 0.03


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unstable_overload_underload(tmp_path: Path, protocol: str) -> None:
    link = str(tmp_path / protocol)
    async with _sim(protocol, link) as sim, _driver(protocol, link) as scale:
        await scale.wait_for_state("online", 2.0)
        sim.set_load(500.0, settle_s=math.inf)
        with pytest.raises(ScaleUnstable) as unstable:
            await scale.read_weight(deadline_s=0.3)
        assert unstable.value.reading is not None and not unstable.value.reading.stable
        dynamic = await scale.read_weight(stable_only=False, deadline_s=0.5)
        # The simulator jitters an unsettled load by up to 3 display steps (3 g at 0.001 kg).
        assert not dynamic.stable and dynamic.grams == pytest.approx(500.0, abs=3.0)
        sim.overload()
        await asyncio.sleep(0.1)
        with pytest.raises(ScaleOverload):
            await scale.read_weight(deadline_s=0.5)
        sim.underload()
        await asyncio.sleep(0.1)
        with pytest.raises(ScaleUnderload):
            await scale.read_weight(deadline_s=0.5)
        sim.set_load(250.0)
        assert (await scale.read_weight(deadline_s=1.0)).grams == pytest.approx(250.0, abs=0.01)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_wrong_baud_and_garbage_invent_nothing(tmp_path: Path, protocol: str) -> None:
    link = str(tmp_path / protocol)
    async with _sim(protocol, link) as sim, _driver(protocol, link) as scale:
        await scale.wait_for_state("online", 2.0)
        sim.set_load(300.0)
        sim.wrong_baud = True
        await asyncio.sleep(0.1)
        with pytest.raises(ScaleTimeout):
            await scale.read_weight(deadline_s=0.3)
        assert scale.errors["parse"] > 0
        sim.wrong_baud = False
        sim.send_garbage(200)
        reading = await scale.read_weight(deadline_s=1.0)
        assert reading.grams == pytest.approx(300.0, abs=0.01)
        assert scale.state == "online"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unplug_replug_back_within_two_seconds(tmp_path: Path, protocol: str) -> None:
    link = str(tmp_path / "by-id" / f"usb-{protocol}-scale-if00")
    sim = _sim(protocol, link)
    async with _driver(protocol, link) as scale, sim:
        await scale.wait_for_state("online", 2.0)
        sim.set_load(111.0)
        assert (await scale.read_weight(deadline_s=1.0)).grams == pytest.approx(111.0, abs=0.01)
        sim.unplug()
        await scale.wait_for_state("lost", 2.0)
        with pytest.raises(ScaleUnavailable):
            await scale.read_weight(deadline_s=0.2)
        # Away long enough for the reconnect backoff to have grown to its cap.
        await asyncio.sleep(2.5)
        sim.replug()
        sim.set_load(222.0)
        loop = asyncio.get_running_loop()
        back = loop.time()
        await scale.wait_for_state("online", 2.0)
        reading = await scale.read_weight(deadline_s=1.0)
        assert loop.time() - back < 2.0
        # The weight from before the outage is never reported as the new one.
        assert reading.grams == pytest.approx(222.0, abs=0.01)


async def test_factory_picks_each_driver(tmp_path: Path) -> None:
    assert isinstance(open_scale(ScaleSettings(protocol="toledo", port="x")), ToledoScale)
    assert isinstance(open_scale(ScaleSettings(protocol="nci", port="x")), NciScale)
    assert isinstance(open_scale(ScaleSettings(protocol="ad", port="x")), AdScale)
    sics = open_scale(ScaleSettings(protocol="sics", port="x"))
    assert type(sics).__name__ == "SicsScale"
    assert ToledoScale(SerialSettings("x"), checksum=True).decoder.checksum is True


async def test_toledo_checksum_over_pty(tmp_path: Path) -> None:
    link = str(tmp_path / "toledo")
    settings_ = ScaleSettings(protocol="toledo", port=link, checksum=True, stability_window_s=0.05)
    async with SimulatedToledoScale(link_path=link, checksum=True) as sim, open_scale(settings_) as scale:
        await scale.wait_for_state("online", 2.0)
        sim.set_load(2500.0)
        assert (await scale.read_weight(deadline_s=1.0)).grams == pytest.approx(2500.0)
        assert scale.errors["parse"] == 0


async def test_nci_units_command_changes_unit_not_grams(tmp_path: Path) -> None:
    link = str(tmp_path / "nci")
    async with SimulatedNciScale(link_path=link, unit="lb", decimals=2) as sim, \
            open_scale(ScaleSettings(protocol="nci", port=link, poll_interval_s=0.02)) as scale:
        await scale.wait_for_state("online", 2.0)
        sim.set_load(2000.0)
        first = await scale.read_weight(deadline_s=1.0)
        await scale.change_units()
        for _ in range(50):  # the poller's next W answers in the new unit
            if scale.last_sample is not None and scale.last_sample.unit == "kg":
                break
            await asyncio.sleep(0.02)
        second = await scale.read_weight(deadline_s=1.0)
    assert "U" in sim.commands
    assert (first.unit, second.unit) == ("lb", "kg")
    assert first.grams == pytest.approx(2000.0, abs=453.59237 * 0.005)  # lb display rounds to 0.01 lb
    assert second.grams == pytest.approx(2000.0)


async def test_ad_polled_balance_and_counting_mode(tmp_path: Path) -> None:
    link = str(tmp_path / "ad")
    settings_ = ScaleSettings(protocol="ad", port=link, polled=True, poll_interval_s=0.02, stability_window_s=0.05)
    async with SimulatedAdScale(link_path=link, polled=True) as sim, open_scale(settings_) as scale:
        await scale.wait_for_state("online", 2.0)
        sim.set_load(187.25)
        reading = await scale.read_weight(deadline_s=1.0)
        assert reading.grams == pytest.approx(187.25)
        sim.mode = "count"
        with pytest.raises(ScaleProtocolError, match="counting mode"):
            await scale.read_weight(deadline_s=1.0)
        sim.mode = "percent"
        with pytest.raises(ScaleProtocolError, match="percent mode"):
            await scale.read_weight(deadline_s=1.0)
    assert set(sim.commands) == {"Q"} and sim.frames_sent >= 3
    assert scale.errors["device"] == 2 and scale.errors["parse"] == 0
