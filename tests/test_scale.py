"""MT-SICS scale: reply parsing (pure) and SicsScale against the simulated scale over real ptys."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import tty
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.scale_sics import (
    ScaleOverload,
    ScaleTimeout,
    ScaleUnavailable,
    ScaleUnderload,
    ScaleUnstable,
    SicsError,
    SicsReply,
    SicsScale,
    WeightReading,
    parse_sics_line,
)
from drivers.serial_port import FramingError, LineFramer
from simulator.scale import SimulatedScale

# -- parsing, byte-exact fixtures in the reference manual's formats ---------------------------------


@pytest.mark.parametrize(
    ("line", "stable", "value", "unit", "grams"),
    [
        (b"S S     100.00 g\r\n", True, 100.0, "g", 100.0),
        (b"S D     129.07 g\r\n", False, 129.07, "g", 129.07),
        (b"S S      0.256 kg\r\n", True, 0.256, "kg", 256.0),
        (b"S S     -12.34 g\r\n", True, -12.34, "g", -12.34),
        (b"S S -    12.34 g\r\n", True, -12.34, "g", -12.34),  # sign in its own column
        (b"S S    1500.0 mg", True, 1500.0, "mg", 1.5),
        (b"S S      1.000 lb\r\n", True, 1.0, "lb", 453.59237),
        (b"S D      2.000 oz\r\n", False, 2.0, "oz", 56.69904625),
        (b"S S         5 ct\r\n", True, 5.0, "ct", 1.0),
        (b"S S        .5 g\r\n", True, 0.5, "g", 0.5),
    ],
)
def test_weight_replies(line: bytes, stable: bool, value: float, unit: str, grams: float) -> None:
    reading = parse_sics_line(line, 3.0)
    assert isinstance(reading, WeightReading)
    assert (reading.stable, reading.value, reading.unit, reading.received_at) == (stable, value, unit, 3.0)
    assert reading.grams == pytest.approx(grams)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"S I\r\n", "S I"),
        (b"S +\r\n", "S +"),
        (b"S -\r\n", "S -"),
        (b"ES\r\n", "ES"),
        (b"ET\r\n", "ET"),
        (b"EL\r\n", "EL"),
        (b"Z I\r\n", "Z I"),
        (b"Z +\r\n", "Z +"),
        (b"T I\r\n", "T I"),
        (b"S L\r\n", "S L"),
    ],
)
def test_error_replies(line: bytes, code: str) -> None:
    reply = parse_sics_line(line, 1.0)
    assert isinstance(reply, SicsError)
    assert reply.code == code
    assert reply.message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"Z A\r\n", SicsReply("Z", "A", (), 2.0)),
        (b"T S      12.00 g\r\n", SicsReply("T", "S", ("12.00", "g"), 2.0, grams=12.0)),
        (b'I4 A "B021002593"\r\n', SicsReply("I4", "A", ("B021002593",), 2.0)),
        (b'I2 A "WMS404C-L/10 6200.0 g"\r\n', SicsReply("I2", "A", ("WMS404C-L/10 6200.0 g",), 2.0)),
        (b'I1 A "01" "2.20" "2.20" "" ""\r\n', SicsReply("I1", "A", ("01", "2.20", "2.20", "", ""), 2.0)),
        (b"ZI D     0.02 g\r\n", SicsReply("ZI", "D", ("0.02", "g"), 2.0, grams=0.02)),
    ],
)
def test_other_replies(line: bytes, expected: SicsReply) -> None:
    assert parse_sics_line(line, 2.0) == expected


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"", "empty"),
        (b"\r\n", "empty"),
        (b"S S     abc g\r\n", "not a number"),
        (b"S S     1e5 g\r\n", "not a number"),
        (b"S S     nan g\r\n", "not a number"),
        (b"S S     inf g\r\n", "not a number"),
        (b"S S     12.0 stone\r\n", "unknown weight unit"),
        (b"S S     12.0\r\n", "expected '<value> <unit>'"),
        (b"S S     12.0 g extra\r\n", "expected '<value> <unit>'"),
        (b"S S     1\xb52.0 g\r\n", "not ASCII"),
        (b"S S \x1b[2J 1 g", "control characters"),
        (b"S\r\n", "no status"),
        (b"S Q 1 g\r\n", "unknown status"),
        (b'I4 A "unterminated\r\n', "unterminated"),
        (b"hello world", "not an MT-SICS reply"),
        (b"S +  5\r\n", "unexpected data"),
        (b"S " + b"9" * 300 + b" g", "longer than"),
        (b"S S " + b"9" * 200 + b" g", "out of range"),
    ],
)
def test_bad_lines_are_parse_errors(line: bytes, why: str) -> None:
    reply = parse_sics_line(line, 1.0)
    assert isinstance(reply, SicsError) and reply.code == "parse"
    assert why in reply.message


@settings(max_examples=500, deadline=None)
@given(line=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(line: bytes) -> None:
    reply = parse_sics_line(line, 0.0)
    assert isinstance(reply, WeightReading | SicsReply | SicsError)
    if isinstance(reply, WeightReading):
        assert math.isfinite(reply.grams)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.tuples(
            st.booleans(),
            st.decimals(min_value=-99999, max_value=999999, places=2, allow_nan=False, allow_infinity=False),
        ),
        min_size=1,
        max_size=12,
    ),
    noise=st.lists(st.sampled_from([b"", b"\x00", b"\r\n", b"\xff\n"]), min_size=12, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=30),
)
def test_every_reply_found_whatever_the_chunks(
    values: list[tuple[bool, object]], noise: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(
        n + f"S {'S' if stable else 'D'} {value:>10} g\r\n".encode()
        for (stable, value), n in zip(values, noise, strict=False)
    )
    framer = LineFramer(256)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    readings: list[WeightReading | SicsReply | SicsError] = []
    prev = 0
    for p in [*points, len(stream)]:
        for line in framer.feed(stream[prev:p], 0.0):
            assert not isinstance(line, FramingError)
            readings.append(parse_sics_line(line, 0.0))
        prev = p
    assert [(r.stable, r.value) for r in readings if isinstance(r, WeightReading)] == [
        (stable, float(value)) for stable, value in values  # type: ignore[arg-type]
    ]
    assert len(readings) == len(values)


# -- the simulator's wire format ---------------------------------------------------------------------


async def test_simulator_wire_format_is_byte_exact() -> None:
    async with SimulatedScale() as sim:
        sim.set_load(123.45)
        assert sim._weight_line(True) == b"S S     123.45 g\r\n"
        sim.set_load(-0.001)
        assert sim._weight_line(False) == b"S D       0.00 g\r\n"


# -- through a real pty ------------------------------------------------------------------------------


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    link = str(tmp_path / "usb-Mettler_Toledo-if00")
    async with SimulatedScale(link_path=link) as sim, SicsScale(link) as scale:
        await scale.wait_for_state("online", 2.0)
        yield sim, scale


async def test_stable_weight_after_settle_time(rig: tuple[SimulatedScale, SicsScale]) -> None:
    sim, scale = rig
    sim.set_load(187.3, settle_s=0.15)
    started = time.monotonic()
    reading = await scale.read_weight(deadline_s=1.0)
    elapsed = time.monotonic() - started
    assert reading.stable and reading.unit == "g"
    assert reading.grams == pytest.approx(187.3)
    assert 0.12 <= elapsed < 1.0
    # It polled: several SI before the weight settled.
    assert sim.commands.count("SI") >= 3
    assert set(sim.commands) == {"SI"}


async def test_unstable_when_it_never_settles(rig: tuple[SimulatedScale, SicsScale]) -> None:
    sim, scale = rig
    sim.set_load(412.0, settle_s=math.inf)
    with pytest.raises(ScaleUnstable) as info:
        await scale.read_weight(deadline_s=0.25)
    assert info.value.reading is not None and info.value.reading.grams == pytest.approx(412.0)
    assert scale.errors["unstable"] == 1
    # Not stable_only: the dynamic weight is good enough.
    reading = await scale.read_weight(stable_only=False)
    assert not reading.stable and reading.grams == pytest.approx(412.0)


async def test_overload_and_underload(rig: tuple[SimulatedScale, SicsScale]) -> None:
    sim, scale = rig
    sim.overload()
    with pytest.raises(ScaleOverload):
        await scale.read_weight()
    sim.set_load(9000.0)  # above the 6200 g capacity
    with pytest.raises(ScaleOverload):
        await scale.read_weight()
    sim.underload()
    with pytest.raises(ScaleUnderload):
        await scale.read_weight()
    sim.set_load(10.0)
    assert (await scale.read_weight()).grams == pytest.approx(10.0)


async def test_timeout_when_scale_does_not_answer(rig: tuple[SimulatedScale, SicsScale]) -> None:
    sim, scale = rig
    sim.mute = True
    started = time.monotonic()
    with pytest.raises(ScaleTimeout):
        await scale.read_weight(deadline_s=0.2)
    assert time.monotonic() - started < 0.6
    sim.mute = False
    sim.set_load(55.0)
    assert (await scale.read_weight()).grams == pytest.approx(55.0)


async def test_stale_reply_is_not_taken_for_a_fresh_one(rig: tuple[SimulatedScale, SicsScale]) -> None:
    sim, scale = rig
    sim.set_load(100.0)
    sim.write(b"S S     999.00 g\r\n")  # unsolicited: nobody asked
    await asyncio.sleep(0.05)
    assert (await scale.read_weight()).grams == pytest.approx(100.0)
    assert scale.errors["stale"] >= 1


async def test_zero_tare_and_serial_number(rig: tuple[SimulatedScale, SicsScale]) -> None:
    sim, scale = rig
    sim.set_load(3.2)
    await scale.zero()
    assert (await scale.read_weight()).grams == pytest.approx(0.0)
    sim.set_load(53.2)
    assert await scale.tare() == pytest.approx(50.0)
    sim.set_load(253.2)
    assert (await scale.read_weight()).grams == pytest.approx(200.0)
    assert await scale.serial_number() == "B021002593"
    sim.set_load(1.0, settle_s=math.inf)
    with pytest.raises(ScaleUnstable):
        await scale.zero()
    assert sim.commands[:2] == ["Z", "SI"]


async def test_commands_are_serialised(rig: tuple[SimulatedScale, SicsScale]) -> None:
    sim, scale = rig
    sim.set_load(77.0)
    readings = await asyncio.gather(*(scale.read_weight() for _ in range(5)))
    assert [r.grams for r in readings] == [pytest.approx(77.0)] * 5
    assert scale.errors["stale"] == 0


async def test_simulator_answers_on_the_wire() -> None:
    async with SimulatedScale() as sim:
        # Talk to the simulator as a plain tty client would, without the driver.
        fd = os.open(sim.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
            sim.set_load(42.0)
            os.write(fd, b"XYZ\r\nSI\r\nI4\r\n@\r\n")
            expected = b'ES\r\nS S      42.00 g\r\nI4 A "B021002593"\r\nI4 A "B021002593"\r\n'
            got = b""
            for _ in range(100):
                await asyncio.sleep(0.01)
                with contextlib.suppress(BlockingIOError):
                    got += os.read(fd, 1024)
                if len(got) >= len(expected):
                    break
            assert got == expected
            assert sim.commands == ["XYZ", "SI", "I4", "@"]
        finally:
            os.close(fd)


async def test_kilogram_scale_normalised_to_grams(tmp_path: Path) -> None:
    async with SimulatedScale(unit="kg", decimals=3) as sim, SicsScale(sim.path) as scale:
        await scale.wait_for_state("online", 2.0)
        sim.set_load(1234.0)
        reading = await scale.read_weight()
        assert (reading.value, reading.unit, reading.grams) == (1.234, "kg", pytest.approx(1234.0))


async def test_scale_lost_unavailable_and_back(tmp_path: Path) -> None:
    link = str(tmp_path / "scale")
    async with SicsScale(link) as scale:
        async with SimulatedScale(link_path=link) as sim:
            await scale.wait_for_state("online", 2.0)
            sim.set_load(20.0)
            assert (await scale.read_weight()).grams == pytest.approx(20.0)
        await scale.wait_for_state("lost", 2.0)
        with pytest.raises(ScaleUnavailable):
            await scale.read_weight()
        async with SimulatedScale(link_path=link) as sim:
            await scale.wait_for_state("online", 2.0)
            sim.set_load(30.0)
            assert (await scale.read_weight()).grams == pytest.approx(30.0)
