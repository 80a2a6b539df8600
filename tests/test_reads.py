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
    assert matcher.counters == {"matched": 0, "unmatched_events": 1, "units_without_event": 1}


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
