"""Journal retention: keep the decision journal bounded without ever dropping open work.

Only units whose story is over are pruned: state `complete` (their cell said FINISHED or FAILED),
`lane_unknown` (recovered after a crash, handed to a person) or `expired` (the cell never finished
the order within its expiry, handed to a person).
A unit with an open order is kept however old it is, because deleting it would lose a decision.
Pruned: units older than `retention_days`, then the oldest beyond `max_units`, with their audit
events, orders and evidence images; outbox rows already acknowledged by the broker go after a day.
Freed pages go back to the file system (incremental auto-vacuum, a bounded number per pass) and
the WAL is truncated, so the file shrinks after a burst, not only stops growing.

A journal made before incremental auto-vacuum gives nothing back until it is converted, which takes
one full VACUUM: a rewrite of the whole file that every decision would wait for. So it is never done
at start-up: a retention pass does it (`JournalConversion`) only when a fair part of the file is free
and no unit is in flight, logs the file's size and the time so far while it runs, gives way to the
next unit that arrives and stops at a time budget. A VACUUM that is stopped, or killed with the
daemon, is rolled back by SQLite: the file stays as it was and is tried again later.
Only its first part (rebuilding the tables into a temporary file) can be stopped: the last part,
copying the rebuilt pages back into the journal, runs to its end, and a unit arriving then waits
for it (seconds for a file of a few hundred MB).

Evidence images whose unit is no longer in the journal and that are older than the retention age
(a crash between writing the image and the decision, a journal replaced by hand) go too; images of
units still in the journal are kept however old, like the units themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge.journal import Journal

log = logging.getLogger("edge.retention")

FINISHED_UNIT_STATES = ("complete", "lane_unknown", "expired")
SENT_OUTBOX_KEEP_S = 86400.0
BATCH = 5000


@dataclass(frozen=True)
class Pruned:
    units: int
    events: int
    orders: int
    outbox: int
    # Evidence images named by the pruned decisions, deleted once the prune is committed.
    evidence: list[str] = field(default_factory=list)


def prune(db: sqlite3.Connection, *, retention_days: float, max_units: int, now: float | None = None) -> Pruned:
    """One retention pass inside the caller's transaction."""
    now = time.time() if now is None else now
    cutoff = now - retention_days * 86400.0
    done = ",".join("?" * len(FINISHED_UNIT_STATES))
    old = [r[0] for r in db.execute(
        f"SELECT unit_id FROM units WHERE state IN ({done}) AND decided_at < ? ORDER BY decided_at LIMIT ?",
        (*FINISHED_UNIT_STATES, cutoff, BATCH),
    )]
    total = db.execute("SELECT count(*) FROM units").fetchone()[0]
    excess = max(0, total - len(old) - max_units)
    if excess:
        old += [r[0] for r in db.execute(
            f"SELECT unit_id FROM units WHERE state IN ({done}) AND decided_at >= ? ORDER BY decided_at LIMIT ?",
            (*FINISHED_UNIT_STATES, cutoff, min(excess, BATCH)),
        )]
    events = orders = 0
    evidence: list[str] = []
    for unit_id in old:
        row = db.execute("SELECT decision FROM units WHERE unit_id=?", (unit_id,)).fetchone()
        image = _evidence_of(row[0]) if row else None
        if image:
            evidence.append(image)
        events += db.execute("DELETE FROM events WHERE unit_id=?", (unit_id,)).rowcount
        orders += db.execute("DELETE FROM orders WHERE unit_id=?", (unit_id,)).rowcount
        db.execute("DELETE FROM units WHERE unit_id=?", (unit_id,))
    outbox = db.execute(
        "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (now - SENT_OUTBOX_KEEP_S,)
    ).rowcount
    return Pruned(len(old), events, orders, outbox, evidence)


