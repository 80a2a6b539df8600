"""The durable decision journal and MQTT outbox (SQLite in WAL mode).

Every decision is committed here before the diverter is commanded, and every message that must
reach the broker is written to the outbox in the same transaction as the state change it
announces. The MQTT side drains the outbox in order and marks rows sent on PUBACK, so a broker
outage or a crash loses nothing and re-sends what was not acknowledged.

SQLite calls run on one dedicated thread, so the event loop never waits on an fsync. Calls that
queue up while that thread is busy run together in one transaction (group commit): each keeps its
own atomicity through a savepoint, and each caller is answered only after the shared COMMIT, so
"awaited" still means "on disk" while a burst costs one fsync and one wake-up of the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    unit_id      TEXT PRIMARY KEY,
    decision_id  TEXT UNIQUE NOT NULL,
    item_id      INTEGER,
    decided_at   REAL NOT NULL,
    state        TEXT NOT NULL,      -- decided, diverted, divert_failed, complete, lane_unknown, expired
    lane         INTEGER,
    cell         TEXT,
    grade        TEXT,
    disposition  TEXT,
    decision     TEXT NOT NULL       -- the decision payload as published (JSON)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT NOT NULL,
    payload      BLOB NOT NULL,
    qos          INTEGER NOT NULL,
    retain       INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    sent_at      REAL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(seq) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS orders (
    decision_id  TEXT PRIMARY KEY,
    unit_id      TEXT NOT NULL,
    cell         TEXT NOT NULL,
    topic        TEXT NOT NULL,
    payload      BLOB NOT NULL,
    state        TEXT NOT NULL,      -- QUEUED, ACCEPTED, RUNNING, FINISHED, FAILED, EXPIRED, CANCELLED
    sent_count   INTEGER NOT NULL DEFAULT 0,  -- copies put in the outbox: the first send and each re-send
    queued_at    REAL NOT NULL,
    updated_at   REAL NOT NULL,
    reason       TEXT,
    expiry_from  REAL                -- when a copy was last seen still waiting in the outbox (see below)
);
CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id      TEXT,
    at           REAL NOT NULL,
    kind         TEXT NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_unit ON events(unit_id);
-- Open orders are counted every status period and scanned for re-sends: keep that off the
-- table scan as the journal grows.
CREATE INDEX IF NOT EXISTS orders_open ON orders(state) WHERE state NOT IN ('FINISHED', 'FAILED');
-- The cancellation of a CANCELLED order (edge/departures.py), delivered like an order: re-sent until
-- the cell answers for that decision_id, expired like one. `state` is QUEUED until the cell answers,
-- then its answer (FAILED "cancelled" when it stopped or never had the order, or the FINISHED/FAILED
-- it had already reported), or EXPIRED. Pruned together with its order.
CREATE TABLE IF NOT EXISTS cancellations (
    decision_id  TEXT PRIMARY KEY REFERENCES orders(decision_id) ON DELETE CASCADE,
    unit_id      TEXT NOT NULL,
    cell         TEXT NOT NULL,
    topic        TEXT NOT NULL,
    payload      BLOB NOT NULL,
    state        TEXT NOT NULL,
    sent_count   INTEGER NOT NULL DEFAULT 0,
    queued_at    REAL NOT NULL,
    updated_at   REAL NOT NULL,
    reason       TEXT,
    expiry_from  REAL
);
CREATE INDEX IF NOT EXISTS cancellations_open ON cancellations(state) WHERE state NOT IN ('FINISHED', 'FAILED');
CREATE TABLE IF NOT EXISTS meta (
    key          TEXT PRIMARY KEY,
    value        TEXT NOT NULL
);
"""

FINAL_CELL_STATES = ("FINISHED", "FAILED")
SEQ_BLOCK = 1_000_000
# EXPIRED (no answer within the order expiry, no longer re-sent) ranks with RUNNING: a late FINISHED
# or FAILED still completes the decision, a late ACCEPTED does not reopen it.
STATE_RANK = {"QUEUED": 0, "ACCEPTED": 1, "RUNNING": 2, "EXPIRED": 2, "FINISHED": 3, "FAILED": 3}
# Orders (and cancellations) still waiting for their cell; the first term matches the partial indexes.
# CANCELLED: withdrawn after an exit eye saw the unit leave by another lane (edge/departures.py); from
# then on its row in `cancellations` is what waits for the cell.
OPEN_ORDER = "state NOT IN ('FINISHED', 'FAILED') AND state NOT IN ('EXPIRED', 'CANCELLED')"
# Tables of messages re-sent to a cell until it answers for their decision_id, and expired alike.
DELIVERIES = ("orders", "cancellations")
RUNNING_FACTOR = 3  # accepted/running orders are re-sent after this many order timeouts


