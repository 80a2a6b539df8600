"""Converting a journal made before incremental auto-vacuum, on real SQLite files.

The conversion is one VACUUM that every decision waits for, so it runs in the retention task only
while no unit is in flight, gives way to the next unit and stops at a budget; stopped or killed, it
leaves the file as it was.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.journal import SCHEMA, Journal, OrderToSend, Publication, read_unit_history
from edge.retention import JournalConversion, prune_once

from .conftest import REPO

UNITS = 600
KEEP = 100


def _old_journal(path: Path) -> None:
    """A journal as created before auto-vacuum was set: tables first, auto_vacuum NONE."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.close()


async def _fill_and_prune(path: Path) -> None:
    """Finished units, most of them then pruned: the file is mostly free pages."""
    async with Journal(path) as journal:
        for n in range(UNITS):
            unit = f"S{n:04d}"
            decision = {"unit_id": unit, "lane": 1, "reasons": ["x" * 400]}
            await journal.record_decision(unit, f"d-{unit}", n, decision, [("graded", {"grade": "A"})])
            order = OrderToSend(f"d-{unit}", unit, "cell-a", "t/o", b"{}")
            await journal.record_outcome(unit, "diverted", decision, [Publication("t/d", b"{}")], order, [])
            await journal.record_cell_state(f"d-{unit}", "cell-a", "FINISHED", None)
        await journal.mark_sent([m.seq for m in await journal.unsent(100_000)])
        await prune_once(journal, retention_days=30, max_units=KEEP)


def _state(path: Path) -> tuple[int, int, str]:
    db = sqlite3.connect(path)
    try:
        return (db.execute("PRAGMA auto_vacuum").fetchone()[0], db.execute("SELECT count(*) FROM units").fetchone()[0],
                db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def old_journal(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    _old_journal(path)
    asyncio.run(_fill_and_prune(path))
    assert _state(path) == (0, KEEP, "ok")  # pruned, but not converted: that is the retention task's
    return path


def test_an_old_journal_converts_with_progress_logs_and_stays_readable(
    old_journal: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    size_before = old_journal.stat().st_size

    async def run() -> tuple[str | None, str | None, dict | None]:
        async with Journal(old_journal) as journal:
            # Reported every VACUUM step here, so the progress line shows up in a small file too.
            conversion = JournalConversion(progress_every_s=0.0, check_every_ops=100)
            first = await conversion.run(journal)
            again = await conversion.run(journal)
            await journal.record_decision("N1", "d-N1", 1, {"lane": 1}, [])  # the journal still takes decisions
        return first, again, read_unit_history(old_journal, f"S{UNITS - 1:04d}")

    with caplog.at_level(logging.INFO, logger="edge.retention"):
        first, again, history = asyncio.run(run())
    assert (first, again) == ("converted", None)
    assert _state(old_journal) == (2, KEEP + 1, "ok")
    assert old_journal.stat().st_size < size_before * 0.5
    assert history is not None and history["state"] == "complete" and history["decision"]["reasons"] == ["x" * 400]
    lines = [r.getMessage() for r in caplog.records]
    assert any("predates incremental auto-vacuum" in m and " MB" in m for m in lines), lines
    assert any("journal conversion running for" in m and "MB" in m for m in lines), lines
    assert any("converted to incremental auto-vacuum in" in m for m in lines), lines


def test_the_conversion_gives_way_to_a_unit_and_is_tried_again_later(old_journal: Path) -> None:
    unit_arrived = threading.Event()
    looks = 0

    def busy() -> bool:
        # A unit arrives once the VACUUM is under way (asked from the journal thread).
        nonlocal looks
        looks += 1
        if looks == 5:
            unit_arrived.set()
        return unit_arrived.is_set()

    async def run() -> tuple[str | None, tuple[int, int, str], str | None, str | None]:
        async with Journal(old_journal) as journal:
            conversion = JournalConversion(busy=busy, check_every_ops=100)
            first = await conversion.run(journal)
            after_first = _state(old_journal)
            while_busy = await conversion.run(journal)  # a unit in flight: not even started
            unit_arrived.clear()
            return first, after_first, while_busy, await conversion.run(journal)

    first, after_first, while_busy, later = asyncio.run(run())
    assert first == "gave_way" and after_first == (0, KEEP, "ok")  # rolled back: the file as it was
    assert while_busy is None
    assert later == "converted" and _state(old_journal) == (2, KEEP, "ok")


def test_a_conversion_over_its_budget_is_rolled_back_and_not_retried(old_journal: Path) -> None:
    async def run() -> tuple[str | None, str | None]:
        async with Journal(old_journal) as journal:
            conversion = JournalConversion(budget_s=0.0, check_every_ops=100)
            return await conversion.run(journal), await conversion.run(journal)

    assert asyncio.run(run()) == ("over_budget", None)
    assert _state(old_journal) == (0, KEEP, "ok")


KILLED_MID_VACUUM = """
import sqlite3, sys, time
from pathlib import Path
from edge.retention import JournalConversion

path = Path(sys.argv[1])
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
looks = 0

def busy():
    global looks
    looks += 1
    if looks == 20:  # well inside the VACUUM: say so and wait to be killed
        print("mid-vacuum", flush=True)
        time.sleep(120)
    return False

JournalConversion(busy=busy, check_every_ops=100).convert(db, path)
"""


def test_a_daemon_killed_mid_conversion_leaves_a_consistent_journal(old_journal: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", KILLED_MID_VACUUM, str(old_journal)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == b"mid-vacuum", child.stderr.read() if child.stderr else b""
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    async def reopen() -> str | None:
        async with Journal(old_journal) as journal:  # its own quick_check must pass
            return await JournalConversion(check_every_ops=100).run(journal)

    assert _state(old_journal) == (0, KEEP, "ok")  # the interrupted VACUUM left nothing half-done
    assert asyncio.run(reopen()) == "converted"
    assert _state(old_journal) == (2, KEEP, "ok")
