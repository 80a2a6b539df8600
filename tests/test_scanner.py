"""Barcode scanner: framing over bytes (pure) and the SerialScanner transport over real ptys."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.scanner import (
    AIM_SYMBOLOGIES,
    FramingError,
    NoRead,
    ScannerFramer,
    ScanRead,
    SerialScanner,
    implausible,
    symbology_for_aim,
)
from simulator.scanner import SimulatedScanner

GS1_TEXT = "0109501101530003\x1d21SN0001234\x1d10LOT42"


def feed_all(framer: ScannerFramer, data: bytes, now: float = 1.0) -> list[ScanRead | NoRead | FramingError]:
    return framer.feed(data, now)


# -- framing, byte-exact fixtures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "aim", "symbology", "text"),
    [
        (b"]C10109501101530003\x1d21SN0001234\r\n", "]C1", "GS1-128", "0109501101530003\x1d21SN0001234"),
        (b"]C0ABC-123\r\n", "]C0", "Code 128", "ABC-123"),
        (b"]E09501101530003\r\n", "]E0", "EAN-13", "9501101530003"),
        (b"]E496385074\r\n", "]E4", "EAN-8", "96385074"),
        (b"]d1C02XK0ABJGH5\r\n", "]d1", "DataMatrix", "C02XK0ABJGH5"),
        (b"]d20109501101530003\x1d21X\r\n", "]d2", "GS1 DataMatrix", "0109501101530003\x1d21X"),
        (b"]Q1https://example.com/r?id=1\r\n", "]Q1", "QR", "https://example.com/r?id=1"),
        (b"]Q30109501101530003\r\n", "]Q3", "GS1 QR", "0109501101530003"),
        (b"]e00109501101530003\r\n", "]e0", "GS1 DataBar", "0109501101530003"),
        (b"]I009501101530003\r\n", "]I0", "Interleaved 2 of 5", "09501101530003"),
        (b"]A0RMA-1234567\r\n", "]A0", "Code 39", "RMA-1234567"),
        (b"]L0PDF DATA\x1e\x04\r\n", "]L0", "PDF417", "PDF DATA\x1e\x04"),
        (b"490154203237518\r\n", "", "Unknown", "490154203237518"),
        (b"]K9odd\r\n", "]K9", "Unknown (]K9)", "odd"),
        (b"]C3unlisted modifier\r\n", "]C3", "Code 128", "unlisted modifier"),
        (b"]Q1\xc3\xa9t\xc3\xa9\r\n", "]Q1", "QR", "\u00e9t\u00e9"),  # UTF-8 in QR
        (b"]C0\xe9\r\n", "]C0", "Code 128", "\u00e9"),  # not UTF-8: Latin-1, never rejected
    ],
)
def test_reads(raw: bytes, aim: str, symbology: str, text: str) -> None:
    events = feed_all(ScannerFramer(), raw, now=7.5)
    assert events == [ScanRead(text=text, aim=aim, symbology=symbology, received_at=7.5, raw=raw[:-2])]


@pytest.mark.parametrize("raw", [b"NR\r\n", b"NOREAD\r\n", b"NO READ\r\n", b"noread\r", b" NR \n"])
def test_no_reads(raw: bytes) -> None:
    assert feed_all(ScannerFramer(), raw) == [NoRead(received_at=1.0, raw=raw.rstrip(b"\r\n"))]


def test_custom_no_read_message() -> None:
    framer = ScannerFramer(no_read_messages=("<CAN>",))
    assert [type(e) for e in feed_all(framer, b"<CAN>\r\nNR\r\n")] == [NoRead, ScanRead]


@pytest.mark.parametrize("suffix", [b"\r\n", b"\r", b"\n", b"\n\r"])
def test_any_terminator_frames(suffix: bytes) -> None:
    events = feed_all(ScannerFramer(), b"]C0A" + suffix + b"]C0B" + suffix)
    assert [e.text for e in events if isinstance(e, ScanRead)] == ["A", "B"]


def test_noise_bytes_dropped_and_empty_lines_ignored() -> None:
    events = feed_all(ScannerFramer(), b"\x00\xff\r\n\r\n\x00]C0AB\xffC\x00\r\n   \r\n\x02]C0STX\x03\r\n")
    assert [(e.text, e.raw) for e in events if isinstance(e, ScanRead)] == [
        ("ABC", b"]C0ABC"),
        ("STX", b"\x02]C0STX\x03"),
    ]
    assert len(events) == 2


def test_overlong_line_is_discarded_then_resyncs() -> None:
    framer = ScannerFramer(max_line=16)
    events = framer.feed(b"]C0" + b"X" * 20, 1.0)
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert "longer than 16" in events[0].message
    # Rest of the overlong line still arriving: silently skipped, no second error.
    assert framer.feed(b"YYYYYYYYYYYYYYYYYYYYYYYY", 1.1) == []
    events = framer.feed(b"ZZ\r\n]C0OK\r\n", 1.2)
    assert events == [ScanRead(text="OK", aim="]C0", symbology="Code 128", received_at=1.2, raw=b"]C0OK")]


def test_line_of_exactly_max_line_is_accepted() -> None:
    framer = ScannerFramer(max_line=8)
    assert [e.text for e in framer.feed(b"]C012345\r\n", 1.0) if isinstance(e, ScanRead)] == ["12345"]


def test_aim_only_is_an_error() -> None:
    events = feed_all(ScannerFramer(), b"]C1\r\n")
    assert len(events) == 1 and isinstance(events[0], FramingError)


def test_partial_line_waits_for_terminator() -> None:
    framer = ScannerFramer()
    assert framer.feed(b"]C0ABC", 1.0) == []
    assert [e.text for e in framer.feed(b"DEF\r", 2.0) if isinstance(e, ScanRead)] == ["ABCDEF"]


def test_aim_table_names() -> None:
    for aim, name in AIM_SYMBOLOGIES.items():
        assert symbology_for_aim(aim) == name
    assert symbology_for_aim("") == "Unknown"


def test_bad_suffix_rejected() -> None:
    with pytest.raises(ValueError):
        ScannerFramer(suffix="crcr")  # type: ignore[arg-type]


# -- framing, properties -----------------------------------------------------------------------------


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30))
def test_arbitrary_bytes_never_raise_and_chunking_does_not_matter(data: bytes, cuts: list[int]) -> None:
    whole = ScannerFramer(max_line=64).feed(data, 0.0)
    framer = ScannerFramer(max_line=64)
    pieces: list[ScanRead | NoRead | FramingError] = []
    for chunk in _chunked(data, cuts):
        pieces.extend(framer.feed(chunk, 0.0))
    assert pieces == whole
    for event in whole:
        assert isinstance(event, ScanRead | NoRead | FramingError)
        if isinstance(event, ScanRead):
            assert "\r" not in event.text and "\n" not in event.text and event.text


_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S"]) | st.sampled_from(" \x1d"),
    min_size=1,
    max_size=60,
).filter(lambda t: t.strip(" \t") and t.strip().upper() not in {"NR", "NOREAD", "NO READ"})


def _gtin(body: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def _plausible_read(aim: str) -> st.SearchStrategy[tuple[str, str]]:
    """Text that symbology `aim` can carry: what a real scanner sends behind that identifier."""
    digits = st.text(alphabet="0123456789", min_size=1, max_size=30)
    if aim in ("]E0", "]E3"):
        text = st.text(alphabet="0123456789", min_size=12, max_size=12).map(_gtin)
    elif aim == "]E4":
        text = st.text(alphabet="0123456789", min_size=7, max_size=7).map(_gtin)
    elif aim[1] in "EI":
        text = digits
    elif aim in ("]A0", "]A1", "]A3"):
        text = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-.$/+%", min_size=1, max_size=30)
    elif aim[1] == "F":
        text = st.text(alphabet="0123456789-$:/.+", min_size=1, max_size=30)
    elif aim[1] in "dQzL":
        text = _TEXT
    else:
        text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E) | st.just("\x1d"),
                       min_size=1, max_size=60)
    return text.filter(lambda t: t.strip().upper() not in {"NR", "NOREAD", "NO READ"}).map(lambda t: (aim, t))


_READ = st.sampled_from(sorted(AIM_SYMBOLOGIES)).flatmap(_plausible_read)


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(_READ, min_size=1, max_size=15),
    noise=st.lists(st.sampled_from([b"", b"\x00", b"\xff", b"\r\n", b"\n", b"\r"]), min_size=15, max_size=15),
    suffix=st.sampled_from([b"\r\n", b"\r", b"\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=40),
)
def test_every_valid_frame_is_found_whatever_the_chunks(
    frames: list[tuple[str, str]], noise: list[bytes], suffix: bytes, cuts: list[int]
) -> None:
    stream = b"".join(
        n + aim.encode() + text.encode() + suffix for (aim, text), n in zip(frames, noise, strict=False)
    )
    framer = ScannerFramer()
    events: list[ScanRead | NoRead | FramingError] = []
    for chunk in _chunked(stream, cuts):
        events.extend(framer.feed(chunk, 0.0))
    assert [(e.aim, e.text) for e in events if isinstance(e, ScanRead)] == frames
    assert all(isinstance(e, ScanRead) for e in events)


# -- through a real pty ------------------------------------------------------------------------------


async def _next(scanner: SerialScanner, timeout: float = 2.0) -> ScanRead | NoRead:
    return await asyncio.wait_for(scanner.events.get(), timeout)


async def test_serial_scanner_reads_gs1_and_no_read(tmp_path: Path) -> None:
    link = str(tmp_path / "usb-Honeywell_Scanner-if00")
    async with SimulatedScanner(link_path=link) as sim, SerialScanner(link) as scanner:
        assert os.readlink(link) == sim.path
        await scanner.wait_for_state("online", 2.0)
        wire = sim.emit_read(GS1_TEXT, aim="]C1")
        assert wire == b"]C1" + GS1_TEXT.encode() + b"\r\n"
        sim.emit_no_read()
        sim.emit_read("RMA-1234567", aim="]A0")
        first, second, third = await _next(scanner), await _next(scanner), await _next(scanner)
        assert isinstance(first, ScanRead)
        assert (first.text, first.aim, first.symbology, first.raw) == (
            GS1_TEXT, "]C1", "GS1-128", wire[:-2]
        )
        assert "\x1d" in first.text
        assert isinstance(second, NoRead)
        assert isinstance(third, ScanRead) and third.symbology == "Code 39"
        assert scanner.counts == {"read": 2, "no_read": 1}
        assert scanner.state == "online"


@pytest.mark.parametrize("suffix", ["crlf", "cr", "lf"])
async def test_serial_scanner_without_aim_and_each_suffix(tmp_path: Path, suffix: str) -> None:
    async with (
        SimulatedScanner(aim=False, suffix=suffix) as sim,  # type: ignore[arg-type]
        SerialScanner(sim.path, suffix=suffix) as scanner,  # type: ignore[arg-type]
    ):
        await scanner.wait_for_state("online", 2.0)
        # Bytes dribbling in one at a time, as over a slow UART.
        for byte in sim.frame("490154203237518"):
            sim.emit_raw(bytes([byte]))
            await asyncio.sleep(0)
        event = await _next(scanner)
        assert isinstance(event, ScanRead)
        assert (event.text, event.aim, event.symbology) == ("490154203237518", "", "Unknown")


async def test_framing_errors_are_counted_not_queued(tmp_path: Path) -> None:
    async with SimulatedScanner() as sim, SerialScanner(sim.path) as scanner:
        await scanner.wait_for_state("online", 2.0)
        sim.emit_raw(b"X" * 600 + b"\r\n")
        sim.emit_read("AFTER", aim="]C0")
        event = await _next(scanner)
        assert isinstance(event, ScanRead) and event.text == "AFTER"
        assert scanner.errors["framing"] == 1


async def test_scanner_lost_and_back_online_at_same_link(tmp_path: Path) -> None:
    link = str(tmp_path / "by-id" / "usb-scanner")
    async with SerialScanner(link, reconnect_max_s=5.0) as scanner:
        sim = SimulatedScanner(link_path=link)
        async with sim:
            await scanner.wait_for_state("online", 2.0)
            sim.emit_read("BEFORE", aim="]C0")
            assert (await _next(scanner)).text == "BEFORE"  # type: ignore[union-attr]
        # The device is gone (as if unplugged): the driver must notice by itself.
        await scanner.wait_for_state("lost", 2.0)
        assert scanner.errors["lost"] == 1
        assert not os.path.lexists(link)
        await asyncio.sleep(0.5)  # let a few reconnect attempts fail
        assert scanner.state == "lost"
        assert scanner.errors["open"] >= 1

        async with SimulatedScanner(link_path=link) as again:
            started = time.monotonic()
            await scanner.wait_for_state("online", 2.0)
            assert time.monotonic() - started < 2.0
            again.emit_read("AFTER", aim="]C0")
            event = await _next(scanner)
            assert isinstance(event, ScanRead) and event.text == "AFTER"


async def test_scanner_starts_before_device_exists(tmp_path: Path) -> None:
    link = str(tmp_path / "late-scanner")
    async with SerialScanner(link) as scanner:
        await asyncio.sleep(0.2)
        assert scanner.state == "connecting"
        assert scanner.errors["open"] >= 1
        async with SimulatedScanner(link_path=link) as sim:
            await scanner.wait_for_state("online", 2.0)
            sim.emit_no_read()
            assert isinstance(await _next(scanner), NoRead)


async def test_leaving_context_stops_the_background_task(tmp_path: Path) -> None:
    async with SimulatedScanner() as sim:
        async with SerialScanner(sim.path, name="scanner-under-test") as scanner:
            await scanner.wait_for_state("online", 2.0)
            names = {t.get_name() for t in asyncio.all_tasks()}
            assert "serial-link:scanner-under-test" in names
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert "serial-link:scanner-under-test" not in names
        # The port was released: the simulator can still be written without error.
        sim.emit_read("nobody listening")


async def test_queue_overflow_drops_oldest(tmp_path: Path) -> None:
    async with SimulatedScanner() as sim, SerialScanner(sim.path, queue_size=2) as scanner:
        await scanner.wait_for_state("online", 2.0)
        for i in range(4):
            sim.emit_read(f"R{i}", aim="]C0")
        for _ in range(100):
            if scanner.counts["read"] == 4:
                break
            await asyncio.sleep(0.01)
        texts = [scanner.events.get_nowait().text for _ in range(2)]  # type: ignore[union-attr]
        assert texts == ["R2", "R3"]
        assert scanner.errors["overflow"] == 2


# -- plausibility gate: noise framed as a read never reaches identity ----------------------------------


@pytest.mark.parametrize(
    ("aim", "body", "reason"),
    [
        ("]E0", b"4006381333932", "check digit"),  # EAN-13 with its last digit off by one
        ("]E0", b"40063813339A1", "cannot be encoded"),
        ("]E4", b"9638507", "EAN-8"),
        ("]I0", b"12 34", "cannot be encoded"),
        ("]A0", b"abc-123", "cannot be encoded"),  # lower case needs Code 39 full ASCII (]A4)
        ("]C1", b"0109\x80\x81\xf0\xfe", "C1 control"),
        ("]C0", b"\xf0\xe0\xfe\xf0\xe0x", "bit 7"),
        ("]E0", b"\xe0\xf0", "cannot be encoded"),
        ("", b"AB\x07CD", "control byte"),
        ("]Q1", b"\xf0\x80\x80", "wrong baud"),  # a UTF-8 lead byte without its sequence
        ("]Q1", "\u0085x".encode(), "unprintable"),  # valid UTF-8 of a control character
    ],
)
def test_implausible_reads_are_named(aim: str, body: bytes, reason: str) -> None:
    why = implausible(aim, body)
    assert why is not None and reason in why


@pytest.mark.parametrize(
    ("aim", "body"),
    [
        ("]E0", b"4006381333931"),
        ("]E4", b"96385074"),
        ("]C1", b"010950600013435221ABC\x1d10LOT7"),
        ("]d2", b"\x1e\x1d01095060001343522112345"),
        ("]Q1", "étiquette".encode()),
        ("]C0", b"\xe9"),  # Latin-1 through FNC4
        ("]A4", b"abc-123"),
        ("", b"RMA-1234567"),
    ],
)
def test_plausible_reads_pass(aim: str, body: bytes) -> None:
    assert implausible(aim, body) is None


@settings(max_examples=300, deadline=None)
@example(data=b"\xc3\x80abcd", aim="]C1")  # Code 128 in UTF-8: let through, and no C1 control
@example(data=b"\x80abcd", aim="]C1")
@given(
    data=st.binary(min_size=1, max_size=200),
    aim=st.sampled_from(["]E0", "]E4", "]I0", "]A0", "]F0", "]C1", "]d2", "]Q1", "]L0", "]z0", "]e0", "]X0"]),
)
def test_gate_lets_no_forbidden_byte_through(data: bytes, aim: str) -> None:
    events = ScannerFramer().feed(aim.encode() + data + b"\r\n", 0.0)
    for event in events:
        if isinstance(event, ScanRead) and event.aim == aim:
            body = event.raw[3:]
            assert all(0x20 <= b < 0x7F or b in b"\x04\x1c\x1d\x1e\x1f" for b in body) or aim[1] in "CdQzLX"
            # C1 controls are refused as characters: a UTF-8 "À" (c3 80) is text, a lone 0x80 is not.
            assert not any(0x80 <= ord(ch) < 0xA0 for ch in event.text) or aim[1] in "dQzL"


def test_read_glued_behind_noise_is_salvaged_from_its_aim_identifier() -> None:
    noise = b"\xf0\x80\xfe\xe0]C\xf0\x91\x80"
    events = ScannerFramer(min_length=4).feed(noise + b"]C1010950600013435221ABC\r\n", 1.0)
    assert [type(e).__name__ for e in events] == ["GarbageRead", "ScanRead"]
    assert events[1].text == "010950600013435221ABC" and events[1].aim == "]C1"


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
async def test_wrong_baud_bursts_mixed_with_reads_feed_identity_only_real_reads(tmp_path: Path, seed: int) -> None:
    link = str(tmp_path / "scanner")
    labels = [f"01095060001343522{n:04d}" for n in range(40)]
    sent: list[str] = []
    async with (
        SimulatedScanner(link_path=link, seed=seed) as sim,
        SerialScanner(link, aim_required=True, min_length=4) as scanner,
    ):
        await scanner.wait_for_state("online", 2.0)
        for index, label in enumerate(labels):
            # Every fourth and fifth read goes out while the line runs at the wrong speed.
            sim.wrong_baud = index % 5 in (3, 4)
            sim.emit_read(label, aim="]C1")
            if not sim.wrong_baud:
                sent.append(label)
            await asyncio.sleep(0.01)
        sim.wrong_baud = False
        sim.emit_read("END-OF-TEST", aim="]C0")
        got: list[str] = []
        deadline = asyncio.get_running_loop().time() + 5.0
        while "END-OF-TEST" not in got and asyncio.get_running_loop().time() < deadline:
            async with asyncio.timeout(5.0):
                got.append((await scanner.events.get()).text)  # type: ignore[union-attr]
    assert got[:-1] == sent  # every read sent at the right speed, in order, and nothing else
    assert scanner.errors["garbage"] >= 1
    assert scanner.counts["read"] == len(sent) + 1
