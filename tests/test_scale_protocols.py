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


def test_toledo_7e1_read_as_8n1_finds_nothing_and_says_so() -> None:
    frame = b"\x02,0 012345000000\r"
    # Even parity in bit 7, as an 8N1 port receives a 7E1 terminal.
    wire = bytes(b | (0x80 if bin(b).count("1") % 2 else 0) for b in frame) * 3
    out = ToledoDecoder().feed(wire, 0.0)
    assert out and all(isinstance(x, ScaleFault) for x in out)


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
        (b"\n   1.25LB\r\n00\r\x03", True, 1.25, "lb", 1.25 * 453.59237, False),
        (b"\n   1.25LB\r\n10\r\x03", False, 1.25, "lb", 1.25 * 453.59237, False),  # byte 1 bit 0: motion
        (b"\n  0.567KG\r\n00\r\x03", True, 0.567, "kg", 567.0, False),
        (b"\n  -0.12KG\r\n00\r\x03", True, -0.12, "kg", -120.0, False),
        (b"\n  12.5 OZ\r\n00\r\x03", True, 12.5, "oz", 12.5 * 28.349523125, False),
        (b"\n 250 G\r\n00\r\x03", True, 250.0, "g", 250.0, False),
        (b"\n 1lb 2.0oz\r\n00\r\x03", True, 1.125, "lb", 1.125 * 453.59237, False),  # lb-oz
        (b"\n   1.25LB\r\n0p4\r\x03", True, 1.25, "lb", 1.25 * 453.59237, True),  # 3 bytes, net
        (b"\n   1.25LB\r\nS00\r\x03", True, 1.25, "lb", 1.25 * 453.59237, False),  # SCP-02 "S" prefix
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
        (b"\n^^^^^^^LB\r\n02\r\x03", "overload"),  # byte 2 bit 1
        (b"\n_______LB\r\n01\r\x03", "underload"),  # byte 2 bit 0
        (b"\n   0.00LB\r\n40\r\x03", "RAM error"),  # byte 1 bit 2 (0x34)
        (b"\n   0.00LB\r\n08\r\x03", "faulty calibration"),  # byte 2 bit 3 (0x38)
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


def test_nci_encoder_matches_fixture() -> None:
    assert encode_nci_weight(1.25, "lb") == b"\n   1.25LB\r\n00\r\x03"
    assert encode_nci_weight(1.25, "lb", motion=True) == b"\n   1.25LB\r\n10\r\x03"
    assert encode_nci_weight(0.0, "lb", over=True) == b"\n^^^^^^^LB\r\n02\r\x03"


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
    assert isinstance(decode_line(b"QT,+00000123 PC", 1.0), ScaleFault)
    assert isinstance(decode_line(b"XX,+00000123  g", 1.0), ScaleFault)
    assert isinstance(decode_line(b"ST,+000abc.3  g", 1.0), ScaleFault)
    assert isinstance(decode_line(b"ST,+00001.23  %", 1.0), ScaleFault)
    assert decode_line(b"   ", 1.0) is None


def test_ad_encoder_matches_fixture() -> None:
    assert encode_ad(123.45) == b"ST,+00123.45  g\r\n"
    assert encode_ad(123.47, stable=False) == b"US,+00123.47  g\r\n"
    assert encode_ad(0, over=True) == b"OL,+9999999E+19\r\n"


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
    lambda v, motion, net, unit: encode_toledo(v / 100, unit=unit, decimals=2, motion=motion, net=net),
    st.integers(min_value=-999_999, max_value=999_999),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["kg", "lb", "g"]),
)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(_TOLEDO_FRAME, min_size=1, max_size=12),
    noise=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\x02", b"")), min_size=12, max_size=12),
    cuts=_CUTS,
    checksum=st.booleans(),
)
def test_toledo_every_frame_found(frames: list[bytes], noise: list[bytes], cuts: list[int], checksum: bool) -> None:
    wire = [f + (bytes([toledo_checksum(f)]) if checksum else b"") for f in frames]
    stream = b"".join(n + f for f, n in zip(wire, noise, strict=False))
    found = [x.raw for x in _samples(ToledoDecoder(checksum), stream, cuts) if isinstance(x, ScaleSample)]
    assert found == frames


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), cuts=_CUTS)
def test_nci_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    whole = NciDecoder().feed(data, 0.0)
    pieces = _samples(NciDecoder(), data, cuts)
    keep = (ScaleSample, ScaleNotice)
    assert [_key(x) for x in pieces if isinstance(x, keep)] == [_key(x) for x in whole if isinstance(x, keep)]


_NCI_MESSAGE = st.builds(
    lambda v, unit, motion, over: encode_nci_weight(v / 100, unit, motion=motion, over=over),
    st.integers(min_value=-99_999, max_value=999_999), st.sampled_from(["lb", "kg", "oz", "g"]), st.booleans(),
    st.booleans(),
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
    st.integers(min_value=-9_999_999, max_value=9_999_999), st.sampled_from(["g", "kg", "lb", "oz"]), st.booleans(),
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
        assert not dynamic.stable and dynamic.grams == pytest.approx(500.0, abs=2.0)
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