def _evidence_of(decision_json: str) -> str | None:
    try:
        image = (json.loads(decision_json).get("vision") or {}).get("evidence")
    except (ValueError, AttributeError):
        return None
    return image if isinstance(image, str) else None


def delete_evidence(evidence_dir: Path, images: list[str]) -> int:
    """Delete the pruned units' images; only files inside `evidence_dir`, whatever a path says."""
    root = evidence_dir.resolve()
    deleted = 0
    for image in images:
        path = Path(image).resolve()
        if not path.is_relative_to(root) or path == root:
            log.warning("evidence path %s is outside %s: not deleted", image, root)
            continue
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass  # never written (dropped under load) or already gone
        except OSError as exc:
            log.warning("cannot delete evidence image %s: %s", path, exc)
    return deleted


def old_evidence_files(evidence_dir: Path, older_than: float) -> dict[str, list[Path]]:
    """Images (and stale temporary files) last written before `older_than`, by unit id; day folders
    left empty are removed on the way."""
    found: dict[str, list[Path]] = {}
    if not evidence_dir.is_dir():
        return found
    for day in sorted(p for p in evidence_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        entries = list(day.iterdir())
        for path in entries:
            if not path.is_file() or path.is_symlink():
                continue
            # Temporary files are named .<unit>.jpg.<thread>.tmp while being written.
            unit_id = path.name.split(".")[1] if path.name.startswith(".") else path.stem
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < older_than:
                    found.setdefault(unit_id, []).append(path)
        if not entries:
            with contextlib.suppress(OSError):
                day.rmdir()
    return found


def delete_files(paths: list[Path]) -> int:
    deleted = 0
    for path in paths:
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete evidence image %s: %s", path, exc)
    return deleted


async def sweep_orphan_evidence(journal: Journal, evidence_dir: Path, older_than: float) -> int:
    """Delete old images whose unit is not in the journal (any more, or ever)."""
    candidates = await asyncio.to_thread(old_evidence_files, evidence_dir, older_than)
    if not candidates:
        return 0
    unit_ids = list(candidates)

    def known(db: sqlite3.Connection) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(unit_ids), 500):
            chunk = unit_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in db.execute(f"SELECT unit_id FROM units WHERE unit_id IN ({marks})", chunk))
        return found

    kept = await journal.transact(known)
    orphans = [path for unit_id, paths in candidates.items() for path in paths
               if unit_id not in kept or path.suffix != ".jpg"]
    return await asyncio.to_thread(delete_files, orphans)


ConversionOutcome = Literal["converted", "not_needed", "gave_way", "over_budget"]


def _mb(path: Path) -> float:
    with contextlib.suppress(OSError):
        return path.stat().st_size / 1e6
    return 0.0


