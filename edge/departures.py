"""Journal where each unit physically left the belt, and alarm when that is not where it was sent.

The PLC link turns the lane exit photo-eyes into ExitEvents (plc/exits.py). This records each one
as a `departed` / `not_seen_leaving` / `unmatched_exit` event in the journal, against the unit the
PLC item id belongs to, and raises:

- `divert_mismatch` (critical): the unit left by a lane other than the one the PLC accepted: a
  diverter that did not fire, or fired on the wrong unit. The unit's published lane is wrong, so
  the record is corrected (see `correct_mismatch`): the first cell's order is cancelled, a new
  decision supersedes the old one with the lane the unit really took, and that lane's cell, if it
  has one, gets an order. All of it, the departure and the alarm are one journal transaction.
  The cancellation is delivered like an order: re-sent until the cell answers for that decision_id.
- `lane_found` (info): a unit whose lane was unknown (its divert unconfirmed and not cancelled, a
  `lane_unknown` decision telling a person to search its candidate lanes) was seen leaving by one
  of them. Its record is completed the same way: a new decision names that lane, and its cell, if
  it has one, gets an order, so nobody has to search.
- `unit_not_seen_leaving` (critical): the unit passed the belt end and no exit eye saw it: fell off,
  was taken off by hand, or an eye is dead.
- `exit_unmatched` (warning): an exit eye saw something no tracked unit explains.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from edge.alarms import Alarms
from edge.contract import encode, order_cancellation, pick_order
from edge.journal import Journal, OrderToSend, Publication, state_after_divert

log = logging.getLogger("edge.departures")

# PLC item ids wrap at 65535; a decision older than this cannot belong to a unit still on the belt.
_ITEM_ID_HORIZON_S = 600.0
# Polling a unit's state while its divert outcome is awaited: quick while it is due (it normally
# follows the decision within the PLC's ack timeout, and the cancellation must reach the first cell
# before that cell gives up on the unit), slowing down to the second figure once it is late.
_OUTCOME_POLL_S = (0.05, 1.0)


class ExitEventLike(Protocol):
    kind: str
    item_id: int | None
    lane: int | None
    expected: tuple[int, ...]
    blind: bool
    sole: bool

    @property
    def confirmed(self) -> bool: ...

    def to_dict(self) -> dict[str, object]: ...


async def unit_for_item(journal: Journal, item_id: int) -> str | None:
    """The newest journalled unit with this PLC item id, if it was decided recently."""
    since = time.time() - _ITEM_ID_HORIZON_S

    def query(db: sqlite3.Connection) -> str | None:
        row = db.execute(
            "SELECT unit_id FROM units WHERE item_id = ? AND decided_at >= ? ORDER BY decided_at DESC LIMIT 1",
            (item_id, since),
        ).fetchone()
        return str(row[0]) if row else None

    return await journal.transact(query)


class LaneDirectory(Protocol):
    """The station's lanes (StationConfig): `lane(id)` has `.id`, `.name` and `.cell`."""

    def lane(self, lane_id: int) -> Any: ...


class OrderCounter(Protocol):
    """Lane capacity bookkeeping (edge/lanes.py LaneGuard): every order sent to a lane's cell counts."""

    def count_order(self, lane: int, decision_id: str) -> None: ...

    def give_back(self, decision_id: str) -> None: ...


MISMATCH_REASON = "divert_mismatch"
LANE_FOUND_REASON = "lane_found"
_HEADER = ("schema", "message_id", "timestamp", "controller", "seq")
# Decision fields that described the divert as the pipeline saw it, not where the unit is now.
_STALE = ("recovery", "timings_ms")


def _settles_lane(event: ExitEventLike, decision_json: str) -> bool:
    """Whether `event` says for sure which of its candidate lanes a `lane_unknown` unit took: an eye
    edge that only this unit could explain (not one inferred while the eye stayed blocked, nor one
    shared with a unit in the window, nor after a link gap), about a unit whose divert the tracker
    also held uncertain between the same lanes (a PLC item id reused after a PLC restart names an
    older unit). Anything less leaves the search to a person, as before."""
    if not event.sole or event.blind or len(event.expected) < 2:
        return False
    try:
        candidates = json.loads(decision_json).get("recovery", {}).get("candidate_lanes")
    except (json.JSONDecodeError, AttributeError):
        return False
    return isinstance(candidates, list) and sorted(candidates) == sorted(event.expected)


