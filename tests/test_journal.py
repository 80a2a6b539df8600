import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from edge.journal import Journal, JournalError, OrderToSend, Publication, read_unit_history


async def _decide(journal: Journal, n: int, cell: str = "cell-a") -> str:
    decision_id = f"d-{n}"
    await journal.record_decision(f"U{n}", decision_id, n, {"lane": 1, "cell": cell}, [("arrived", {"n": n})])
    await journal.record_outcome(
        f"U{n}", "diverted", {"lane": 1, "cell": cell, "decision_id": decision_id},
        [Publication("t/decisions", json.dumps({"n": n}).encode())],
        OrderToSend(decision_id, f"U{n}", cell, f"t/cells/{cell}/orders", b"order"),
        [("diverted", {"status": "accepted"})],
    )
    return decision_id


async def test_outbox_keeps_order_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with Journal(path) as journal:
        for n in range(3):
            await _decide(journal, n)
        unsent = await journal.unsent()
        assert [m.topic for m in unsent] == ["t/decisions", "t/cells/cell-a/orders"] * 3
        await journal.mark_sent([unsent[0].seq, unsent[1].seq])
    async with Journal(path) as journal:  # a restart resumes where the outbox stopped
        unsent = await journal.unsent()
        assert len(unsent) == 4
        assert json.loads(unsent[0].payload) == {"n": 1}


