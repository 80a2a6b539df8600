"""The watchdog pings systemd only on evidence of progress.

The judge is pure and tested on samples; the loop runs on a real event loop, with the stall made
real (a blocking call on the loop, a PLC poll counter that stops moving). The daemon under a
notify socket is covered in test_ops_run.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from types import SimpleNamespace

from edge.watchdog import ProgressJudge, Sample, sampler, watchdog_interval_s, watchdog_loop

from .conftest import until


def _sample(at: float, **kw: object) -> Sample:
    values = {"loop_lag_s": 0.0, "plc_reads": int(at * 100), "plc_state": "online", "plc_loop_alive": True,
              "in_flight": 0, "units_done": 0, **kw}
    return Sample(at=at, **values)  # type: ignore[arg-type]


def test_healthy_while_polls_advance() -> None:
    judge = ProgressJudge()
    assert all(judge.judge(_sample(t)).healthy for t in range(1, 10))


def test_online_plc_without_polls_is_a_stall() -> None:
    judge = ProgressJudge()
    assert judge.judge(_sample(1, plc_reads=5)).healthy
    verdict = judge.judge(_sample(2, plc_reads=5))
    assert not verdict.healthy and "no poll" in verdict.reason


def test_a_plc_that_is_away_while_the_link_retries_is_not_a_daemon_fault() -> None:
    judge = ProgressJudge()
    for t in range(1, 5):
        assert judge.judge(_sample(t, plc_reads=5, plc_state="offline")).healthy
    assert not judge.judge(_sample(6, plc_reads=5, plc_state="offline", plc_loop_alive=False)).healthy


def test_event_loop_lag() -> None:
    assert not ProgressJudge(max_loop_lag_s=1.0).judge(_sample(1, loop_lag_s=1.5)).healthy


def test_units_stuck_in_flight() -> None:
    judge = ProgressJudge(unit_stall_s=5)
    assert judge.judge(_sample(0, in_flight=2, units_done=10)).healthy
    assert judge.judge(_sample(3, in_flight=2, units_done=10)).healthy
    assert not judge.judge(_sample(6, in_flight=2, units_done=10)).healthy
    assert judge.judge(_sample(7, in_flight=2, units_done=11)).healthy  # one finished: progress again
    assert judge.judge(_sample(20, in_flight=0, units_done=11)).healthy  # idle belt is fine


def test_interval_from_systemd_environment() -> None:
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None


async def test_loop_withholds_pings_while_stalled_and_resumes() -> None:
    plc = SimpleNamespace(counters={"reads": 0}, state="online", _runner=asyncio.create_task(asyncio.sleep(60)))
    pipeline = SimpleNamespace(in_flight=0, by_grade=Counter(), errors=Counter())
    pings: list[tuple[float, int]] = []
    checks: list[Sample] = []  # every sample the loop judged, so the test counts checks, not seconds
    polling = True
    take = sampler(plc, pipeline)

    def counted(at: float, lag: float) -> Sample:
        checks.append(take(at, lag))
        return checks[-1]

    async def poll() -> None:
        while True:
            if polling:
                plc.counters["reads"] += 1
            await asyncio.sleep(0.01)

    async def checked(n: int) -> None:
        """Until the loop has judged `n` more samples."""
        target = len(checks) + n
        await until(lambda: len(checks) >= target, what=f"{n} more watchdog checks")

    poller = asyncio.create_task(poll())
    loop = asyncio.create_task(watchdog_loop(counted, lambda m: pings.append((time.monotonic(), 0)),
                                             interval_s=0.1, judge=ProgressJudge(max_loop_lag_s=0.3)))
    await until(lambda: len(pings) >= 3, what="pings while polls advance")
    polling = False  # poll loop wedged while the link still says online
    # The first check after the wedge may still see a poll made just before it; none after that may.
    await checked(1)
    withheld_from = len(pings)
    await checked(4)
    assert len(pings) == withheld_from
    polling = True
    await until(lambda: len(pings) >= withheld_from + 2, what="pings again once polls advance")
    resumed = len(pings)
    time.sleep(0.6)  # the event loop itself is blocked: the check that wakes after it is late
    await checked(1)
    assert checks[-1].loop_lag_s > 0.3
    assert len(pings) == resumed
    for task in (loop, poller, plc._runner):
        task.cancel()
    await asyncio.gather(loop, poller, plc._runner, return_exceptions=True)
