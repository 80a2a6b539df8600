"""Scales that report weights as a stream of frames: the common model and the async driver.

Toledo continuous output and A&D/CAS stream mode send frames unasked; NCI SCP-01 answers a "W"
poll. Either way the controller ends up with a stream of samples, and a weight is good for grading
only when the samples have been steady for a configurable window. The per-protocol modules
(`scale_toledo`, `scale_nci`, `scale_ad`) turn bytes into `ScaleSample` values without any I/O;
`StreamScale` keeps a port open, optionally polls, and answers `read_weight` from the samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from drivers.scale_sics import (
    ScaleError,
    ScaleOverload,
    ScaleProtocolError,
    ScaleTimeout,
    ScaleUnavailable,
    ScaleUnderload,
    ScaleUnstable,
    WeightReading,
)
from drivers.serial_port import (
    FramingError,
    LineFramer,
    LinkState,
    PortUnavailable,
    SerialDevice,
    SerialSettings,
)

_log = logging.getLogger(__name__)

__all__ = [
    "ScaleDecoder",
    "ScaleError",
    "ScaleFault",
    "ScaleSample",
    "StableWindow",
    "StreamScale",
]

OVERLOAD = "overload"
UNDERLOAD = "underload"


@dataclass(frozen=True, slots=True)
class ScaleSample:
    """One weight frame as the scale meant it.

    `fault` is None for a usable weight, "overload"/"underload" for a range fault, or a message for
    a scale-side error (RAM/ROM/calibration, not zeroed since power-up) or for a display that is not
    a weight at all (piece counts, percentages). `grams` is None with a fault.
    """

    received_at: float
    stable: bool
    value: float | None
    unit: str
    grams: float | None
    net: bool = False
    fault: str | None = None
    raw: bytes = b""
    # Display division (increment) in `unit`, when the protocol says it (Toledo SWA count-by).
    division: float | None = None

    @property
    def usable(self) -> bool:
        return self.fault is None and self.grams is not None


@dataclass(frozen=True, slots=True)
class ScaleFault:
    """Bytes that are not a frame of the configured protocol, as a value: the stream keeps going."""

    message: str
    received_at: float
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class ScaleNotice:
    """A well-formed frame that is not a weight (a status-only answer, a zero acknowledgement)."""

    kind: str
    received_at: float
    fault: str | None = None
    raw: bytes = b""


Decoded = ScaleSample | ScaleFault | ScaleNotice


class LineDecoder:
    """CR/LF-terminated scale output to decoded values, whatever the chunking. No I/O.

    Subclasses decode one complete line; framing errors become faults here, once for all.
    """

    max_line = 256

    def __init__(self) -> None:
        self._lines = LineFramer(self.max_line)

    def reset(self) -> None:
        self._lines.reset()

    def feed(self, data: bytes, now: float) -> list[Decoded]:
        out: list[Decoded] = []
        for line in self._lines.feed(data, now):
            if isinstance(line, FramingError):
                out.append(ScaleFault(line.message, now, line.raw))
            else:
                out.extend(self.decode(line, now))
        return out

    def decode(self, line: bytes, now: float) -> list[Decoded]:
        raise NotImplementedError


class ScaleDecoder(Protocol):
    def feed(self, data: bytes, now: float) -> list[Decoded]: ...

    def reset(self) -> None: ...


class StableWindow:
    """Decides from a run of samples whether the weight is steady enough to grade. Pure.

    A weight qualifies when the newest sample arrived after `since`, and every sample back to at
    least `window_s` before it is usable, flagged stable by the scale, within `tolerance_g` of the
    newest, and no two of them are more than `max_gap_s` apart (a gap means frames were lost, and a
    lost frame could have been the one showing motion).
    """

    def __init__(self, window_s: float, tolerance_g: float = 0.0, max_gap_s: float = 0.5) -> None:
        if window_s < 0 or tolerance_g < 0 or max_gap_s <= 0:
            raise ValueError("window_s and tolerance_g must be >= 0 and max_gap_s > 0")
        self.window_s = window_s
        self.tolerance_g = tolerance_g
        self.max_gap_s = max_gap_s

    def stable_reading(self, samples: deque[ScaleSample] | list[ScaleSample], since: float) -> ScaleSample | None:
        if not samples:
            return None
        newest = samples[-1]
        if newest.received_at < since or not newest.usable or not newest.stable:
            return None
        assert newest.grams is not None
        later_at = newest.received_at
        for sample in reversed(samples):
            if later_at - sample.received_at > self.max_gap_s:
                return None
            if not (sample.usable and sample.stable) or abs((sample.grams or 0.0) - newest.grams) > self.tolerance_g:
                return None
            if newest.received_at - sample.received_at >= self.window_s:
                return newest
            later_at = sample.received_at
        return None


def to_reading(sample: ScaleSample) -> WeightReading:
    assert sample.grams is not None and sample.value is not None
    return WeightReading(
        stable=sample.stable, value=sample.value, unit=sample.unit, grams=sample.grams, received_at=sample.received_at
    )


class StreamScale(SerialDevice):
    """A frame-streaming scale on a serial port, kept open for as long as the context is entered.

    `poll_command`, when set, is written every `poll_interval_s` while the port is open (NCI "W").
    Samples are kept for a few seconds; `read_weight` waits for a steady run of them (see
    `StableWindow`). Garbage, scale errors and port trouble are counted in `errors` by kind.
    The reconnect cap is 1 s: retrying a missing device node costs one failed open(), and a
    replugged cable must be read again within 2 s however long it was out.
    """

    def __init__(
        self,
        settings: SerialSettings,
        decoder_factory: Callable[[], ScaleDecoder],
        *,
        stability_window_s: float = 0.1,
        stability_tolerance_g: float = 0.0,
        poll_command: bytes | None = None,
        poll_interval_s: float = 0.05,
        reconnect_max_s: float = 1.0,
        history: int = 256,
        name: str = "scale",
    ) -> None:
        self.port = settings.port
        self.name = name
        self.errors: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.last_reading: WeightReading | None = None
        self.last_sample: ScaleSample | None = None
        self.poll_command = poll_command
        self.poll_interval_s = poll_interval_s
        # Long enough that a poll interval or two of silence is not mistaken for lost frames.
        self.window = StableWindow(
            stability_window_s, stability_tolerance_g, max_gap_s=max(0.5, 3 * poll_interval_s)
        )
        self.decoder = decoder_factory()
        self.notices: asyncio.Queue[ScaleNotice] = asyncio.Queue(maxsize=16)
        self._samples: deque[ScaleSample] = deque(maxlen=max(2, history))
        self._arrived = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._link = self._make_link(settings, name, reconnect_max_s)

    async def __aenter__(self) -> StreamScale:
        await self._link.__aenter__()
        if self.poll_command:
            self._poller = asyncio.create_task(self._poll(), name=f"scale-poll:{self.name}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await self._link.__aexit__(*exc_info)

    def write(self, data: bytes) -> None:
        try:
            self._link.write(data)
        except PortUnavailable as exc:
            self.errors["unavailable"] += 1
            raise ScaleUnavailable(str(exc)) from None

    async def _poll(self) -> None:
        while True:
            if self._link.state == "online" and self.poll_command:
                with contextlib.suppress(ScaleUnavailable):
                    self.write(self.poll_command)
            await asyncio.sleep(self.poll_interval_s)

    def _on_state(self, state: LinkState) -> None:
        # Half a frame from before the outage must not be glued to the first bytes after it, and
        # samples from before an outage say nothing about what is on the platform now.
        self.decoder.reset()
        self._samples.clear()
        self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = asyncio.Event()

    def _on_data(self, chunk: bytes, now: float) -> None:
        for item in self.decoder.feed(chunk, now):
            if isinstance(item, ScaleFault):
                self.errors["parse"] += 1
                _log.warning("%s: %s (%r)", self.name, item.message, item.raw[:40])
                continue
            if isinstance(item, ScaleNotice):
                self.counts[f"notice:{item.kind}"] += 1
                if self.notices.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        self.notices.get_nowait()
                self.notices.put_nowait(item)
                continue
            self.counts["sample"] += 1
            if item.fault is not None:
                self.counts[f"fault:{item.fault}"] += 1
            self.last_sample = item
            self._samples.append(item)
        self._wake()

    def _raise_fault(self, sample: ScaleSample) -> None:
        reading = self.last_reading
        if sample.fault == OVERLOAD:
            self.errors["overload"] += 1
            raise ScaleOverload(f"{self.name}: overload: weight above the weighing range", reading)
        if sample.fault == UNDERLOAD:
            self.errors["underload"] += 1
            raise ScaleUnderload(f"{self.name}: underload: weight below the weighing range", reading)
        self.errors["device"] += 1
        raise ScaleProtocolError(f"{self.name}: scale reports {sample.fault}", reading)

    async def read_weight(self, stable_only: bool = True, deadline_s: float = 0.25) -> WeightReading:
        """The weight once it has been steady for the stability window (any fresh weight if not
        `stable_only`); only samples that arrive after this call started can end the wait."""
        if self._link.state != "online":
            self.errors["unavailable"] += 1
            raise ScaleUnavailable(f"{self.name}: port {self.port} is not open")
        loop = asyncio.get_running_loop()
        since = loop.time()
        end = since + deadline_s
        while True:
            newest = self._samples[-1] if self._samples else None
            if newest is not None and newest.received_at >= since:
                if newest.fault is not None:
                    self._raise_fault(newest)
                if newest.usable:
                    self.last_reading = to_reading(newest)
                found = self.window.stable_reading(self._samples, since)
                if found is not None:
                    return to_reading(found)
                if not stable_only and newest.usable:
                    return to_reading(newest)
            remaining = end - loop.time()
            if remaining <= 0:
                break
            arrived = self._arrived
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await arrived.wait()
        fresh = self.last_reading if self.last_reading and self.last_reading.received_at >= since else None
        if fresh is not None:
            self.errors["unstable"] += 1
            raise ScaleUnstable(
                f"{self.name}: weight not steady for {self.window.window_s:.3f} s within {deadline_s:.3f} s "
                f"(last {fresh.grams:.2f} g)",
                fresh,
            )
        if self._link.state != "online":
            self.errors["unavailable"] += 1
            raise ScaleUnavailable(f"{self.name}: port {self.port} was lost while waiting for a weight")
        self.errors["timeout"] += 1
        raise ScaleTimeout(f"{self.name}: no weight frame within {deadline_s:.3f} s")
