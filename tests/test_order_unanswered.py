"""A cell that stops answering raises one order_unanswered alarm, not one per order.

Real journal, real alarms; the daemon's order-expiry loop and inbound handler call exactly these.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from edge.alarms import ActiveAlarm, Alarms, answered_again_message, unanswered_message
from edge.contract import Envelope, Topics
from edge.journal import ExpiredOrder, Journal, OrderToSend, Publication

from .asyncapi_contract import problems_with

TOPICS = Topics("returns/v1", "s", "l")


async def _ordered(journal: Journal, unit: str, cell: str) -> None:
    await journal.record_decision(unit, f"d-{unit}", 1, {"lane": 1}, [])
    order = OrderToSend(f"d-{unit}", unit, cell, TOPICS.cell_orders(cell), b"{}")
    await journal.record_outcome(unit, "diverted", {"lane": 1}, [Publication("t/d", b"{}")], order, [])
    # The broker took the order: from here its expiry runs (an order never sent does not expire).
    await journal.mark_sent([m.seq for m in await journal.unsent(1000) if m.topic == order.topic])


async def _alarms_published(journal: Journal) -> list[dict]:
    messages = [m for m in await journal.unsent(1000) if m.topic == TOPICS.alarms]
    for message in messages:
        assert problems_with(message.topic, message.payload) == []
    return [json.loads(m.payload) for m in messages]


async def _expire(journal: Journal, alarms: Alarms) -> int:
    """What Controller._resend_orders does on each pass."""
    return len(await alarms.expire_unanswered({}, default_s=0.0))


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
                await _ordered(journal, f"U{n}", "cell-a")
            assert await _expire(journal, alarms) == 30
            await alarms.cell_answered("cell-a")
            return (await _alarms_published(journal))[-1]

    cleared = asyncio.run(run())
    assert "30 order(s) expired" in cleared["message"] and "d-U29" in cleared["message"]
    assert "d-U0," not in cleared["message"] and "and 10 more" in cleared["message"]


def test_unanswered_cancellations_are_worded_and_listed_apart_from_expired_orders() -> None:
    """A withdrawn order's unit keeps its corrected decision: its unanswered cancellation must not
    send a person to see to the unit, but to check that the cell did not pick it."""
    order = ExpiredOrder("d-1", "U1", "cell-a", 4, 901.0)
    cancellation = ExpiredOrder("d-2", "U2", "cell-a", 3, 905.0, cancellation=True)
    assert "did not finish decision d-1 (unit U1) within 901 s after 4 send(s)" in unanswered_message(order)
    assert "a person must see to the unit" in unanswered_message(order)
    text = unanswered_message(cancellation)
    assert "did not answer the cancellation of decision d-2 (unit U2) within 905 s after 3 send(s)" in text
    assert "check that the cell did not pick the withdrawn unit, which keeps its corrected decision" in text
    assert "did not finish" not in text and "must see to the unit" not in text

    alarm = ActiveAlarm("order_unanswered", "cell-a", unanswered_message(cancellation), "critical", count=0)
    for expired in (cancellation, order, ExpiredOrder("d-3", "U3", "cell-a", 4, 901.0)):
        alarm.count_expired(expired)
    cleared = answered_again_message(alarm)
    assert cleared.startswith("cell cell-a answers again; 2 order(s) expired unanswered meanwhile (decisions d-1, d-3)")
    assert "1 cancellation(s) went unanswered meanwhile (decisions d-2): check that the cell did not pick" in cleared
    alarm = ActiveAlarm("order_unanswered", "cell-a", "m", "critical", count=0)
    alarm.count_expired(cancellation)
    assert "order(s)" not in answered_again_message(alarm) and "`expired`" not in answered_again_message(alarm)


async def _expired_decisions(journal: Journal) -> list[str]:
    rows = await journal.transact(lambda db: db.execute(
        "SELECT data FROM events WHERE kind='order_expired' ORDER BY id"
    ).fetchall())
    return [json.loads(data)["decision_id"] for (data,) in rows]


def test_an_answer_queued_right_after_an_expiry_names_what_that_expiry_counted(tmp_path: Path) -> None:
    """The journal runs the two in the order they were queued: the expiry counts d-A1 on the alarm
    first, so the clearing that follows must name it, or d-A1 is in no alarm message at all."""

    async def run() -> tuple[list[dict], list[str], int, dict]:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), TOPICS)
            await _ordered(journal, "A0", "cell-a")
            assert await _expire(journal, alarms) == 1
            await _ordered(journal, "A1", "cell-a")
            expired, _ = await asyncio.gather(
                alarms.expire_unanswered({}, default_s=0.0), alarms.cell_answered("cell-a")
            )
            return await _alarms_published(journal), await _expired_decisions(journal), len(expired), alarms.active

    published, expired_decisions, expired_now, active = asyncio.run(run())
    assert expired_now == 1 and expired_decisions == ["d-A0", "d-A1"]
    assert [a["state"] for a in published] == ["raised", "cleared"] and active == {}
    assert "2 order(s) expired" in published[1]["message"]
    assert all(any(decision in a["message"] for a in published) for decision in expired_decisions)


def test_an_answer_while_the_first_expiry_is_in_the_journal_clears_the_alarm_it_raises(tmp_path: Path) -> None:
    async def run() -> tuple[list[dict], dict]:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), TOPICS)
            await _ordered(journal, "A0", "cell-a")
            await asyncio.gather(alarms.expire_unanswered({}, default_s=0.0), alarms.cell_answered("cell-a"))
            return await _alarms_published(journal), alarms.active

    published, active = asyncio.run(run())
    assert [a["state"] for a in published] == ["raised", "cleared"] and active == {}
    assert "d-A0" in published[1]["message"]


def test_seq_rises_in_outbox_order_although_the_alarm_text_is_built_on_the_journal_thread(tmp_path: Path) -> None:
    """A message built on the loop after the expiry (or clearing) was queued comes after it in the
    outbox; the alarm built later on the journal thread must not take a higher seq than it."""

    async def behind_held_journal(journal: Journal, first: object, second: object) -> None:
        gate = threading.Event()
        held = asyncio.create_task(journal.maintain(lambda db: gate.wait(30)))
        started = [asyncio.create_task(first)]  # type: ignore[arg-type]
        await asyncio.sleep(0)  # queued behind the held journal
        started.append(asyncio.create_task(second))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(held, *started)

    async def run() -> list[dict]:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), TOPICS)
            await _ordered(journal, "A0", "cell-a")
            await behind_held_journal(journal, alarms.expire_unanswered({}, default_s=0.0),
                                      alarms.event("bad_message", "after the expiry"))
            await behind_held_journal(journal, alarms.cell_answered("cell-a"),
                                      alarms.event("bad_message", "after the clearing"))
            return await _alarms_published(journal)

    published = asyncio.run(run())
    assert [a["state"] for a in published] == ["event", "raised", "cleared", "event"]
    seqs = [a["seq"] for a in published]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
