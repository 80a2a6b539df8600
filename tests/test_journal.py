import json
import sqlite3
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
        await journal.record_cell_state("d-1", "cell-a", "ACCEPTED", None)
        # accepted is not final: re-sent only after three order timeouts (its FINISHED may be lost)
        assert await journal.requeue_unanswered_orders({"cell-a": 3600}, default_s=0) == 0
        assert await journal.requeue_unanswered_orders({}, default_s=0) == 1
        await journal.record_cell_state("d-1", "cell-a", "FINISHED", None)
        assert await journal.requeue_unanswered_orders({}, default_s=0) == 0


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
