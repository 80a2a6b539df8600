"""Lane availability: which sort lanes may take a unit right now, from what the robot cells say.

A lane served by a robot cell is out of service while the cell is not ONLINE on its retained
connection topic (OFFLINE, CONNECTIONBROKEN, or never heard from) or while the lane has no free
place. Free places come from `lane_capacity` in the cell's state messages (the lane of the order
the message is about) and are counted down by one for every unit sent to the lane since that
report, so a burst of units cannot overfill a lane between two reports.

A unit whose lane is out of service goes to the reject/manual lane (the belt end, which always
takes a unit) with the reason in its decision and an alarm: never to some other lane.

The last reports survive a controller restart (journal `meta`, saved within a second of a
change): a lane that was full stays full, counted down by the orders sent since its report,
instead of taking units again until its cell next reports. Reports older than
CAPACITY_TRUSTED_S are not restored: after a long stop the cell's figure is news to nobody.

`LaneGuard` is pure state, tested without I/O; `LaneRouter` adds the alarms; `save_capacity` and
`load_capacity` are the journal side.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from collections import OrderedDict

from edge.alarms import Alarms
from edge.config import StationConfig
from edge.grading import Verdict
from edge.journal import read_meta, write_meta

log = logging.getLogger("edge.lanes")

REMEMBERED_DECISIONS = 5000
CAPACITY_KEY = "lane_capacity"
# A restart within this of a cell's last report keeps that report (crash, deploy, reboot).
CAPACITY_TRUSTED_S = 600.0


class LaneGuard:
    def __init__(self, config: StationConfig, min_free: int = 0) -> None:
        self.reject_lane = config.reject_lane
        self.cell_of_lane = {lane.id: lane.cell for lane in config.lanes}
        self.lane_names = {lane.id: lane.name for lane in config.lanes}
        self.min_free = min_free
        self.cell_state: dict[str, str] = {}
        self.free: dict[int, int] = {}
        self.reported: dict[int, int] = {}  # the lane's last reported free places, before counting down
        self.reported_at: dict[int, float] = {}  # when (time.time()) that report came
        self.unsaved = False  # a report came that the journal does not have yet
        self._lane_of_decision: OrderedDict[str, int] = OrderedDict()
        # Which report a decision's place was taken from (its lane's report count then): a place
        # given back after a later report was already counted by that report.
        self._reports_seen: dict[int, int] = {}
        self._taken_under: OrderedDict[str, int] = OrderedDict()

    def on_connection(self, cell: str, state: str) -> None:
        self.cell_state[cell] = state

    def on_capacity(self, cell: str, decision_id: str, lane_capacity: int | None) -> int | None:
        """Apply a reported capacity; returns the lane it was about (None if not ours to know)."""
        lane = self._lane_of_decision.get(decision_id)
        if lane_capacity is None or lane is None or self.cell_of_lane.get(lane) != cell:
            return None
        self.free[lane] = self.reported[lane] = lane_capacity
        self.reported_at[lane] = time.time()
        self._reports_seen[lane] = self._reports_seen.get(lane, 0) + 1
        self.unsaved = True
        return lane

    def reports(self) -> dict[int, tuple[int, float]]:
        """The last report of each lane: (free places reported, when), as `save_capacity` keeps them."""
        return {lane: (self.reported[lane], self.reported_at[lane]) for lane in self.reported_at}

    def restore(
        self, reports: dict[int, tuple[int, float]], orders: list[tuple[str, int, float]], now: float | None = None
    ) -> list[int]:
        """Carry on from the last run: `reports` as `reports()` gave them, `orders` the recent orders
        (decision_id, lane, queued_at), newest first. Each lane's report, if recent, counted down by
        the orders queued after it; reports about those orders apply to their lanes again. Returns
        the lanes whose report was restored."""
        now = time.time() if now is None else now
        for decision_id, lane, _ in reversed(orders[:REMEMBERED_DECISIONS]):
            self._lane_of_decision[decision_id] = lane
        restored = []
        for lane, (capacity, at) in sorted(reports.items()):
            if lane not in self.cell_of_lane or lane == self.reject_lane or now - at > CAPACITY_TRUSTED_S:
                continue
            sent = sum(1 for _, order_lane, queued_at in orders if order_lane == lane and queued_at > at)
            self.reported[lane], self.reported_at[lane] = capacity, at
            self.free[lane] = max(0, capacity - sent)
            restored.append(lane)
        return restored

    def why_unavailable(self, lane: int) -> str | None:
        if lane == self.reject_lane:
            return None  # the belt end always takes a unit: it is where the PLC sends anything unsure
        cell = self.cell_of_lane.get(lane)
        if cell is None:
            return None
        state = self.cell_state.get(cell)
        if state != "ONLINE":
            return f"robot cell {cell} is {state or 'not heard from'}"
        free = self.free.get(lane)
        if free is not None and free <= self.min_free:
            reported = self.reported.get(lane, free)
            if reported == free:
                return f"lane full ({cell} reported {free} free place(s))"
            # Counted down by the orders sent since (not picked yet, as far as the cell has said):
            # a broker outage keeps cells from reporting, so this is the usual reason then.
            return (f"lane full ({cell} reported {reported} free place(s), {reported - free} unit(s) sent "
                    "there since, no report after them)")
        return None

    def route(self, lane: int, decision_id: str) -> tuple[int, str | None]:
        """The lane a unit meant for `lane` goes to, and why it does not go there (None if it does)."""
        why = self.why_unavailable(lane)
        if why is not None:
            lane = self.reject_lane
        self.count_order(lane, decision_id)
        return lane, why

    def reroute(self, decision_id: str, lane: int) -> None:
        """The unit of `decision_id` went to `lane` after all (its divert failed: the reject lane),
        and that lane's cell gets its order: the place it took on the lane it was routed to is
        given back, unless a report for that lane came since (the cell's figure did not count a unit
        it never had an order for), and it counts on `lane` instead."""
        if self._lane_of_decision.get(decision_id) == lane:
            return
        self.give_back(decision_id)
        self.count_order(lane, decision_id)

    def give_back(self, decision_id: str) -> None:
        """The unit of `decision_id` never reached the lane it was counted on (its divert failed, or
        it left by another lane and its decision was superseded): that place is free again, unless
        a report for that lane came since (the cell's figure did not count a unit it never had)."""
        # The lane stays known: the cell's answer to a cancellation still reports on that lane.
        old = self._lane_of_decision.get(decision_id)
        taken_under = self._taken_under.pop(decision_id, None)
        if old is not None and old in self.free and taken_under == self._reports_seen.get(old, 0):
            self.free[old] = min(self.free[old] + 1, self.reported.get(old, self.free[old] + 1))

    def count_order(self, lane: int, decision_id: str) -> None:
        """An order for `lane` went to its cell: one free place fewer until the cell reports again,
        and the cell's reports about `decision_id` are about that lane. Orders not sent through
        `route` (a corrected decision's order to the lane the unit really took) count the same."""
        if lane in self.free:
            self.free[lane] = max(0, self.free[lane] - 1)
            self._taken_under[decision_id] = self._reports_seen.get(lane, 0)
            while len(self._taken_under) > REMEMBERED_DECISIONS:
                self._taken_under.popitem(last=False)
        self._lane_of_decision[decision_id] = lane
        while len(self._lane_of_decision) > REMEMBERED_DECISIONS:
            self._lane_of_decision.popitem(last=False)


def save_capacity(db: sqlite3.Connection, reports: dict[int, tuple[int, float]]) -> None:
    """Keep the lanes' last reports (LaneGuard.reports) in the journal."""
    write_meta(db, CAPACITY_KEY, json.dumps({str(lane): [capacity, at] for lane, (capacity, at) in reports.items()}))


def load_capacity(db: sqlite3.Connection) -> tuple[dict[int, tuple[int, float]], list[tuple[str, int, float]]]:
    """What LaneGuard.restore needs: the saved reports and the recent orders with their lanes. A
    saved value that does not parse is logged and ignored (the lanes start without a limit)."""
    saved = read_meta(db, CAPACITY_KEY)
    reports: dict[int, tuple[int, float]] = {}
    if saved is not None:
        try:
            for lane, (capacity, at) in json.loads(saved).items():
                if isinstance(capacity, int) and capacity >= 0 and isinstance(at, int | float):
                    reports[int(lane)] = (capacity, float(at))
        except (ValueError, TypeError, AttributeError) as exc:
            log.error("saved lane capacity is unreadable, starting without it: %s", exc)
            reports = {}
    orders = db.execute(
        "SELECT o.decision_id, u.lane, o.queued_at FROM orders o JOIN units u ON u.decision_id = o.decision_id"
        " WHERE u.lane IS NOT NULL ORDER BY o.queued_at DESC LIMIT ?",
        (REMEMBERED_DECISIONS,),
    ).fetchall()
    return reports, [(str(d), int(lane), float(at)) for d, lane, at in orders]


class LaneRouter:
    """LaneGuard plus alarms, one active alarm per lane and outage: lane_full (raised when a unit
    overflows, cleared when the cell reports room) and lane_unavailable (raised when a unit is turned
    away because the lane's cell is not ONLINE, cleared when it is back); further units turned away
    meanwhile only count into the active alarm. cell_offline is the daemon's."""

    def __init__(self, guard: LaneGuard, alarms: Alarms) -> None:
        self.guard = guard
        self.alarms = alarms
        self.overflowed = 0

    async def route(self, verdict: Verdict, lane: int, decision_id: str) -> tuple[Verdict, int]:
        routed, why = self.guard.route(lane, decision_id)
        if why is None:
            return verdict, routed
        self.overflowed += 1
        name = self.guard.lane_names.get(lane, str(lane))
        reason = f"lane {lane} ({name}) out of service: {why}: reject/manual lane {routed}"
        if why.startswith("lane full"):
            await self.alarms.raise_("lane_full", f"lane {lane} ({name}) is full: units go to lane {routed}",
                                     subject=f"lane-{lane}")
        else:
            await self.alarms.raise_("lane_unavailable", f"lane {lane} ({name}) out of service: {why}: units go "
                                     f"to the reject/manual lane {routed}", subject=f"lane-{lane}")
        return dataclasses.replace(verdict, disposition="quarantine", reasons=(*verdict.reasons, reason)), routed

    async def on_connection(self, cell: str, state: str) -> None:
        self.guard.on_connection(cell, state)
        if state != "ONLINE":
            return
        for lane, lane_cell in sorted(self.guard.cell_of_lane.items()):
            active = self.alarms.active.get(("lane_unavailable", f"lane-{lane}"))
            if lane_cell == cell and active is not None:
                await self.alarms.clear(
                    "lane_unavailable", subject=f"lane-{lane}",
                    message=f"lane {lane} back in service: {cell} is ONLINE; {active.count} unit(s) went to the "
                    "reject/manual lane meanwhile",
                )

    async def on_capacity(self, cell: str, decision_id: str, lane_capacity: int | None) -> None:
        lane = self.guard.on_capacity(cell, decision_id, lane_capacity)
        if lane is not None and lane_capacity is not None and lane_capacity > self.guard.min_free:
            active = self.alarms.active.get(("lane_full", f"lane-{lane}"))
            if active is not None:
                await self.alarms.clear(
                    "lane_full", subject=f"lane-{lane}",
                    message=f"lane {lane} has free places again ({cell} reports {lane_capacity}); "
                    f"{active.count} unit(s) went to the reject/manual lane meanwhile",
                )