@dataclass(frozen=True)
class Correction:
    """What correct_mismatch changed for one unit."""

    unit_id: str
    superseded: str
    decision_id: str
    decided_lane: int | None
    actual_lane: int
    cancelled_cell: str | None
    order_cell: str | None
    reason: str = MISMATCH_REASON


async def _decision_state(journal: Journal, unit_id: str) -> str | None:
    def query(db: sqlite3.Connection) -> str | None:
        row = db.execute("SELECT state FROM units WHERE unit_id = ?", (unit_id,)).fetchone()
        return str(row[0]) if row else None

    return await journal.transact(query)


async def _corrected_already(journal: Journal, unit_id: str) -> bool:
    def query(db: sqlite3.Connection) -> bool:
        found = db.execute(
            "SELECT 1 FROM events WHERE unit_id = ? AND kind = 'divert_corrected' LIMIT 1", (unit_id,)
        ).fetchone()
        return found is not None

    return await journal.transact(query)


async def correct_mismatch(
    journal: Journal,
    alarms: Alarms,
    lanes: LaneDirectory,
    unit_id: str,
    event: ExitEventLike,
    *,
    orders: OrderCounter | None = None,
    departure_recorded: bool = False,
) -> Correction | None:
    """Put the record right for a unit an exit eye saw leave by a lane its decision did not name,
    or complete it for a `lane_unknown` unit seen leaving by one of its candidate lanes.

    In one journal transaction: the departure event (unless `departure_recorded` already); a
    cancellation (same decision_id, `action` `cancel`) to the cell of the unit's open order, kept in
    the journal's `cancellations` and re-sent like an order until that cell answers; a new decision
    with its own decision_id that `supersedes` the old one, names the lane the unit took,
    `quarantine` and the reason; an order to that lane's cell if it has one (counted on `orders`,
    the lane capacity guard, once committed); the unit's journal row pointing at the new decision;
    and the `divert_mismatch` alarm. For a `lane_unknown` unit that left by a lane `event` expected
    (one its unconfirmed divert left open), the same with `correction.reason` `lane_found` and an
    info `lane_found` alarm instead: not a fault, the search is over. None (and nothing written)
    when there is nothing to correct: the unit is not in the journal, was corrected already, or its
    decision already names that lane.
    """
    envelope, topics = alarms.envelope, alarms.topics
    actual = event.lane
    if actual is None:
        return None
    try:
        lane = lanes.lane(actual)
        lane_name, cell = lane.name, lane.cell
    except (StopIteration, KeyError, LookupError):
        lane_name, cell = None, None  # an eye on a lane the station file does not list: no cell to tell
    departure = dict(event.to_dict())

    def body(db: sqlite3.Connection) -> tuple[Correction, str] | None:
        row = db.execute("SELECT decision_id, decision, state FROM units WHERE unit_id = ?", (unit_id,)).fetchone()
        if row is None:
            return None
        superseded, decision_json, state = row
        found = state == "lane_unknown" and event.confirmed
        if found and not _settles_lane(event, decision_json):
            return None  # it left by a lane it may have taken, but not for sure: a person still looks
        reason = LANE_FOUND_REASON if found else MISMATCH_REASON
        if db.execute(
            "SELECT 1 FROM events WHERE unit_id = ? AND kind = 'divert_corrected' LIMIT 1", (unit_id,)
        ).fetchone():
            return None  # a departure is concluded once per unit; a repeat must not correct twice
        try:
            old = json.loads(decision_json)
        except json.JSONDecodeError:
            old = {}
        old = old if isinstance(old, dict) else {}
        decided_lane = old.get("lane")
        if decided_lane == actual:
            return None
        now = time.time()
        decision_id = str(uuid.uuid4())
        publications: list[Publication] = []
        note = (
            f"left by lane {actual}, one of the lanes {'/'.join(map(str, event.expected))} its unconfirmed divert "
            "left open" if found else f"left by lane {actual}, but its decision named lane {decided_lane}"
        )
        order_row = db.execute("SELECT cell, topic, state FROM orders WHERE decision_id = ?", (superseded,)).fetchone()
        cancelled_cell = None
        if order_row is not None and order_row[2] not in ("FINISHED", "FAILED"):
            cancelled_cell = str(order_row[0])
            cancel = envelope.build(
                "order",
                order_cancellation(
                    decision_id=superseded,
                    unit_id=unit_id,
                    item_id=event.item_id,
                    lane=int(decided_lane or 0),
                    reason=f"{reason}: unit {note}",
                    superseded_by=decision_id,
                    actual_lane=actual,
                ),
            )
            cancellation = OrderToSend(superseded, unit_id, cancelled_cell, str(order_row[1]), encode(cancel))
            Journal._insert_order(db, cancellation, now, table="cancellations")
            publications.append(Publication(cancellation.topic, cancellation.payload))
            db.execute(
                "UPDATE orders SET state = 'CANCELLED', updated_at = ?, reason = ? WHERE decision_id = ?",
                (now, f"cancelled: unit {note} (superseded by {decision_id})", superseded),
            )
        identity = old.get("identity") if isinstance(old.get("identity"), dict) else {}
        divert = old.get("divert") if isinstance(old.get("divert"), dict) else {}
        old_reasons = old.get("reasons")
        reasons = [r for r in old_reasons if isinstance(r, str)] if isinstance(old_reasons, list) else []
        corrected = {k: v for k, v in old.items() if k not in _HEADER and k not in _STALE}
        corrected.update(
            decision_id=decision_id,
            unit_id=unit_id,
            item_id=old.get("item_id", event.item_id),
            disposition="quarantine",
            lane=actual,
            lane_name=lane_name,
            cell=cell,
            latency_ms=None,
            reasons=[*reasons, f"{reason}: unit {note}: quarantine, a person must check it"],
            divert={
                **divert,
                "status": divert.get("status", "unknown"),
                "intended_lane": divert.get("intended_lane", decided_lane if isinstance(decided_lane, int) else actual),
            },
            supersedes=superseded,
            correction={
                "reason": reason,
                "supersedes": superseded,
                "decided_lane": decided_lane,
                "actual_lane": actual,
                "expected_lanes": list(event.expected),
                "cancelled_cell": cancelled_cell,
            },
        )
        decision = envelope.build("decision", corrected)
        publications.append(Publication(topics.decisions, encode(decision)))
        order = None
        if cell is not None:
            payload = envelope.build(
                "order",
                pick_order(
                    decision_id=decision_id,
                    unit_id=unit_id,
                    item_id=corrected["item_id"],
                    lane=actual,
                    disposition="quarantine",
                    grade=corrected.get("grade"),
                    sku=identity.get("sku"),
                    barcode=identity.get("barcode"),
                    needs_sanitization=bool(corrected.get("needs_sanitization", True)),
                ),
            )
            order = OrderToSend(decision_id, unit_id, cell, topics.cell_orders(cell), encode(payload))
            Journal._insert_order(db, order, now)
            publications.append(Publication(order.topic, order.payload))
        db.execute(
            "UPDATE units SET decision_id = ?, state = ?, lane = ?, cell = ?, disposition = 'quarantine', decision = ?"
            " WHERE unit_id = ?",
            (
                decision_id,
                state_after_divert("diverted", order is not None),
                actual,
                cell,
                json.dumps(decision),
                unit_id,
            ),
        )
        correction = Correction(unit_id, superseded, decision_id, decided_lane, actual, cancelled_cell, cell, reason)
        outcome = (
            f"decision {superseded} superseded by {decision_id} (quarantine, lane {actual}"
            + (f", order to {cell}" if cell else ", no cell: a person must take it")
            + (f"; order to {cancelled_cell} cancelled)" if cancelled_cell else ")")
        )
        if found:
            message = f"{unit_id} found: an exit eye saw it leave by lane {actual}, no need to search; {outcome}"
            publications.append(alarms.publication("event", LANE_FOUND_REASON, unit_id, message, "info"))
        else:
            message = (
                f"{unit_id} {note} (PLC accepted lane {'/'.join(map(str, event.expected))}): check that lane's "
                f"diverter; {outcome}"
            )
            publications.append(alarms.publication("event", MISMATCH_REASON, unit_id, message, "critical"))
        db.executemany(
            "INSERT INTO events(unit_id, at, kind, data) VALUES (?,?,?,?)",
            [
                *([] if departure_recorded else [(unit_id, now, event.kind, json.dumps(departure))]),
                (
                    unit_id,
                    now,
                    "divert_corrected",
                    json.dumps(
                        {
                            "superseded": superseded,
                            "decision_id": decision_id,
                            "decided_lane": decided_lane,
                            "actual_lane": actual,
                            "cancelled_cell": cancelled_cell,
                            "order_cell": cell,
                            "reason": reason,
                        }
                    ),
                ),
            ],
        )
        Journal._enqueue(db, publications, now)
        return correction, message

    result = await journal.transact(body)
    if result is None:
        return None
    journal.outbox_changed.set()
    correction, message = result
    if orders is not None:
        orders.give_back(correction.superseded)  # the unit never reached the lane first counted
        if correction.order_cell is not None:
            orders.count_order(correction.actual_lane, correction.decision_id)
    alarms.note_event(correction.reason, message, subject=unit_id)
    log.log(
        logging.WARNING if correction.reason == LANE_FOUND_REASON else logging.ERROR,
        "corrected unit %s (%s): decision %s superseded by %s, lane %s -> %s",
        unit_id,
        correction.reason,
        correction.superseded,
        correction.decision_id,
        correction.decided_lane,
        correction.actual_lane,
    )
    return correction


