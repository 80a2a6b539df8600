import asyncio
import time
from dataclasses import dataclass

from edge.reads import ReadMatcher


@dataclass
class Event:
    text: str
    received_at: float


async def test_reads_pair_with_units_in_order() -> None:
    matcher: ReadMatcher[Event] = ReadMatcher(before_s=0.2, after_s=0.2)
    now = time.monotonic()
    await matcher.add(Event("first", now - 0.05))
    await matcher.add(Event("second", now - 0.01))
    assert (await matcher.claim(now)).text == "first"
    assert (await matcher.claim(now)).text == "second"


async def test_stale_reads_are_dropped_and_counted() -> None:
    matcher: ReadMatcher[Event] = ReadMatcher(before_s=0.1, after_s=0.05)
    now = time.monotonic()
    await matcher.add(Event("old", now - 1.0))
    assert await matcher.claim(now) is None
    assert matcher.counters == {"matched": 0, "unmatched_events": 1, "units_without_event": 1, "missed_unit_reads": 0}


async def test_read_arriving_after_the_photo_eye_is_awaited() -> None:
    matcher: ReadMatcher[Event] = ReadMatcher(before_s=0.1, after_s=0.5)
    seen = time.monotonic()

    async def late() -> None:
        await asyncio.sleep(0.05)
        await matcher.add(Event("late", time.monotonic()))

    task = asyncio.create_task(late())
    read = await matcher.claim(seen)
    await task
    assert read is not None and read.text == "late"


async def test_a_read_after_the_window_belongs_to_nobody_else() -> None:
    matcher: ReadMatcher[Event] = ReadMatcher(before_s=0.1, after_s=0.05)
    seen = time.monotonic()
    await matcher.add(Event("next unit", seen + 10))
    assert await matcher.claim(seen) is None
    assert (await matcher.claim(seen + 10)).text == "next unit"


async def test_a_unit_without_a_read_does_not_take_the_next_units_read() -> None:
    matcher: ReadMatcher[Event] = ReadMatcher(before_s=0.25, after_s=0.3, arrival_lag_s=0.03)
    first = time.monotonic()
    await matcher.note_arrival(first)

    async def next_unit() -> None:
        await asyncio.sleep(0.1)
        await matcher.add(Event("B", time.monotonic()))  # the scanner reads B as its eye trips...
        await asyncio.sleep(0.01)
        await matcher.note_arrival(time.monotonic())  # ...and the PLC poll reports B a little later

    task = asyncio.create_task(next_unit())
    assert await matcher.claim(first) is None
    await task
    second = max(matcher._arrivals)
    read = await matcher.claim(second)
    assert read is not None and read.text == "B"


async def test_a_read_late_after_the_eye_still_belongs_to_its_unit() -> None:
    matcher: ReadMatcher[Event] = ReadMatcher(before_s=0.25, after_s=0.3, arrival_lag_s=0.03)
    seen = time.monotonic()
    await matcher.note_arrival(seen)

    async def slow_decode() -> None:
        await asyncio.sleep(0.08)
        await matcher.add(Event("A", time.monotonic()))

    task = asyncio.create_task(slow_decode())
    read = await matcher.claim(seen)
    await task
    assert read is not None and read.text == "A"


async def test_reads_of_units_declared_missed_are_never_claimed() -> None:
    """A unit passed the scan point while the PLC link was down: its read came in, but no arrival
    will ever claim it. The next unit reported must not take it as its own."""
    seen = time.monotonic()

    def matcher_with_a_missed_read() -> ReadMatcher[Event]:
        matcher: ReadMatcher[Event] = ReadMatcher(before_s=0.25, after_s=0.05)
        return matcher

    unguarded = matcher_with_a_missed_read()
    await unguarded.add(Event("missed unit", seen - 0.1))
    assert (await unguarded.claim(seen)).text == "missed unit"  # the wrong identity this prevents

    matcher = matcher_with_a_missed_read()
    await matcher.add(Event("missed unit", seen - 0.1))
    assert matcher.discard_before(seen) == 1
    await matcher.add(Event("fed in late, read before the cut", seen - 0.05))
    assert await matcher.claim(seen) is None
    assert matcher.counters["missed_unit_reads"] == 2 and matcher.counters["matched"] == 0
    # reads after the cut are claimed as usual; an older cut does not move it back
    assert matcher.discard_before(seen - 5) == 0
    await matcher.add(Event("next unit", seen + 0.5))
    assert (await matcher.claim(seen + 0.5)).text == "next unit"
