"""Scanner options: no-suffix (inter-character timeout) framing, duplicate suppression, configurable
no-read texts, Honeywell host trigger, and unplug/replug and wrong-baud faults over real ptys."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.scanner import (
    TRIGGER_OFF,
    TRIGGER_ON,
    DuplicateFilter,
    FramingError,
    IdleFramer,
    NoRead,
    ScannerFramer,
    ScanRead,
    SerialScanner,
)
from simulator.scanner import SimulatedScanner

from .conftest import until

# ISO/IEC 15434 envelope: "[)>" RS "06" GS ... RS EOT; the separators must reach the identity parser.
ENVELOPE = "[)>\x1e06\x1d1PABC-123\x1dS12345678\x1e\x04"

# -- idle (no suffix) framing, pure ---------------------------------------------------------------------


def test_idle_framer_splits_on_pauses() -> None:
    framer = ScannerFramer(suffix="none", intercharacter_timeout_s=0.05)
    assert framer.feed(b"]E0400638", 1.00) == []
    assert framer.feed(b"1337335", 1.02) == []  # same read: 20 ms apart
    assert framer.flush(1.06) == []  # pause not long enough yet
    events = framer.feed(b"]C0SECOND", 1.20)  # the pause closes the first read
    assert [(e.text, e.received_at) for e in events if isinstance(e, ScanRead)] == [("4006381337335", 1.02)]
    events = framer.flush(1.30)
    assert [(e.aim, e.text, e.received_at) for e in events if isinstance(e, ScanRead)] == [("]C0", "SECOND", 1.20)]
    assert framer.flush(2.0) == []


def test_idle_framer_no_read_and_overlong() -> None:
    framer = ScannerFramer(suffix="none", max_line=16, no_read_messages=["ERR"])
    framer.feed(b"err", 1.0)
    assert [type(e) for e in framer.flush(2.0)] == [NoRead]
    out = framer.feed(b"X" * 20, 3.0)
    assert len(out) == 1 and isinstance(out[0], FramingError)
    assert framer.feed(b"YYY", 3.01) == [] and framer.flush(4.0) == []  # the rest of it is dropped too
    framer.feed(b"OK", 5.0)
    assert [e.text for e in framer.flush(6.0) if isinstance(e, ScanRead)] == ["OK"]


def test_configurable_no_read_texts() -> None:
    framer = ScannerFramer(no_read_messages=["NG", "<NoRead>"])
    events = framer.feed(b"NG\r\n<noread>\r\nNR\r\n", 1.0)
    assert [type(e) for e in events] == [NoRead, NoRead, ScanRead]


def test_power_up_banner_dropped_by_pattern() -> None:
    framer = ScannerFramer(banner_patterns=[r"^Honeywell .* Rev", r"^\*\*\* ?POWER"])
    events = framer.feed(b"\x00\x00Honeywell 1900GSR-2 Rev 6.2.0\r\n***POWER UP***\r\n]C0REAL\r\n", 1.0)
    assert [e.text for e in events if isinstance(e, ScanRead)] == ["REAL"] and len(events) == 1
    assert framer.banners_dropped == 2


def test_banner_patterns_must_compile() -> None:
    from pydantic import ValidationError

    from edge.config import ScannerSettings

    with pytest.raises(ValidationError):
        ScannerSettings(port="x", banner_patterns=["(unclosed"])


def test_separators_kept_nul_and_ff_dropped() -> None:
    framer = ScannerFramer()
    events = framer.feed(b"\x00\xff]Q1" + ENVELOPE.encode() + b"\r\n", 1.0)
    assert [e.text for e in events if isinstance(e, ScanRead)] == [ENVELOPE]


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b.strip(b"\x00\xff \t")), min_size=1,
                   max_size=10),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=30),
)
def test_idle_framing_finds_every_read_whatever_the_chunks(reads: list[bytes], cuts: list[int]) -> None:
    # Bytes of one read arrive 1 ms apart; reads are 100 ms apart; the timeout is 30 ms.
    framer = IdleFramer(timeout_s=0.03, max_line=64)
    out: list[bytes | FramingError] = []
    t = 0.0
    for read in reads:
        points = sorted({c % (len(read) + 1) for c in cuts})
        prev = 0
        for p in [*points, len(read)]:
            out.extend(framer.feed(read[prev:p], t))
            t += 0.001
            prev = p
        t += 0.1
    out.extend(framer.flush(t))
    assert out == [r.translate(None, b"\x00\xff") for r in reads if r.translate(None, b"\x00\xff")]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000), times=st.lists(st.floats(0, 0.2), min_size=1, max_size=40))
def test_idle_framing_never_raises(data: bytes, times: list[float]) -> None:
    framer = ScannerFramer(suffix="none", max_line=64)
    t = 0.0
    step = max(1, len(data) // len(times))
    for i, dt in enumerate(times):
        t += dt
        for event in framer.feed(data[i * step:(i + 1) * step], t):
            assert isinstance(event, ScanRead | NoRead | FramingError)
    framer.flush(t + 1)


def test_duplicate_filter_window_counts_from_accepted_read() -> None:
    dup = DuplicateFilter(1.0)
    assert dup.accept("]C1", "A", 0.0)
    assert not dup.accept("]C1", "A", 0.5)
    assert not dup.accept("]C1", "A", 0.9)
    assert dup.accept("]C1", "A", 1.0)  # a label left in view is re-reported once per window
    assert dup.accept("]C1", "B", 1.1)
    assert dup.accept("]E0", "A", 1.2)  # another symbology is another symbol
    dup.clear()
    assert dup.accept("]C1", "A", 1.3)
    assert DuplicateFilter(0.0).accept("", "A", 0.0) and DuplicateFilter(0.0).accept("", "A", 0.0)


# -- over real ptys ---------------------------------------------------------------------------------------


async def _drain(scanner: SerialScanner, settle_s: float = 0.2) -> list[ScanRead | NoRead]:
    """Whatever is queued after `settle_s`: only to show that nothing more came."""
    await asyncio.sleep(settle_s)
    out = []
    while not scanner.events.empty():
        out.append(scanner.events.get_nowait())
    return out


async def _events(scanner: SerialScanner, count: int, timeout_s: float = 5.0) -> list[ScanRead | NoRead]:
    """The next `count` events, however long the machine takes to deliver them (up to `timeout_s`)."""
    async with asyncio.timeout(timeout_s):
        return [await scanner.events.get() for _ in range(count)]


async def _events_until(scanner: SerialScanner, last: str, timeout_s: float = 5.0) -> list[ScanRead | NoRead]:
    """Events up to and including the read of `last`, sent after everything the test looks at."""
    out: list[ScanRead | NoRead] = []
    async with asyncio.timeout(timeout_s):
        while not out or not (isinstance(out[-1], ScanRead) and out[-1].text == last):
            out.append(await scanner.events.get())
    return out


async def test_no_suffix_scanner_over_pty(tmp_path: Path) -> None:
    link = str(tmp_path / "scanner")
    async with (
        SimulatedScanner(link_path=link, suffix="none") as sim,
        SerialScanner(link, suffix="none", intercharacter_timeout_s=0.04) as scanner,
    ):
        await scanner.wait_for_state("online", 2.0)
        sim.emit_read("4006381333931", aim="]E0")
        # Only the pause after its last byte ends the read: it comes out before the next one is sent.
        event = await asyncio.wait_for(scanner.events.get(), 5.0)
        assert isinstance(event, ScanRead) and (event.aim, event.text) == ("]E0", "4006381333931")
        sim.emit_read("RMA-1234567", aim="]A0")
        event = await asyncio.wait_for(scanner.events.get(), 5.0)
        assert isinstance(event, ScanRead) and event.text == "RMA-1234567"


async def test_duplicates_suppressed_and_counted(tmp_path: Path) -> None:
    link = str(tmp_path / "scanner")
    async with SimulatedScanner(link_path=link) as sim, SerialScanner(link, duplicate_window_s=0.5) as scanner:
        await scanner.wait_for_state("online", 2.0)
        for _ in range(3):
            sim.emit_read("0100614141999996", aim="]C1")
        sim.emit_read("OTHER", aim="]C0")
        events = await _events_until(scanner, "OTHER")
        assert [e.text for e in events if isinstance(e, ScanRead)] == ["0100614141999996", "OTHER"]
        assert scanner.counts["duplicate"] == 2
        await asyncio.sleep(0.5)  # the window has passed (it can only have passed by more)
        sim.emit_read("0100614141999996", aim="]C1")
        assert [e.text for e in await _events(scanner, 1) if isinstance(e, ScanRead)] == ["0100614141999996"]
        assert scanner.counts["duplicate"] == 2


async def test_host_trigger_honeywell(tmp_path: Path) -> None:
    link = str(tmp_path / "scanner")
    async with (
        SimulatedScanner(link_path=link, triggered=True) as sim,
        SerialScanner(link, trigger_window_s=0.1, duplicate_window_s=10.0) as scanner,
    ):
        await scanner.wait_for_state("online", 2.0)
        sim.present("0100614141999996")
        sim.present(None)
        sim.present("0100614141999996")  # same label on the next unit: a trigger clears the filter
        await asyncio.sleep(0.05)
        assert scanner.events.empty()  # a triggered scanner says nothing unasked
        for _ in range(3):
            await scanner.trigger()
            await asyncio.sleep(0.15)  # past the 0.1 s window: its SYN U CR goes out before the next trigger
        events = await _events(scanner, 3)
        assert [type(e) for e in events] == [ScanRead, NoRead, ScanRead]
        await until(lambda: sim.untriggers == 3, what="the third SYN U CR")
        assert scanner.events.empty()
        assert bytes(sim.received).count(TRIGGER_ON) == 3
        assert bytes(sim.received).count(TRIGGER_OFF) == 3
        assert (sim.triggers, sim.untriggers) == (3, 3)


async def test_trigger_while_unplugged_raises(tmp_path: Path) -> None:
    from drivers.serial_port import PortUnavailable

    async with SerialScanner(str(tmp_path / "missing")) as scanner:
        with pytest.raises(PortUnavailable):
            await scanner.trigger()


async def test_unplug_replug_nothing_lost_or_invented(tmp_path: Path) -> None:
    link = str(tmp_path / "by-id" / "usb-Honeywell_1900-if00")
    sim = SimulatedScanner(link_path=link)
    async with SerialScanner(link) as scanner:
        async with sim:
            await scanner.wait_for_state("online", 2.0)
            sent = [f"BEFORE-{i}" for i in range(5)]
            for text in sent:
                sim.emit_read(text, aim="]C0")
            got = await _events_until(scanner, sent[-1])
            sim.write(b"]C0HALF-A-REA")  # cable pulled in the middle of a read
            await asyncio.sleep(0.05)
            sim.unplug()
            await scanner.wait_for_state("lost", 2.0)
            await asyncio.sleep(2.5)  # long enough for the backoff to reach its cap
            sim.replug()
            loop = asyncio.get_running_loop()
            back = loop.time()
            await scanner.wait_for_state("online", 2.0)
            assert loop.time() - back < 2.0
            after = [f"AFTER-{i}" for i in range(5)]
            for text in after:
                sim.emit_read(text, aim="]C0")
            got += await _events_until(scanner, after[-1])
            got += await _drain(scanner)  # and nothing after it
        assert [e.text for e in got if isinstance(e, ScanRead)] == sent + after
        assert scanner.errors["lost"] >= 1


async def test_wrong_baud_invents_no_reads(tmp_path: Path) -> None:
    link = str(tmp_path / "scanner")
    async with SimulatedScanner(link_path=link) as sim, SerialScanner(link, max_line=64) as scanner:
        await scanner.wait_for_state("online", 2.0)
        sim.wrong_baud = True
        for i in range(20):
            sim.emit_read(f"LABEL-{i}")
        sim.wrong_baud = False
        sim.emit_garbage(100)
        sim.write(b"\r\n")
        sim.emit_read("GOOD", aim="]C0")
        events = await _events_until(scanner, "GOOD")
        reads = [e.text for e in events if isinstance(e, ScanRead)]
        assert not any(t.startswith("LABEL") for t in reads)
        assert scanner.state == "online"


async def test_triggered_read_goes_to_the_unit_that_triggered_it() -> None:
    # A late answer to an earlier trigger is never taken by the next unit, and a read that arrives
    # close to the next unit's photo-eye edge still belongs to the trigger that caused it.
    from edge.reads import ReadMatcher

    reads: ReadMatcher[ScanRead] = ReadMatcher(before_s=0.25, after_s=0.3)
    now = time.monotonic()
    await reads.note_arrival(now - 0.05)
    await reads.add(ScanRead("STALE", "]C1", "GS1-128", now - 0.01, b""))  # before this trigger
    await reads.note_arrival(now + 0.02)  # the next unit's edge, nearer to the read below
    await reads.add(ScanRead("MINE", "]C1", "GS1-128", now + 0.03, b""))
    assert (await reads.claim_triggered(now)).text == "MINE"  # type: ignore[union-attr]
    assert reads.counters["unmatched_events"] == 1
    assert await reads.claim_triggered(time.monotonic()) is None  # nothing answered: a no-read
    assert reads.counters["units_without_event"] == 1
    # The pipeline does not trigger for a unit once the next one is at the eye (it would read that).
    assert reads.later_arrival_seen(now - 0.05) and not reads.later_arrival_seen(now + 0.02)


async def test_garbage_counter_raises_then_clears_the_device_garbage_alarm(tmp_path: Path) -> None:
    from edge.alarms import Alarms
    from edge.contract import Envelope, Topics
    from edge.daemon import GarbageWatch
    from edge.journal import Journal

    async with Journal(tmp_path / "j.db") as journal:
        alarms = Alarms(journal, Envelope("edge-t"), Topics("returns/v1", "s", "l"))
        watch = GarbageWatch(quiet_s=5.0)
        await watch.check(alarms, "scanner", 0, 0.0)
        assert not alarms.active
        await watch.check(alarms, "scanner", 3, 1.0)  # three garbage lines since the last look
        assert ("device_garbage", "scanner") in alarms.active
        await watch.check(alarms, "scanner", 5, 2.0)
        assert alarms.active[("device_garbage", "scanner")].count == 2
        await watch.check(alarms, "scanner", 5, 4.0)  # quiet, but not for long enough
        assert ("device_garbage", "scanner") in alarms.active
        await watch.check(alarms, "scanner", 5, 7.5)
        assert ("device_garbage", "scanner") not in alarms.active
        assert alarms.raised_total["device_garbage"] == 2