PICKED_AFTER_CANCEL = "picked_after_cancel"


async def answered_after_cancel(alarms: Alarms, cell: str, decision_id: str, state: str) -> None:
    """A cell answered for an order that was cancelled (the journal keeps the answer, nothing acts on
    it). FINISHED means the cell picked something although that unit had left by another lane: a
    warning event, for a person to check what is in that cell's lane."""
    if state != "FINISHED":
        return
    await alarms.event(
        PICKED_AFTER_CANCEL,
        f"cell {cell} reported FINISHED for cancelled decision {decision_id}: that unit had left by another "
        "lane, so what the cell picked is not it; check that cell's lane",
        subject=cell,
    )


async def _outcome_state(journal: Journal, unit_id: str, wait_s: float, *, late: bool = False) -> str | None:
    """The unit's journal state once its divert outcome is journalled (no longer `decided`), or
    `decided` when that takes longer than `wait_s`. `late`: polled less and less often."""
    deadline = time.monotonic() + wait_s
    poll_s = _OUTCOME_POLL_S[0]
    while (state := await _decision_state(journal, unit_id)) == "decided" and time.monotonic() < deadline:
        await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        if late:
            poll_s = min(poll_s * 2, _OUTCOME_POLL_S[1])
    return state


async def record_departure(
    journal: Journal,
    alarms: Alarms,
    event: ExitEventLike,
    *,
    decision_wait_s: float = 0.0,
    lanes: LaneDirectory | None = None,
    orders: OrderCounter | None = None,
    outcome_wait_s: float | None = None,
    late_outcome_wait_s: float = _ITEM_ID_HORIZON_S,
) -> str | None:
    """Journal one exit conclusion and raise its alarm; returns the unit id it was matched to.

    A unit can leave the belt before its decision is journalled (grading ran late and it rode to
    the reject lane meanwhile): the lookup is retried for up to `decision_wait_s`. With `lanes`, a
    unit that left by a lane its decision did not name gets its record corrected (correct_mismatch)
    once its divert outcome is journalled, waited for up to `outcome_wait_s` (default
    `decision_wait_s`) counted from when the decision was found. An outcome later than that (a
    stalled journal or PLC link) does not cost the correction: the departure and its alarm are
    recorded at once, and the correction follows when the outcome is journalled, up to
    `late_outcome_wait_s` later. The caller runs each departure in its own task, so a wait holds up
    no other departure.
    """
    unit_id = None
    if event.item_id is not None:
        deadline = time.monotonic() + decision_wait_s
        while (unit_id := await unit_for_item(journal, event.item_id)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    correcting = unit_id is not None and lanes is not None and event.kind == "departed"
    if correcting:
        assert unit_id is not None and lanes is not None
        # The decision and its order go out only once the divert outcome is journalled: correcting
        # before that would be overtaken by the pipeline publishing the old lane. Its own budget:
        # time spent finding the decision must not shorten the wait for the outcome. A confirmed
        # departure waits too: its outcome may be `lane_unknown`, which this departure resolves.
        wait_s = decision_wait_s if outcome_wait_s is None else outcome_wait_s
        state = await _outcome_state(journal, unit_id, wait_s)
        if event.confirmed and state != "lane_unknown":
            correcting = False  # it left where it was sent (or its outcome is still not known)
        elif state != "decided":
            if await correct_mismatch(journal, alarms, lanes, unit_id, event, orders=orders):
                return unit_id
            if await _corrected_already(journal, unit_id):
                return unit_id  # a repeat of a concluded departure: no second event, no second alarm
            correcting = False  # the decision names that lane after all: nothing to correct
    data: dict[str, Any] = dict(event.to_dict())
    await journal.add_event(unit_id, event.kind, data)
    who = unit_id or f"PLC item {event.item_id}"
    expected = "/".join(str(lane) for lane in event.expected)
    unit_subject = unit_id or f"item-{event.item_id}"
    if event.kind == "departed" and not event.confirmed:
        code, severity, subject = "divert_mismatch", "critical", unit_subject
        message = f"{who} left by lane {event.lane}, but the PLC accepted lane {expected}: check that lane's diverter"
        if correcting:
            message += "; its record is corrected once its divert outcome is journalled"
    elif event.kind == "not_seen_leaving":
        code, severity, subject = "unit_not_seen_leaving", "critical", unit_subject
        message = f"{who} (expected lane {expected}) passed the belt end unseen by any exit eye"
    elif event.kind == "unmatched_exit":
        code, severity, subject = "exit_unmatched", "warning", f"lane-{event.lane}"
        message = f"lane {event.lane} exit eye saw a unit that was not tracked"
    else:
        return unit_id
    await alarms.event(code, message, subject=subject, severity=severity)
    if correcting:
        assert unit_id is not None and lanes is not None
        # The alarm could not wait; the correction waits for the outcome, in this departure's own task.
        if await _outcome_state(journal, unit_id, late_outcome_wait_s, late=True) != "decided":
            await correct_mismatch(journal, alarms, lanes, unit_id, event, orders=orders, departure_recorded=True)
        else:
            log.error("unit %s: no divert outcome journalled within %.0f s of its departure; its record is not "
                      "corrected", unit_id, late_outcome_wait_s)
    return unit_id


async def departures_loop(
    plc: Any,
    journal: Journal,
    alarms: Alarms,
    decision_wait_s: float = 10.0,
    lanes: LaneDirectory | None = None,
    orders: OrderCounter | None = None,
) -> None:
    """Record every exit conclusion the PLC link produces (runs until cancelled)."""
    queue = getattr(plc, "departures", None)
    if queue is None:
        return
    pending: set[asyncio.Task[str | None]] = set()
    try:
        while True:
            event = await queue.get()
            # One task each: an event waiting for its unit's decision must not hold up the others.
            task = asyncio.create_task(
                record_departure(journal, alarms, event, decision_wait_s=decision_wait_s, lanes=lanes, orders=orders)
            )
            pending.add(task)
            task.add_done_callback(_finished(pending))
    finally:
        for task in pending:
            task.cancel()


def _finished(pending: set[asyncio.Task[str | None]]) -> Any:
    def done(task: asyncio.Task[str | None]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording a departure failed", exc_info=task.exception())

    return done