async def test_cell_answers_complete_decisions_once(tmp_path: Path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        decision_id = await _decide(journal, 7)
        assert await journal.record_cell_state(decision_id, "cell-b", "FINISHED", None) == "wrong_cell"
        assert await journal.record_cell_state(decision_id, "cell-a", "ACCEPTED", None) == "applied"
        assert await journal.record_cell_state(decision_id, "cell-a", "FINISHED", None) == "applied"
        assert await journal.record_cell_state(decision_id, "cell-a", "FINISHED", None) == "duplicate"
        assert await journal.record_cell_state("nope", "cell-a", "FINISHED", None) == "unknown"
        assert (await journal.depths())["open_orders"] == 0
    history = read_unit_history(tmp_path / "j.db", "U7")
    assert history is not None and history["state"] == "complete"
    assert [e["kind"] for e in history["events"]] == ["arrived", "diverted", "cell_state", "cell_state"]


async def test_unanswered_orders_are_requeued_with_same_payload(tmp_path: Path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        await _decide(journal, 1)
        await journal.mark_sent([m.seq for m in await journal.unsent()])
        assert await journal.requeue_unanswered_orders({"cell-a": 3600}, default_s=0) == 0
        assert await journal.requeue_unanswered_orders({}, default_s=0) == 1
        again = await journal.unsent()
        assert [(m.topic, m.payload) for m in again] == [("t/cells/cell-a/orders", b"order")]
        await journal.mark_sent([m.seq for m in again])
        await journal.record_cell_state("d-1", "cell-a", "ACCEPTED", None)
        # accepted is not final: re-sent only after three order timeouts (its FINISHED may be lost)
        assert await journal.requeue_unanswered_orders({"cell-a": 3600}, default_s=0) == 0
        assert await journal.requeue_unanswered_orders({}, default_s=0) == 1
        await journal.record_cell_state("d-1", "cell-a", "FINISHED", None)
        assert await journal.requeue_unanswered_orders({}, default_s=0) == 0


def _sent_count(path: Path, decision_id: str) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT sent_count FROM orders WHERE decision_id=?", (decision_id,)).fetchone()[0]
    finally:
        db.close()


async def test_a_reconnect_counts_only_the_copies_it_really_sends(tmp_path: Path) -> None:
    """`sent_count` (`order_sent_count` in the export) counts copies put in the outbox; a reconnect
    that finds the order's copy still waiting there sends nothing more and counts nothing more."""
    path = tmp_path / "j.db"
    async with Journal(path) as journal:
        for n in (1, 2):  # each order's payload names its decision, as on the wire
            await journal.record_decision(f"U{n}", f"d-{n}", n, {"lane": 1, "cell": "cell-a"}, [])
            await journal.record_outcome(
                f"U{n}", "diverted", {"lane": 1, "cell": "cell-a"}, [Publication("t/decisions", b"%d" % n)],
                OrderToSend(f"d-{n}", f"U{n}", "cell-a", "t/cells/cell-a/orders", b"order d-%d" % n), [],
            )
        waiting, acknowledged = "d-1", "d-2"
        # U2's decision and order were acknowledged before the broker went away; U1's still wait.
        await journal.mark_sent([m.seq for m in await journal.unsent() if m.payload in (b"2", b"order d-2")])
        assert _sent_count(path, waiting) == 1 and _sent_count(path, acknowledged) == 1

        # The reconnect re-sends every open order at once (daemon: timeouts {}, default 0 s).
        assert await journal.requeue_unanswered_orders({}, default_s=0.0) == 1
        assert _sent_count(path, waiting) == 1  # its first copy goes out now: one send
        assert _sent_count(path, acknowledged) == 2  # a second copy really goes out
        orders = [m for m in await journal.unsent() if m.topic.endswith("/orders")]
        assert len(orders) == 2  # one copy of each, none doubled

        # Another reconnect before anything was acknowledged: both copies are still waiting.
        assert await journal.requeue_unanswered_orders({}, default_s=0.0) == 0
        assert (_sent_count(path, waiting), _sent_count(path, acknowledged)) == (1, 2)
        # Within the timeout nothing is due at all.
        assert await journal.requeue_unanswered_orders({"cell-a": 3600}, default_s=0.0) == 0

        await journal.mark_sent([m.seq for m in await journal.unsent()])
        assert await journal.requeue_unanswered_orders({}, default_s=0.0) == 2
        assert (_sent_count(path, waiting), _sent_count(path, acknowledged)) == (2, 3)
    history = read_unit_history(path, "U1")
    assert history is not None and history["orders"][0]["sent_count"] == 2


async def test_sequence_blocks_never_repeat(tmp_path: Path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        first = await journal.reserve_sequence_block()
    async with Journal(tmp_path / "j.db") as journal:
        second = await journal.reserve_sequence_block()
    assert second > first + 100_000


async def test_a_corrupt_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError):
        async with Journal(path):
            pass


async def test_close_checkpoints_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with Journal(path) as journal:
        await _decide(journal, 1)
    wal = Path(str(path) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert sqlite3.connect(path).execute("SELECT count(*) FROM units").fetchone()[0] == 1


# -- group commit: calls queued together share one transaction, each still all-or-nothing -----------


async def _hold_journal_thread(journal: Journal) -> tuple[threading.Event, asyncio.Future[object]]:
    """Park the journal thread so that the calls made next all queue up behind it."""
    parked, release = threading.Event(), threading.Event()

    def wait() -> None:
        parked.set()
        release.wait(10)

    held = asyncio.ensure_future(journal._call(wait))
    await asyncio.to_thread(parked.wait, 10)
    return release, held


async def _until_queued(journal: Journal, count: int) -> None:
    """Wait until `count` calls wait behind the parked journal thread: a task submits its call only
    once it first runs, and releasing the thread before that would split the calls into two groups."""
    async with asyncio.timeout(10):
        while journal._worker is None or journal._worker._queue.qsize() < count:
            await asyncio.sleep(0.001)


def _boom(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO events(unit_id, at, kind, data) VALUES ('U-bad', 0, 'half', '{}')")
    raise ValueError("body failed halfway")


async def test_queued_calls_share_one_commit_keep_order_and_fail_alone(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with Journal(path) as journal:
        release, held = await _hold_journal_thread(journal)
        batches_before, _ = journal.group_commit_figures
        calls = [journal.enqueue([Publication(f"t/{n}", str(n).encode())]) for n in range(10)]
        calls.insert(5, journal.transact(_boom))
        calls.append(journal.add_event("U1", "after", {"n": 1}))
        calls.append(journal.unsent(100))  # a read queued behind the writes sees all of them
        tasks = [asyncio.ensure_future(c) for c in calls]
        await _until_queued(journal, len(tasks))
        release.set()
        await held
        results = await asyncio.gather(*tasks, return_exceptions=True)
        batches_after, _ = journal.group_commit_figures
        assert batches_after - batches_before == 1  # 13 calls, one transaction, one fsync
        assert isinstance(results[5], ValueError)
        assert [r for i, r in enumerate(results[:-1]) if i != 5] == [None] * 11
        assert [m.topic for m in results[-1]] == [f"t/{n}" for n in range(10)]
        # Committed, seen by another connection; the failed body left nothing behind.
        other = sqlite3.connect(path)
        topics = [r[0] for r in other.execute("SELECT topic FROM outbox ORDER BY seq")]
        assert topics == [f"t/{n}" for n in range(10)]
        assert other.execute("SELECT kind FROM events ORDER BY id").fetchall() == [("after",)]
        other.close()


async def test_a_body_that_ends_the_transaction_fails_its_group_and_later_calls_still_run(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    def ends_transaction(db: sqlite3.Connection) -> None:
        db.execute("ROLLBACK")  # what SQLite does by itself on some errors, e.g. a full disk
        raise sqlite3.OperationalError("database or disk is full")

    async with Journal(path) as journal:
        release, held = await _hold_journal_thread(journal)
        before = asyncio.ensure_future(journal.enqueue([Publication("t/before", b"1")]))
        broken = asyncio.ensure_future(journal.transact(ends_transaction))
        after = asyncio.ensure_future(journal.enqueue([Publication("t/after", b"2")]))
        await _until_queued(journal, 3)
        release.set()
        await held
        results = await asyncio.gather(before, broken, after, return_exceptions=True)
        # The first body's writes went with the transaction: its caller must not think them on disk.
        assert isinstance(results[0], sqlite3.OperationalError)
        assert isinstance(results[1], sqlite3.OperationalError)
        assert results[2] is None
        assert [m.topic for m in await journal.unsent()] == ["t/after"]


async def test_a_call_cancelled_before_it_ran_is_never_run(tmp_path: Path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        release, held = await _hold_journal_thread(journal)
        cancelled = asyncio.ensure_future(journal.enqueue([Publication("t/cancelled", b"x")]))
        kept = asyncio.ensure_future(journal.enqueue([Publication("t/kept", b"y")]))
        await _until_queued(journal, 2)
        cancelled.cancel()
        release.set()
        await held
        await kept
        assert [m.topic for m in await journal.unsent()] == ["t/kept"]


async def test_mark_sent_and_fetch_is_mark_sent_then_unsent(tmp_path: Path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        await journal.enqueue([Publication(f"t/{n}", b"") for n in range(5)])
        first = await journal.unsent(2)
        rest = await journal.mark_sent_and_fetch([m.seq for m in first], 10)
        assert [m.topic for m in rest] == ["t/2", "t/3", "t/4"]
        assert await journal.unsent(10) == rest


async def test_a_closed_journal_refuses_calls(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    async with journal:
        await journal.enqueue([Publication("t/x", b"")])
    with pytest.raises(RuntimeError):
        await journal.unsent()


def test_an_order_never_sent_does_not_expire_and_its_expiry_counts_from_its_first_send(tmp_path: Path) -> None:
    """A broker outage longer than order_expiry_s: the order's only copy waited in the outbox the
    whole time, so at the reconnect it is not expired unsent; its expiry counts from there."""
    from edge.journal import orders_due_to_expire

    async def run() -> list[tuple[float, list]]:
        async with Journal(tmp_path / "j.db") as journal:
            decision_id = await _decide(journal, 1)
            queued = await journal.transact(
                lambda db: db.execute("SELECT queued_at FROM orders WHERE decision_id=?", (decision_id,)).fetchone()[0]
            )
            seen = []
            # The reconnect, 1200 s after the order was queued: its copy is still waiting.
            for after_s in (1200.0, 1200.5):
                due = await journal.transact(lambda db, t=queued + after_s: orders_due_to_expire(db, {}, 900.0, t))
                seen.append((after_s, [o.decision_id for o in due]))
            await journal.mark_sent([m.seq for m in await journal.unsent(1000)])  # and now it went out
            for after_s in (1200.0 + 899.0, 1200.0 + 901.0):
                due = await journal.transact(lambda db, t=queued + after_s: orders_due_to_expire(db, {}, 900.0, t))
                seen.append((after_s, [(o.decision_id, round(o.waited_s)) for o in due]))
            return seen

    seen = asyncio.run(run())
    # Due 901 s after the send (the alarm's "within N s" says so), not 2101 s after the queueing.
    assert [ids for _, ids in seen] == [[], [], [], [("d-1", 901)]]
