"""systemd watchdog: WATCHDOG=1 only while the controller is really making progress.

A ping from a timer proves only that a timer runs. Here each ping needs evidence, gathered since the
previous check:

- the event loop is responsive (this task woke up close to when it asked to);
- the PLC poll loop advances: its read counter moved, or the link is visibly reconnecting
  (a PLC that is switched off is an alarm, not a reason for systemd to restart us in a loop);
- no unit is stuck: when units are in flight, at least one finished within `unit_stall_s`.

When the evidence is missing the ping is withheld and the reason logged; systemd then kills and
restarts the daemon after WatchdogSec. The judgement is a pure function, tested without I/O.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("edge.watchdog")


@dataclass(frozen=True, slots=True)
class Sample:
    """What the watchdog looks at, taken once per check."""

    at: float  # time.monotonic()
    loop_lag_s: float  # how late the check woke up
    plc_reads: int  # PlcLink.counters["reads"], bumped on every poll request
    plc_state: str  # "online", "connecting" or "offline"
    plc_loop_alive: bool  # the link's background task has not ended
    in_flight: int  # units being decided
    units_done: int  # units decided so far (graded or failed to the reject lane)


@dataclass(frozen=True, slots=True)
class Verdict:
    healthy: bool
    reason: str


class ProgressJudge:
    """Compares each sample with the last one; keeps the time the last unit finished."""

    def __init__(self, *, max_loop_lag_s: float = 2.0, unit_stall_s: float = 10.0) -> None:
        self.max_loop_lag_s = max_loop_lag_s
        self.unit_stall_s = unit_stall_s
        self._last: Sample | None = None
        self._last_unit_progress: float | None = None

    def judge(self, sample: Sample) -> Verdict:
        last, self._last = self._last, sample
        if self._last_unit_progress is None or sample.in_flight == 0 or (
            last is not None and sample.units_done != last.units_done
        ):
            self._last_unit_progress = sample.at
        if sample.loop_lag_s > self.max_loop_lag_s:
            return Verdict(False, f"event loop blocked for {sample.loop_lag_s:.1f} s")
        if not sample.plc_loop_alive:
            return Verdict(False, "PLC link loop has ended")
        if last is not None and sample.plc_state == "online" and sample.plc_reads == last.plc_reads:
            return Verdict(False, "PLC link online but no poll since the last check")
        stalled_for = sample.at - self._last_unit_progress
        if sample.in_flight > 0 and stalled_for > self.unit_stall_s:
            return Verdict(False, f"{sample.in_flight} unit(s) in flight, none finished for {stalled_for:.0f} s")
        return Verdict(True, "making progress")


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC), or None when no watchdog is armed."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1e6 / 2


async def watchdog_loop(
    take_sample: Callable[[float, float], Sample],
    notify: Callable[[str], None],
    *,
    interval_s: float,
    judge: ProgressJudge | None = None,
) -> None:
    """Check every interval_s; ping systemd only on a healthy verdict. Logs each change of verdict."""
    judge = judge or ProgressJudge()
    healthy_before = True
    while True:
        asked = time.monotonic()
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        verdict = judge.judge(take_sample(now, now - asked - interval_s))
        if verdict.healthy:
            notify("WATCHDOG=1")
            if not healthy_before:
                log.warning("watchdog: progress again, pinging systemd")
        elif healthy_before:
            log.error("watchdog: withholding the ping: %s", verdict.reason)
        healthy_before = verdict.healthy


def sampler(plc: Any, pipeline: Any) -> Callable[[float, float], Sample]:
    """A take_sample for watchdog_loop reading a PlcLink and a Pipeline."""

    def take(at: float, loop_lag_s: float) -> Sample:
        runner = getattr(plc, "_runner", None)
        return Sample(
            at=at, loop_lag_s=loop_lag_s, plc_reads=int(plc.counters.get("reads", 0)), plc_state=str(plc.state),
            plc_loop_alive=runner is not None and not runner.done(), in_flight=int(pipeline.in_flight),
            units_done=sum(pipeline.by_grade.values()) + pipeline.errors.get("pipeline:crash", 0),
        )

    return take


__all__ = ["ProgressJudge", "Sample", "Verdict", "sampler", "watchdog_interval_s", "watchdog_loop"]