@dataclass(frozen=True)
class OutboxMessage:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class Publication:
    """A message to put in the outbox."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class ExpiredOrder:
    decision_id: str
    unit_id: str
    cell: str
    sent_count: int
    waited_s: float
    # True: the cancellation of that (withdrawn) order went unanswered, not the order itself.
    cancellation: bool = False


@dataclass(frozen=True)
class OrderToSend:
    decision_id: str
    unit_id: str
    cell: str
    topic: str
    payload: bytes


def state_after_divert(state: str, has_order: bool) -> str:
    """A unit diverted to a lane without a robot cell is done: no cell will ever answer for it."""
    if not has_order and state in ("diverted", "divert_failed"):
        return "complete"
    return state


class JournalError(Exception):
    """The journal cannot be opened or written."""


# "body": fn(db) run inside the shared transaction of its group; "raw": fn(*args) run alone,
# outside any transaction (open, close, checkpoint, VACUUM cannot run inside one).
CallKind = Literal["body", "raw"]


@dataclass(slots=True)
class _Call:
    kind: CallKind
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


# (future, succeeded, result or exception), handed back to the event loop in one callback.
_Outcome = tuple["asyncio.Future[Any]", bool, Any]


class _JournalWorker:
    """The thread that owns the SQLite connection and runs queued calls in FIFO order.

    Every call that is already waiting when the thread picks up work is taken at once; runs of
    consecutive transaction bodies share one BEGIN IMMEDIATE ... COMMIT, each body inside its own
    savepoint so that a body that raises is rolled back alone, exactly as if it had had its own
    transaction. Results go back only after the COMMIT, in one event-loop callback per group.
    """

    def __init__(self, journal: Journal, name: str) -> None:
        self._journal = journal
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # Daemon: a loop that never closes the journal must not keep the process alive. Nothing is
        # lost by that: a call nobody saw answered was never promised to be on disk.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.batches = 0  # groups run, and calls in them: how much group commit saves
        self.calls = 0

    def submit(self, call: _Call) -> None:
        self._queue.put(call)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                calls.append(more)
            try:
                self._run_calls(calls)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                # Answers already sent stay (they are delivered first); the rest get this error,
                # and no half-done transaction may block every later one.
                db = self._journal._db
                if db is not None and db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                self._answer(calls, [(c.future, False, exc) for c in calls])
            if stop:
                return

    def _run_calls(self, calls: list[_Call]) -> None:
        start = 0
        while start < len(calls):
            if calls[start].kind == "raw":
                self._run_raw(calls[start])
                start += 1
                continue
            end = start
            while end < len(calls) and calls[end].kind == "body":
                end += 1
            self._run_group(calls[start:end])
            start = end

    @staticmethod
    def _deliver(outcomes: list[_Outcome]) -> None:
        for future, ok, value in outcomes:
            if future.done():  # the caller was cancelled meanwhile
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _answer(self, calls: list[_Call], outcomes: list[_Outcome]) -> None:
        if not outcomes:
            return
        # RuntimeError: the event loop is closed, nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            calls[0].loop.call_soon_threadsafe(self._deliver, outcomes)

    def _run_raw(self, call: _Call) -> None:
        if call.future.cancelled():  # cancelled before it started: never run, like an executor job
            return
        try:
            outcome: _Outcome = (call.future, True, call.fn(*call.args))
        except BaseException as exc:  # handed to the caller
            outcome = (call.future, False, exc)
        self._answer([call], [outcome])

    def _run_group(self, calls: list[_Call]) -> None:
        calls = [c for c in calls if not c.future.cancelled()]
        if not calls:
            return
        db = self._journal._db
        if db is None:
            error = JournalError("journal is closed")
            self._answer(calls, [(c.future, False, error) for c in calls])
            return
        self.batches += 1
        self.calls += len(calls)
        outcomes: list[_Outcome] = []
        try:
            db.execute("BEGIN IMMEDIATE")
        except BaseException as exc:  # every caller learns of it
            self._answer(calls, [(c.future, False, exc) for c in calls])
            return
        for index, call in enumerate(calls):
            try:
                db.execute("SAVEPOINT call")
                result = call.fn(db)
            except BaseException as exc:  # handed to the caller
                if not self._undo_savepoint(db):
                    # The error took the whole transaction with it (SQLite rolls back on some
                    # failures, e.g. a full disk): the bodies before this one are gone too.
                    outcomes = [(f, False, exc if ok else value) for f, ok, value in outcomes]
                    outcomes.append((call.future, False, exc))
                    self._answer(calls, outcomes)
                    self._run_group(calls[index + 1 :])
                    return
                outcomes.append((call.future, False, exc))
            else:
                db.execute("RELEASE call")
                outcomes.append((call.future, True, result))
        try:
            db.execute("COMMIT")
        except BaseException as exc:  # nothing of this group is on disk
            if db.in_transaction:
                db.execute("ROLLBACK")
            outcomes = [(f, False, exc if ok else value) for f, ok, value in outcomes]
        self._answer(calls, outcomes)

    @staticmethod
    def _undo_savepoint(db: sqlite3.Connection) -> bool:
        """Roll back the current body alone; False when the transaction itself is gone."""
        if not db.in_transaction:
            return False
        try:
            db.execute("ROLLBACK TO call")
            db.execute("RELEASE call")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return False
        return True


class Journal:
    """Async facade over one SQLite connection owned by a dedicated thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._worker: _JournalWorker | None = None
        self._closed = False
        self._db: sqlite3.Connection | None = None
        self.outbox_changed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Journal:
        try:
            await self._call(self._open)
        except BaseException:
            self._stop_worker()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._db is not None:
            await self._call(self._close)
        self._closed = True
        self._stop_worker()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()

    @property
    def group_commit_figures(self) -> tuple[int, int]:
        """(transactions committed, calls they carried) since the journal opened."""
        worker = self._worker
        return (worker.batches, worker.calls) if worker is not None else (0, 0)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                # Only takes effect before the first table exists: lets retention hand pruned pages
                # back to the file system (older files are converted by edge/retention.py's
                # JournalConversion, in the retention task while no unit is in flight).
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before we command the diverter, even across a power cut.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(SCHEMA)
            for table in DELIVERIES:  # journals from before expiry_from
                if "expiry_from" not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN expiry_from REAL")
            integrity = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        if integrity != "ok":
            raise JournalError(f"journal {self.path} failed its integrity check: {integrity}")
        self._db = db

    def _close(self) -> None:
        assert self._db is not None
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        self._db = None

    def _submit(self, kind: CallKind, fn: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self._closed:
            raise RuntimeError("cannot use a closed journal")
        if self._worker is None:
            self._worker = _JournalWorker(self, "journal_0")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._worker.submit(_Call(kind, fn, args, loop, future))
        return future

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the journal thread on its own, outside any transaction."""
        result: T = await self._submit("raw", fn, args)
        return result

    async def _tx(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run body(db) on the journal thread in a transaction (shared with the calls queued
        alongside it); returns once that transaction is committed."""
        result: T = await self._submit("body", body, ())
        return result

    async def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (keeps the WAL bounded)."""

        def run() -> None:
            if self._db is not None:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        await self._call(run)

    async def reclaim_space(self, max_pages: int = 4096) -> int:
        """Give free pages back to the file system after pruning; returns how many pages went.

        With incremental auto-vacuum, at most `max_pages` per call, so the journal thread (and the
        decisions waiting on it) is never held for long. A file created without it gives nothing back
        until edge/retention.py has converted it (one full VACUUM, while the line is idle).
        """

        def run() -> int:
            db = self._db
            if db is None:
                raise JournalError("journal is closed")
            before = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            if free == 0:
                return 0
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                return 0
            # executescript steps the pragma to completion: execute() would free a single page.
            db.executescript(f"PRAGMA incremental_vacuum({int(max_pages)});")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return before - db.execute("PRAGMA page_count").fetchone()[0]

        return await self._call(run)

    async def maintain(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(db) on the journal thread outside any transaction (VACUUM cannot run in one); the
        calls made meanwhile wait for it."""

        def run() -> T:
            if self._db is None:
                raise JournalError("journal is closed")
            return fn(self._db)

        return await self._call(run)

    async def transact(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run `body` atomically in an IMMEDIATE transaction on the journal thread (for maintenance
        modules); the transaction may carry other calls' bodies too, each in its own savepoint."""
        return await self._tx(body)

    # -- message sequence numbers --------------------------------------------------------------

    async def reserve_sequence_block(self) -> int:
        """First header `seq` of a fresh block; seq numbers never repeat across restarts."""

        def body(db: sqlite3.Connection) -> int:
            start = int(read_meta(db, "seq_reserved") or 0)
            write_meta(db, "seq_reserved", str(start + SEQ_BLOCK))
            return start + 1

        return await self._tx(body)

    # -- decisions -------------------------------------------------------------------------------

    async def record_decision(
        self, unit_id: str, decision_id: str, item_id: int, decision: dict[str, Any], audit: list[tuple[str, dict]]
    ) -> None:
        """Commit a decision (and the unit's readings so far) before the diverter is commanded."""
        now = time.time()

        def body(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO units(unit_id, decision_id, item_id, decided_at, state, lane, cell, grade,"
                " disposition, decision) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    unit_id,
                    decision_id,
                    item_id,
                    now,
                    "decided",
                    decision.get("lane"),
                    decision.get("cell"),
                    decision.get("grade"),
                    decision.get("disposition"),
                    json.dumps(decision),
                ),
            )
            db.executemany(
                "INSERT INTO events(unit_id, at, kind, data) VALUES (?,?,?,?)",
                [(unit_id, now, kind, json.dumps(data)) for kind, data in audit],
            )

        await self._tx(body)

    async def record_outcome(
        self,
        unit_id: str,
        state: str,
        decision: dict[str, Any],
        publications: list[Publication],
        order: OrderToSend | None,
        audit: list[tuple[str, dict]],
    ) -> None:
        """After the divert: the final decision, its messages and the cell order, atomically."""
        now = time.time()
        state = state_after_divert(state, order is not None)

        def body(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE units SET state=?, lane=?, cell=?, grade=?, disposition=?, decision=? WHERE unit_id=?",
                (
                    state,
                    decision.get("lane"),
                    decision.get("cell"),
                    decision.get("grade"),
                    decision.get("disposition"),
                    json.dumps(decision),
                    unit_id,
                ),
            )
            self._enqueue(db, publications, now)
            if order is not None:
                self._insert_order(db, order, now)
                self._enqueue(db, [Publication(order.topic, order.payload)], now)
            db.executemany(
                "INSERT INTO events(unit_id, at, kind, data) VALUES (?,?,?,?)",
                [(unit_id, now, kind, json.dumps(data)) for kind, data in audit],
            )

        await self._tx(body)
        self.outbox_changed.set()

    @staticmethod
    def _insert_order(db: sqlite3.Connection, order: OrderToSend, now: float, table: str = "orders") -> None:
        """Record a cell order (or, with table `cancellations`, the cancellation of one) as QUEUED
        and sent once: `sent_count` 1 for the copy the caller puts in the outbox (see
        `requeue_unanswered_orders` for what the count means)."""
        assert table in DELIVERIES
        db.execute(
            f"INSERT INTO {table}(decision_id, unit_id, cell, topic, payload, state, sent_count,"
            " queued_at, updated_at) VALUES (?,?,?,?,?,'QUEUED',1,?,?)",
            (order.decision_id, order.unit_id, order.cell, order.topic, order.payload, now, now),
        )

    @staticmethod
    def _enqueue(db: sqlite3.Connection, publications: list[Publication], now: float) -> None:
        db.executemany(
            "INSERT INTO outbox(topic, payload, qos, retain, created_at) VALUES (?,?,?,?,?)",
            [(p.topic, p.payload, p.qos, int(p.retain), now) for p in publications],
        )

    async def enqueue(self, publications: list[Publication]) -> None:
        await self._tx(lambda db: self._enqueue(db, publications, time.time()))
        self.outbox_changed.set()

    async def add_event(self, unit_id: str | None, kind: str, data: dict[str, Any]) -> None:
        await self._tx(
            lambda db: db.execute(
                "INSERT INTO events(unit_id, at, kind, data) VALUES (?,?,?,?)",
                (unit_id, time.time(), kind, json.dumps(data)),
            ),
        )

    # -- outbox ------------------------------------------------------------------------------------

    @staticmethod
    def _unsent(db: sqlite3.Connection, limit: int) -> list[OutboxMessage]:
        rows = db.execute(
            "SELECT seq, topic, payload, qos, retain FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [OutboxMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows]

    async def unsent(self, limit: int = 100) -> list[OutboxMessage]:
        return await self._tx(lambda db: self._unsent(db, limit))

    async def mark_sent(self, seqs: list[int]) -> None:
        now = time.time()
        await self._tx(
            lambda db: db.executemany("UPDATE outbox SET sent_at=? WHERE seq=?", [(now, s) for s in seqs]),
        )

    async def mark_sent_and_fetch(self, seqs: list[int], limit: int = 100) -> list[OutboxMessage]:
        """`mark_sent(seqs)` then `unsent(limit)` in one trip to the journal thread (the drain loop's step)."""
        now = time.time()

        def body(db: sqlite3.Connection) -> list[OutboxMessage]:
            db.executemany("UPDATE outbox SET sent_at=? WHERE seq=?", [(now, s) for s in seqs])
            return self._unsent(db, limit)

        return await self._tx(body)

    # -- robot cell orders -------------------------------------------------------------------------

    async def record_cell_state(self, decision_id: str, cell: str, state: str, reason: str | None) -> str:
        """Apply a cell's answer. Returns 'applied', 'duplicate', 'unknown', 'wrong_cell', or
        'cancelled' for a (new) answer about an order that was cancelled: kept, not acted on."""
        now = time.time()

        def body(db: sqlite3.Connection) -> str:
            row = db.execute(
                "SELECT unit_id, cell, state FROM orders WHERE decision_id=?", (decision_id,)
            ).fetchone()
            if row is None:
                return "unknown"
            unit_id, order_cell, current = row
            if order_cell != cell:
                return "wrong_cell"
            if current == "CANCELLED":
                # The unit left by another lane and a newer decision superseded this order: the answer
                # closes the cancellation (no more re-sends) and goes on record, but says nothing
                # about the unit's state.
                cancellation = db.execute(
                    "SELECT state FROM cancellations WHERE decision_id=?", (decision_id,)
                ).fetchone()
                if cancellation is not None:
                    answered = cancellation[0]
                    if answered in FINAL_CELL_STATES or STATE_RANK.get(state, 0) <= STATE_RANK.get(answered, 0):
                        return "duplicate"
                    db.execute(
                        "UPDATE cancellations SET state=?, updated_at=?, reason=? WHERE decision_id=?",
                        (state, now, reason, decision_id),
                    )
                db.execute(
                    "INSERT INTO events(unit_id, at, kind, data) VALUES (?,?,?,?)",
                    (unit_id, now, "cell_state", json.dumps(
                        {"cell": cell, "state": state, "reason": reason, "order": "cancelled"})),
                )
                return "cancelled"
            if current in FINAL_CELL_STATES or STATE_RANK.get(state, 0) <= STATE_RANK.get(current, 0):
                # QoS 1 re-deliveries and repeated answers: apply each step once, never go backwards
                return "duplicate"
            db.execute(
                "UPDATE orders SET state=?, updated_at=?, reason=? WHERE decision_id=?",
                (state, now, reason, decision_id),
            )
            if state in FINAL_CELL_STATES:
                db.execute("UPDATE units SET state='complete' WHERE unit_id=?", (unit_id,))
            db.execute(
                "INSERT INTO events(unit_id, at, kind, data) VALUES (?,?,?,?)",
                (unit_id, now, "cell_state", json.dumps({"cell": cell, "state": state, "reason": reason})),
            )
            return "applied"

        return await self._tx(body)

    async def requeue_unanswered_orders(self, older_than_s: dict[str, float], default_s: float) -> int:
        """Put orders and cancellations with no final answer back in the outbox, same decision_id
        and payload; returns how many copies were put there (the re-sends).

        Unanswered ones go after the cell's timeout; accepted or running ones after three times
        that, because their FINISHED may have been lost while the cell was offline: the cell
        repeats its latest state for a decision_id it already handled, so a re-send is harmless.

        `sent_count` counts the copies of an order put in the outbox, the first one included; the
        outbox publishes each copy until the broker acknowledges it. An order whose copy is still
        waiting there (queued during a broker outage, or not yet acknowledged) gets no second copy
        and is not counted again: after a reconnect that copy is its first send, not a re-send.
        """
        now = time.time()

        def body(db: sqlite3.Connection) -> int:
            return sum(requeue(db, table) for table in DELIVERIES)

        def requeue(db: sqlite3.Connection, table: str) -> int:
            rows = db.execute(
                f"SELECT decision_id, cell, topic, payload, updated_at, state FROM {table} WHERE {OPEN_ORDER}"
            ).fetchall()
            due = [
                r for r in rows
                if now - r[4] >= older_than_s.get(r[1], default_s) * (1 if r[5] == "QUEUED" else RUNNING_FACTOR)
            ]
            copies = 0
            for decision_id, _cell, topic, payload, _, _ in due:
                if _copy_waiting(db, topic, payload):
                    # A copy still waiting for the broker is enough; its timeout starts again.
                    db.execute(f"UPDATE {table} SET updated_at=? WHERE decision_id=?", (now, decision_id))
                    continue
                self._enqueue(db, [Publication(topic, bytes(payload))], now)
                db.execute(
                    f"UPDATE {table} SET sent_count=sent_count+1, updated_at=? WHERE decision_id=?",
                    (now, decision_id),
                )
                copies += 1
            return copies

        count = await self._tx(body)
        if count:
            self.outbox_changed.set()
        return count

    # -- figures and audit -------------------------------------------------------------------------

    async def depths(self) -> dict[str, int]:
        def query(db: sqlite3.Connection) -> dict[str, int]:
            outbox = db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
            open_orders = db.execute(f"SELECT count(*) FROM orders WHERE {OPEN_ORDER}").fetchone()[0]
            cancels = db.execute(f"SELECT count(*) FROM cancellations WHERE {OPEN_ORDER}").fetchone()[0]
            return {"outbox": outbox, "open_orders": open_orders, "open_cancellations": cancels}

        return await self._tx(query)

    async def units_in_state(self, state: str) -> list[tuple[str, str, int]]:
        def query(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
            return db.execute("SELECT unit_id, decision_id, item_id FROM units WHERE state=?", (state,)).fetchall()

        return await self._tx(query)


def orders_due_to_expire(
    db: sqlite3.Connection, expiry_s: dict[str, float], default_s: float, now: float,
) -> list[ExpiredOrder]:
    """The open orders and cancellations their cell has not finished within its expiry, for
    `expire_orders`; run in the transaction that expires them.

    The expiry counts from the first send: an order whose first copy is still waiting in the outbox
    (the broker was away since it was queued) has not been sent, so it is not due; its `expiry_from`
    is set to now instead, and its expiry counts from there (within a second of the copy leaving, as
    this runs every second while connected) rather than from when it was queued."""
    due = []
    # Every second, over every open order: only those past the shortest expiry are read whole.
    overdue_since = now - min([*expiry_s.values(), default_s])
    for table in DELIVERIES:
        rows = db.execute(
            f"SELECT decision_id, unit_id, cell, sent_count, COALESCE(expiry_from, queued_at), topic, payload"
            f" FROM {table} WHERE {OPEN_ORDER} AND COALESCE(expiry_from, queued_at) <= ?",
            (overdue_since,),
        ).fetchall()
        for decision_id, unit_id, cell, sent_count, since, topic, payload in rows:
            if now - since < expiry_s.get(cell, default_s):
                continue
            # Only the first copy: a re-send waiting for a moment (they leave within milliseconds)
            # must not give an order that was delivered long ago a new expiry.
            if sent_count <= 1 and _copy_waiting(db, topic, payload):
                db.execute(f"UPDATE {table} SET expiry_from=? WHERE decision_id=?", (now, decision_id))
                continue
            due.append(ExpiredOrder(decision_id, unit_id, cell, sent_count, now - since, table == "cancellations"))
    return due


def _copy_waiting(db: sqlite3.Connection, topic: str, payload: bytes) -> bool:
    """Whether a copy of this message is still in the outbox, not yet acknowledged by the broker."""
    return db.execute(
        "SELECT 1 FROM outbox WHERE sent_at IS NULL AND topic=? AND payload=? LIMIT 1", (topic, payload)
    ).fetchone() is not None


def read_meta(db: sqlite3.Connection, key: str) -> str | None:
    """The journal's `meta` value under `key` (state a restart must find again), or None."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def write_meta(db: sqlite3.Connection, key: str, value: str | None) -> None:
    """Keep `value` under `key` in the journal's `meta` (None: forget it)."""
    if value is None:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))
    else:
        db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )


def expire_orders(db: sqlite3.Connection, orders: list[ExpiredOrder], now: float) -> None:
    """Stop re-sending these orders: each becomes EXPIRED and its unit `expired`, both final, with an
    audit event. A person has to see to the unit; a late FINISHED or FAILED from the cell is still
    applied. Cancellations expire alike (event `cancellation_expired`), but leave the unit as it is:
    it belongs to the decision that superseded the cancelled one. The caller commits the alarm that
    announces them in the same transaction (edge/alarms.py)."""
    for order in orders:
        table = "cancellations" if order.cancellation else "orders"
        what = "answer to the cancellation" if order.cancellation else "FINISHED or FAILED"
        reason = (f"no {what} from {order.cell} within {order.waited_s:.0f} s "
                  f"({order.sent_count} send(s)): no longer re-sent")
        db.execute(f"UPDATE {table} SET state='EXPIRED', updated_at=?, reason=? WHERE decision_id=?",
                   (now, reason, order.decision_id))
        if not order.cancellation:
            db.execute("UPDATE units SET state='expired' WHERE unit_id=?", (order.unit_id,))
        db.execute(
            "INSERT INTO events(unit_id, at, kind, data) VALUES (?,?,?,?)",
            (order.unit_id, now, "cancellation_expired" if order.cancellation else "order_expired",
             json.dumps({"cell": order.cell, "decision_id": order.decision_id, "reason": reason})),
        )


def read_unit_history(path: Path, unit_id: str) -> dict[str, Any] | None:
    """A unit's whole record, read-only (for `edge units show`)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT unit_id, decision_id, item_id, decided_at, state, decision FROM units WHERE unit_id=?",
            (unit_id,),
        ).fetchone()
        if row is None:
            return None
        events = db.execute(
            "SELECT at, kind, data FROM events WHERE unit_id=? ORDER BY id", (unit_id,)
        ).fetchall()
        # A unit has more than one order when its decision was superseded (edge/departures.py); the
        # cancelled one carries its cancellation and what the cell answered to it.
        orders = db.execute(
            "SELECT o.cell, o.state, o.sent_count, o.reason, o.decision_id, c.state, c.sent_count, c.reason"
            " FROM orders o LEFT JOIN cancellations c ON c.decision_id = o.decision_id"
            " WHERE o.unit_id=? ORDER BY o.queued_at",
            (unit_id,),
        ).fetchall()
        order = next((o[:4] for o in orders if o[4] == row[1]), orders[-1][:4] if orders else None)
    finally:
        db.close()
    return {
        "unit_id": row[0],
        "decision_id": row[1],
        "item_id": row[2],
        "decided_at": row[3],
        "state": row[4],
        "decision": json.loads(row[5]),
        "order": dict(zip(("cell", "state", "sent_count", "reason"), order, strict=True)) if order else None,
        "orders": [
            {
                **dict(zip(("cell", "state", "sent_count", "reason", "decision_id"), o[:5], strict=True)),
                "cancellation": (
                    dict(zip(("state", "sent_count", "reason"), o[5:], strict=True)) if o[5] is not None else None
                ),
            }
            for o in orders
        ],
        "events": [{"at": e[0], "kind": e[1], "data": json.loads(e[2])} for e in events],
    }
