"""Shared by the PLC fail-safe tests: run units through a simulated conveyor under a PlcLink and
check where every one of them physically ended up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from plc.client import PlcLink
from simulator.conveyor import SimulatedConveyor


async def until(cond: Callable[[], object], timeout_s: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@dataclass
class FlowReport:
    intended: dict[int, int] = field(default_factory=dict)  # track id -> lane asked for
    status: dict[int, str] = field(default_factory=dict)  # track id -> divert status
    physical: dict[int, int] = field(default_factory=dict)  # track id -> lane it left by

    def wrong_lane(self) -> list[tuple[int, str, int, int]]:
        """Units in a lane nobody decided on: a diverted unit not in its lane, a unit the controller
        never got an accepted divert for outside the reject lane, or an uncertain one outside both
        of its candidate lanes."""
        bad = []
        for tid, lane in self.physical.items():
            status = self.status.get(tid, "never_seen")
            if status == "accepted":
                ok = lane == self.intended[tid]
            elif status == "uncertain":
                # The controller says so (lane_unknown, quarantined): either candidate is the truth.
                ok = lane in (self.intended[tid], 0)
            else:
                ok = lane == 0
            if not ok:
                bad.append((tid, status, self.intended.get(tid, -1), lane))
        return bad

    def count(self, *statuses: str) -> int:
        return sum(1 for s in self.status.values() if s in statuses)


async def run_flow(
    sim: SimulatedConveyor,
    link: PlcLink,
    units: int,
    interval_s: float,
    disturb: Callable[[], Awaitable[None]] | None = None,
    lanes: int = 5,
    length_mm: float = 120.0,
) -> FlowReport:
    """Induct `units` units of `length_mm` every `interval_s` (or as soon as the infeed is clear),
    divert each to lane (id % lanes) + 1 as it arrives, run `disturb()` alongside, and wait until
    every unit has left the belt."""
    report = FlowReport()
    sim.on_exit = lambda tid, payload, lane: report.physical.__setitem__(tid, lane)

    async def feed() -> None:
        for i in range(units):
            sim.induct(length_mm, f"u{i}")
            await asyncio.sleep(interval_s)

    async def one(item_id: int) -> None:
        lane = item_id % lanes + 1
        report.intended[item_id] = lane
        report.status[item_id] = (await link.divert(item_id, lane, timeout_s=0.15)).status

    async def consume() -> None:
        pending: set[asyncio.Task[None]] = set()
        while True:
            arrival = await link.arrivals.get()
            task = asyncio.create_task(one(arrival.item_id))
            pending.add(task)
            task.add_done_callback(pending.discard)

    async with asyncio.TaskGroup() as tg:
        consumer = tg.create_task(consume())
        tg.create_task(feed())
        if disturb is not None:
            tg.create_task(disturb())
        await until(
            lambda: len(report.physical) >= units and sim.units_on_belt == 0 and sim.units_queued == 0,
            timeout_s=units * interval_s + 15,
            what="all units off the belt",
        )
        await asyncio.sleep(0.2)  # let late divert calls finish
        consumer.cancel()
    return report
