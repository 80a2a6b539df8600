"""A cell that stops answering raises one order_unanswered alarm, not one per order.

Real journal, real alarms; the daemon's order-expiry loop and inbound handler call exactly these.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge.alarms import Alarms
from edge.contract import Envelope, Topics
from edge.journal import Journal, OrderToSend, Publication

from .asyncapi_contract import problems_with

TOPICS = Topics("returns/v1", "s", "l")


async def _ordered(journal: Journal, unit: str, cell: str) -> None:
    await journal.record_decision(unit, f"d-{unit}", 1, {"lane": 1}, [])
    order = OrderToSend(f"d-{unit}", unit, cell, TOPICS.cell_orders(cell), b"{}")
    await journal.record_outcome(unit, "diverted", {"lane": 1}, [Publication("t/d", b"{}")], order, [])


async def _alarms_published(journal: Journal) -> list[dict]:
    messages = [m for m in await journal.unsent(1000) if m.topic == TOPICS.alarms]
    for message in messages:
        assert problems_with(message.topic, message.payload) == []
    return [json.loads(m.payload) for m in messages]


async def _expire(journal: Journal, alarms: Alarms) -> int:
    """What Controller._resend_orders does on each pass."""
    expired = await journal.expire_unanswered_orders({}, default_s=0.0)
    for order in expired:
        await alarms.order_unanswered(order.cell, order.decision_id, order.unit_id, order.waited_s, order.sent_count)
    return len(expired)


def test_one_alarm_per_silent_cell_cleared_when_it_answers_again(tmp_path: Path) -> None:
    async def run() -> tuple[list[dict], list[str], Alarms]:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), TOPICS)
            for n in range(5):
                await _ordered(journal, f"A{n}", "cell-a")
            await _ordered(journal, "B0", "cell-b")
            assert await _expire(journal, alarms) == 6
            for n in range(5, 8):  # the cell stays silent: more of its orders expire later
                await _ordered(journal, f"A{n}", "cell-a")
            assert await _expire(journal, alarms) == 3
            assert set(alarms.active) == {("order_unanswered", "cell-a"), ("order_unanswered", "cell-b")}
            assert alarms.active[("order_unanswered", "cell-a")].count == 8
            # cell-a answers again (a late FINISHED for an expired order is still applied)
            assert await journal.record_cell_state("d-A3", "cell-a", "FINISHED", None) == "applied"
            await alarms.cell_answered("cell-a")
            await alarms.cell_answered("cell-a")  # a second answer clears nothing more
            # silent again later: raised anew
            await _ordered(journal, "A9", "cell-a")
            await _expire(journal, alarms)
            states = await journal.transact(
                lambda db: [r[0] for r in db.execute("SELECT state FROM units ORDER BY unit_id")]
            )
            return await _alarms_published(journal), states, alarms

    published, states, alarms = asyncio.run(run())
    summary = [(a["state"], a["subject"]) for a in published]
    assert summary == [("raised", "cell-a"), ("raised", "cell-b"), ("cleared", "cell-a"), ("raised", "cell-a")]
    assert all(a["code"] == "order_unanswered" and a["severity"] == "critical" for a in published)
    assert "d-A0" in published[0]["message"]
    cleared = published[2]["message"]
    assert "8 order(s) expired" in cleared and all(f"d-A{n}" in cleared for n in range(8))
    assert alarms.raised_total["order_unanswered"] == 10  # every expired order is still counted
    # every expired order is on record in the journal, one by one (A3 was completed by its late answer)
    assert states.count("expired") == 9 and states.count("complete") == 1


def test_the_list_in_the_clearing_message_is_bounded(tmp_path: Path) -> None:
    async def run() -> dict:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), TOPICS)
            for n in range(30):
                await alarms.order_unanswered("cell-a", f"d-{n}", f"U{n}", 901.0, 4)
            await alarms.cell_answered("cell-a")
            return (await _alarms_published(journal))[-1]

    cleared = asyncio.run(run())
    assert "30 order(s) expired" in cleared["message"] and "d-29" in cleared["message"]
    assert "d-0," not in cleared["message"] and "and 10 more" in cleared["message"]