@dataclass
class JournalConversion:
    """The one-time conversion of a journal made before incremental auto-vacuum (see the module
    docstring), carried across retention passes.

    `busy` tells whether a unit is in flight; it is also asked from the journal thread while the
    VACUUM runs, so it must be a cheap read of plain values.
    """

    busy: Callable[[], bool] = lambda: False
    budget_s: float = 120.0
    min_free_fraction: float = 0.25
    progress_every_s: float = 5.0
    # VACUUM steps between two looks at the clock and at `busy` (SQLite's progress handler).
    check_every_ops: int = 1_000
    done: bool = False
    gave_up: bool = False

    def convert(self, db: sqlite3.Connection, path: Path) -> ConversionOutcome:
        """Convert with one VACUUM on `db` (outside any transaction): on the journal thread."""
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            return "converted"
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        if free == 0 or free < pages * self.min_free_fraction:
            return "not_needed"  # little to give back yet; freed pages are reused meanwhile
        wal = path.with_name(path.name + "-wal")
        size_mb = _mb(path)
        log.warning(
            "journal %s (%.1f MB, %.0f%% free) predates incremental auto-vacuum: converting it with one VACUUM "
            "now that no unit is in flight (decisions wait for it: it gives way to the next unit and stops after "
            "%.0f s)", path, size_mb, 100.0 * free / pages, self.budget_s,
        )
        began = time.monotonic()
        next_report = began + self.progress_every_s
        stopped: ConversionOutcome | None = None

        def progress() -> int:
            nonlocal next_report, stopped
            now = time.monotonic()
            if self.busy():
                stopped = "gave_way"
            elif now - began > self.budget_s:
                stopped = "over_budget"
            elif now >= next_report:
                next_report = now + self.progress_every_s
                log.info("journal conversion running for %.0f s (journal %.1f MB, write-ahead log %.1f MB)",
                         now - began, _mb(path), _mb(wal))
            return 1 if stopped else 0  # non-zero interrupts the VACUUM, which SQLite rolls back

        db.set_progress_handler(progress, self.check_every_ops)
        try:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect with the VACUUM
            db.execute("VACUUM")
        except sqlite3.OperationalError:
            if stopped is None:
                raise
            elapsed = time.monotonic() - began
            if stopped == "gave_way":
                log.warning("journal conversion gave way to a unit after %.1f s: VACUUM rolled back, %s unchanged "
                            "(%.1f MB); tried again at a later pass while no unit is in flight", elapsed, path, size_mb)
            else:
                log.error("journal conversion stopped after %.1f s (journal.convert_budget_s): VACUUM rolled back, "
                          "%s unchanged (%.1f MB); not tried again before the next start. Raise "
                          "journal.convert_budget_s to let it finish", elapsed, path, size_mb)
            return stopped
        finally:
            db.set_progress_handler(None, 0)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.warning("journal %s converted to incremental auto-vacuum in %.1f s: %.1f MB, now %.1f MB", path,
                    time.monotonic() - began, size_mb, _mb(path))
        return "converted"

    async def run(self, journal: Journal) -> ConversionOutcome | None:
        """One attempt from a retention pass; None when there is nothing to try now."""
        if self.done or self.gave_up or self.busy():
            return None
        outcome = await journal.maintain(lambda db: self.convert(db, journal.path))
        self.done = outcome == "converted"
        self.gave_up = outcome == "over_budget"
        return outcome


async def prune_once(
    journal: Journal, *, retention_days: float, max_units: int, evidence_dir: Path | None = None,
) -> Pruned:
    """One retention pass. It does not convert a journal from before incremental auto-vacuum (its
    pages are then reused, not given back): retention_loop runs JournalConversion for that."""
    result = await journal.transact(lambda db: prune(db, retention_days=retention_days, max_units=max_units))
    images = 0
    if evidence_dir is not None:
        images = await asyncio.to_thread(delete_evidence, evidence_dir, result.evidence)
        images += await sweep_orphan_evidence(journal, evidence_dir, time.time() - retention_days * 86400.0)
    if result.units or result.outbox:
        reclaimed = await journal.reclaim_space()
        log.info("journal retention: pruned %d unit(s), %d event(s), %d order(s), %d sent message(s), %d evidence "
                 "image(s); %d page(s) given back", result.units, result.events, result.orders, result.outbox,
                 images, reclaimed)
    elif images:
        log.info("journal retention: deleted %d orphan evidence image(s)", images)
    return result


async def retention_loop(
    journal: Journal, *, retention_days: float, max_units: int, interval_s: float, evidence_dir: Path | None = None,
    conversion: JournalConversion | None = None,
) -> None:
    conversion = conversion or JournalConversion()
    while True:
        try:
            await prune_once(journal, retention_days=retention_days, max_units=max_units, evidence_dir=evidence_dir)
            # Every pass, not only one that pruned: a conversion that gave way is tried again.
            await conversion.run(journal)
        except (sqlite3.Error, OSError) as exc:
            # Retention is housekeeping: a failed pass must not take the controller down.
            log.error("journal retention pass failed: %s", exc)
        await asyncio.sleep(interval_s)
