"""The controller's handling of cell messages (edge/inbound.py), on a real SQLite journal.

Connection messages switch lanes and the cell_offline alarm; state messages are applied once,
counted by what they were (applied, repeat, unknown, bad, the asked-for answer to a cancellation
or anything else about a cancelled order), and their lane_capacity reaches the lane guard even
on a repeat, which is how a cell reopens a full lane.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge.alarms import Alarms
from edge.contract import Envelope
from edge.departures import correct_mismatch
from edge.inbound import CellInbound
from edge.journal import Journal
from edge.lanes import LaneGuard, LaneRouter

from .test_divert_correction import LANES, STATION, TOPICS, _decided, _left_by


async def _alarms_after(journal: Journal, seq: int) -> list[dict]:
    return [json.loads(m.payload) for m in await journal.unsent(1000) if m.seq > seq and m.topic == TOPICS.alarms]


def _state(decision_id: str, state: str, **extra: object) -> bytes:
    return json.dumps({"decision_id": decision_id, "state": state, **extra}).encode()


def test_cell_messages_are_counted_by_what_they_are(tmp_path: Path) -> None:
    async def run() -> tuple[dict[str, int], list[dict], LaneGuard]:
        async with Journal(tmp_path / "j.db") as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            guard = LaneGuard(STATION)
            inbound = CellInbound(TOPICS, journal, alarms, LaneRouter(guard, alarms))
            state_b = TOPICS.cell_state("cell-b")
            await inbound(TOPICS.cell_connection("cell-b"), b"ONLINE")
            first = await _decided(journal, envelope, "U1", item=1, lane=3, cell="cell-b")
            guard.count_order(3, first)
            await inbound(state_b, _state(first, "ACCEPTED", lane_capacity=3))
            await inbound(state_b, _state(first, "FINISHED", lane_capacity=0))  # lane 3 now full
            assert guard.why_unavailable(3) is not None
            # The cell reopens the lane by repeating its latest answer with room: not applied to the
            # order again, but its figure is.
            await inbound(state_b, _state(first, "FINISHED", lane_capacity=5))
            assert guard.why_unavailable(3) is None and guard.free[3] == 5
            await inbound(state_b, _state("never-sent", "FINISHED"))
            await inbound(state_b, b'{"decision_id": "x", "state": "DONE"}')
            # Two cancelled orders: one answered as asked, one picked anyway.
            for unit, item in (("U2", 2), ("U3", 3)):
                await _decided(journal, envelope, unit, item=item, lane=2, cell="cell-b")
                assert await correct_mismatch(journal, alarms, LANES, unit, _left_by(item, 0)) is not None
            before = max(m.seq for m in await journal.unsent(1000))
            await inbound(state_b, _state("d-U2", "FAILED", reason="cancelled"))
            await inbound(state_b, _state("d-U3", "FINISHED"))
            await inbound(TOPICS.cell_connection("cell-b"), b"CONNECTIONBROKEN")
            await inbound(TOPICS.cell_connection("cell-b"), b"ONLINE")
            return inbound.counters, await _alarms_after(journal, before), guard

    counters, alarms, guard = asyncio.run(run())
    assert counters == {"cell_states": 2, "bad_messages": 1, "duplicates": 1, "unknown": 1,
                        "cancellations_answered": 1, "answers_after_cancel": 1}
    assert [(a["code"], a["state"]) for a in alarms] == [
        ("picked_after_cancel", "event"), ("cell_offline", "raised"), ("cell_offline", "cleared")
    ]
    assert alarms[1]["message"] == "robot cell cell-b is CONNECTIONBROKEN"
    assert alarms[2]["message"] == "robot cell cell-b is ONLINE again"
    assert guard.cell_state["cell-b"] == "ONLINE"


def test_a_cell_back_online_gets_its_open_orders_again_at_once(tmp_path: Path) -> None:
    """Seen going OFFLINE and coming back: its unanswered orders are re-sent then, not at the next
    order timeout. The retained ONLINE that every (re)connect brings again re-sends nothing (the
    re-send after connecting covers that), and another cell's orders are left alone."""

    async def run() -> tuple[list[str], list[str], list[str], list[str]]:
        async with Journal(tmp_path / "j.db") as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            inbound = CellInbound(TOPICS, journal, alarms, LaneRouter(LaneGuard(STATION), alarms))

            async def orders_queued() -> list[str]:
                order_topics = (TOPICS.cell_orders("cell-a"), TOPICS.cell_orders("cell-b"))
                waiting = [m for m in await journal.unsent(1000) if m.topic in order_topics]
                await journal.mark_sent([m.seq for m in await journal.unsent(1000)])  # the broker took them
                return sorted(json.loads(m.payload)["decision_id"] for m in waiting)

            await inbound(TOPICS.cell_connection("cell-b"), b"ONLINE")
            await _decided(journal, envelope, "U1", item=1, lane=3, cell="cell-b")
            await _decided(journal, envelope, "U2", item=2, lane=2, cell="cell-b")
            await inbound(TOPICS.cell_state("cell-b"), _state("d-U2", "FINISHED"))  # answered: not again
            await _decided(journal, envelope, "U3", item=3, lane=1, cell="cell-a")
            first = await orders_queued()
            await inbound(TOPICS.cell_connection("cell-b"), b"ONLINE")  # a repeat of the retained state
            repeat = await orders_queued()
            await inbound(TOPICS.cell_connection("cell-b"), b"OFFLINE")
            offline = await orders_queued()
            await inbound(TOPICS.cell_connection("cell-b"), b"ONLINE")
            back = await orders_queued()
            return first, repeat, offline, back

    first, repeat, offline, back = asyncio.run(run())
    assert first == ["d-U1", "d-U2", "d-U3"]
    assert repeat == [] and offline == []
    assert back == ["d-U1"]
