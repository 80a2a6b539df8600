"""What the controller does with each message a robot cell publishes (docs/mqtt.md "Cell state").

`cells/{cell}/connection` (retained ONLINE / OFFLINE / CONNECTIONBROKEN) switches the cell's lanes
in and out of service and raises or clears `cell_offline`; a cell seen coming back ONLINE gets its
unanswered orders and cancellations re-sent at once, not at its next order timeout.
`cells/{cell}/state` answers an order or a cancellation: it is parsed (a bad one is counted and
alarmed, never acted on), applied to the journal once, and its `lane_capacity` goes to the lane
guard, repeats included (a cell reopens a full lane by repeating its latest state with the new
figure).

The counters are the status message's `inbound` object.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

from edge.alarms import Alarms
from edge.contract import ContractError, Topics, parse_cell_state
from edge.departures import answered_after_cancel
from edge.journal import Journal

log = logging.getLogger("edge.inbound")

# The answer a cell is asked to give a cancellation it had not finished (docs/mqtt.md).
CANCELLED_REASON = "cancelled"


class CellLanes(Protocol):
    """The lane router (edge/lanes.py LaneRouter)."""

    async def on_connection(self, cell: str, state: str) -> None: ...

    async def on_capacity(self, cell: str, decision_id: str, lane_capacity: int | None) -> None: ...


class CellInbound:
    """The MQTT link's `on_message` for the cells' topics."""

    def __init__(self, topics: Topics, journal: Journal, alarms: Alarms, lanes: CellLanes) -> None:
        self.topics = topics
        self.journal = journal
        self.alarms = alarms
        self.lanes = lanes
        self._connection_state: dict[str, str] = {}
        self.counters = {
            "cell_states": 0,  # answers applied to an open order
            "bad_messages": 0,
            "duplicates": 0,  # repeats of an answer already applied
            "unknown": 0,  # answers about a decision the journal does not know
            "cancellations_answered": 0,  # the FAILED "cancelled" a cell gives a cancelled order
            "answers_after_cancel": 0,  # any other answer about a cancelled order
        }

    async def __call__(self, topic: str, payload: bytes) -> None:
        parsed = self.topics.cell_from_topic(topic)
        if parsed is None:
            return
        cell, kind = parsed
        if kind == "connection":
            await self._connection(cell, payload.decode("utf-8", "replace")[:32])
            return
        try:
            message = parse_cell_state(payload)
        except ContractError as exc:
            self.counters["bad_messages"] += 1
            await self.alarms.event("bad_message", f"bad state message from cell {cell}: {exc}", subject=cell)
            return
        outcome = await self.journal.record_cell_state(message.decision_id, cell, message.state, message.reason)
        await self.alarms.cell_answered(cell)
        await self.lanes.on_capacity(cell, message.decision_id, message.lane_capacity)
        if outcome == "applied":
            self.counters["cell_states"] += 1
            if message.state == "FAILED":
                await self.alarms.event("order_failed", f"cell {cell} FAILED decision {message.decision_id}: "
                                        f"{message.reason or 'no reason given'}", subject=cell)
        elif outcome == "duplicate":
            self.counters["duplicates"] += 1
        elif outcome == "cancelled":
            # Kept on the cancelled order (closing its cancellation), not acted on.
            if message.state == "FAILED" and (message.reason or "").strip().lower() == CANCELLED_REASON:
                self.counters["cancellations_answered"] += 1
            else:
                self.counters["answers_after_cancel"] += 1
            await answered_after_cancel(self.alarms, cell, message.decision_id, message.state)
        else:
            self.counters["unknown"] += 1
            log.warning("cell %s reported %s for %s decision %s", cell, message.state, outcome, message.decision_id)

    async def _connection(self, cell: str, state: str) -> None:
        previous = self._connection_state.get(cell)
        self._connection_state[cell] = state
        await self.lanes.on_connection(cell, state)
        if state == "ONLINE":
            await self.alarms.clear("cell_offline", subject=cell, message=f"robot cell {cell} is ONLINE again")
            if previous is not None and previous != "ONLINE":
                # Only a change seen while connected: the retained ONLINE every (re)connect brings
                # again is covered by the re-send after connecting. A cell that restarted with a
                # clean session lost what the broker held for it; one that kept its session gets
                # copies it answers again (docs/mqtt.md "Repeats and re-sends").
                count = await self.journal.requeue_unanswered_orders({cell: 0.0}, default_s=math.inf)
                if count:
                    log.info("re-sent %d unanswered order(s) or cancellation(s) to %s, back ONLINE", count, cell)
        else:
            await self.alarms.raise_("cell_offline", f"robot cell {cell} is {state}", subject=cell)
