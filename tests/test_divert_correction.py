"""A unit that leaves by another lane than its decision named: the record is corrected.

On a real SQLite journal (and, last, through a real mosquitto to simulated robot cells): the first
cell's order is cancelled, a new decision supersedes the old one with the lane the unit took, that
lane's cell gets an order, all in the outbox in one transaction, once, and across a restart.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edge.alarms import Alarms
from edge.config import load_station
from edge.contract import ContractError, Envelope, Topics, encode, parse_order, pick_order
from edge.departures import answered_after_cancel, correct_mismatch, record_departure
from edge.journal import Journal, OrderToSend, Publication, read_unit_history
from edge.lanes import LaneGuard
from edge.mqtt import MqttLink
from plc.exits import ExitEvent
from simulator.robot_cell import SimulatedRobotCell

from .asyncapi_contract import problems_with
from .conftest import CONFIG

STATION = load_station(CONFIG / "station.sim.yaml")
TOPICS = Topics("returns/v1", "site", "line")


@dataclass(frozen=True)
class Lane:
    id: int
    name: str
    cell: str | None


class Lanes:
    """The station's lanes, as StationConfig.lane() gives them."""

    def __init__(self, *lanes: Lane) -> None:
        self.by_id = {lane.id: lane for lane in lanes}

    def lane(self, lane_id: int) -> Lane:
        return self.by_id[lane_id]


LANES = Lanes(
    Lane(0, "reject", "cell-q"), Lane(1, "restock", "cell-a"), Lane(2, "refurbish", "cell-b"), Lane(3, "recycle", None)
)


def _decision(unit: str, decision_id: str, item: int, lane: int, cell: str | None) -> dict:
    return {
        "unit_id": unit,
        "decision_id": decision_id,
        "item_id": item,
        "identity": {
            "barcode": "0100614141001002\x1d21AB",
            "symbology": "GS1-128",
            "gtin": "00614141001002",
            "serial": "AB",
            "imei": None,
            "rma": None,
            "sku": "S",
            "model": "M",
        },
        "weight_g": 100.0,
        "expected_weight_g": 100.0,
        "weight_tolerance_g": 5.0,
        "vision": {"device_found": True, "defects": [], "damage_score": 0.0},
        "grade": "C",
        "disposition": "refurbish",
        "r2_category": "R2",
        "needs_sanitization": False,
        "lane": lane,
        "lane_name": "refurbish",
        "cell": cell,
        "reasons": ["grade C"],
        "divert": {"status": "accepted", "intended_lane": lane},
        "latency_ms": 12.0,
    }


async def _decided(
    journal: Journal, envelope: Envelope, unit: str, item: int, lane: int = 2, cell: str = "cell-b"
) -> str:
    """A unit decided, diverted and published as the pipeline does it; returns its decision_id."""
    decision_id = f"d-{unit}"
    body = _decision(unit, decision_id, item, lane, cell)
    await journal.record_decision(unit, decision_id, item, body, [("arrived", {"item_id": item})])
    order = envelope.build(
        "order",
        {
            "decision_id": decision_id,
            "unit_id": unit,
            "item_id": item,
            "lane": lane,
            "disposition": "refurbish",
            "grade": "C",
            "sku": "S",
            "barcode": None,
            "needs_sanitization": False,
        },
    )
    message = envelope.build("decision", body)
    await journal.record_outcome(
        unit,
        "diverted",
        message,
        [Publication(TOPICS.decisions, encode(message))],
        OrderToSend(decision_id, unit, cell, TOPICS.cell_orders(cell), encode(order)),
        [],
    )
    return decision_id


def _left_by(item: int, lane: int, expected: int = 2) -> ExitEvent:
    return ExitEvent("departed", item, lane, (expected,), 2400.0, 2900)


async def _outbox_after(journal: Journal, seq: int) -> list[tuple[str, dict]]:
    return [(m.topic, json.loads(m.payload)) for m in await journal.unsent(1000) if m.seq > seq]


async def _last_seq(journal: Journal) -> int:
    return max((m.seq for m in await journal.unsent(1000)), default=0)


def test_a_mismatch_cancels_the_order_and_publishes_a_corrected_decision_once(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> tuple[list[tuple[str, dict]], str, dict]:
        async with Journal(path) as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            old = await _decided(journal, envelope, "U1", item=42)
            before = await _last_seq(journal)
            # The diverter to lane 2 did not fire: the unit left at the belt end, lane 0.
            assert await record_departure(journal, alarms, _left_by(42, 0), lanes=LANES) == "U1"
            published = await _outbox_after(journal, before)
            again = await _last_seq(journal)
            # The same conclusion twice (a retried task) corrects nothing more.
            assert await correct_mismatch(journal, alarms, LANES, "U1", _left_by(42, 0)) is None
            assert await record_departure(journal, alarms, _left_by(42, 0), lanes=LANES) == "U1"
            assert await _outbox_after(journal, again) == []
            assert alarms.raised_total["divert_mismatch"] == 1
            # The superseded order is not re-sent, but its cancellation is, like the new order, until
            # its cell answers; that answer is kept on the order and does not close the unit.
            await journal.mark_sent([m.seq for m in await journal.unsent(1000)])
            assert await journal.requeue_unanswered_orders({}, default_s=0.0) == 2
            resent = await _outbox_after(journal, again)
            assert [(t, p.get("action"), p["decision_id"]) for t, p in resent] == [
                (TOPICS.cell_orders("cell-q"), None, published[1][1]["decision_id"]),
                (TOPICS.cell_orders("cell-b"), "cancel", old),
            ]
            assert resent[1][1] == published[0][1]  # the same message again, same message_id
            assert await journal.record_cell_state(old, "cell-b", "FAILED", "unit not found") == "cancelled"
            assert await journal.record_cell_state(old, "cell-b", "FAILED", "unit not found") == "duplicate"
            await journal.mark_sent([m.seq for m in await journal.unsent(1000)])
            assert await journal.requeue_unanswered_orders({}, default_s=0.0) == 1  # only the new order now
            history = read_unit_history(path, "U1")
            assert history is not None and history["state"] == "diverted"
            return published, old, history

    published, old, history = asyncio.run(run())
    topics = [topic for topic, _ in published]
    assert topics == [TOPICS.cell_orders("cell-b"), TOPICS.decisions, TOPICS.cell_orders("cell-q"), TOPICS.alarms]
    (_, cancel), (_, decision), (_, order), (_, alarm) = published
    assert cancel["action"] == "cancel" and cancel["decision_id"] == old and cancel["lane"] == 2
    assert cancel["superseded_by"] == decision["decision_id"] != old and cancel["actual_lane"] == 0
    assert parse_order(encode(cancel)).action == "cancel"
    assert decision["supersedes"] == old and decision["unit_id"] == "U1" and decision["item_id"] == 42
    assert (decision["lane"], decision["cell"], decision["disposition"]) == (0, "cell-q", "quarantine")
    assert decision["grade"] == "C" and decision["identity"]["serial"] == "AB"  # what was learned still stands
    assert any(r.startswith("divert_mismatch") for r in decision["reasons"])
    assert decision["correction"]["decided_lane"] == 2 and decision["correction"]["cancelled_cell"] == "cell-b"
    assert order["decision_id"] == decision["decision_id"] and order["lane"] == 0 and "action" not in order
    assert (alarm["code"], alarm["severity"], alarm["state"]) == ("divert_mismatch", "critical", "event")
    assert decision["decision_id"] in alarm["message"] and old in alarm["message"]
    for topic, payload in published:
        assert problems_with(topic, encode(payload)) == [], payload
    # The journal row now is the corrected decision; both orders and the correction are on record.
    assert history["decision_id"] == decision["decision_id"] and history["decision"]["lane"] == 0
    assert [(o["cell"], o["state"]) for o in history["orders"]] == [("cell-b", "CANCELLED"), ("cell-q", "QUEUED")]
    assert history["orders"][0]["cancellation"] == {"state": "FAILED", "sent_count": 2, "reason": "unit not found"}
    assert history["orders"][1]["cancellation"] is None
    assert history["order"]["cell"] == "cell-q"
    kinds = [e["kind"] for e in history["events"]]
    assert "divert_corrected" in kinds and "departed" in kinds
    assert any(e["kind"] == "cell_state" and e["data"].get("order") == "cancelled" for e in history["events"])


async def _lane_unknown(journal: Journal, envelope: Envelope, unit: str, item: int, intended: int = 2) -> str:
    """A unit whose divert to `intended` was unconfirmed and not cancelled, journalled as the pipeline
    does it: a quarantine decision with no lane and no order, state `lane_unknown`."""
    decision_id = f"d-{unit}"
    body = _decision(unit, decision_id, item, intended, "cell-b")
    await journal.record_decision(unit, decision_id, item, body, [("arrived", {"item_id": item})])
    body.update(
        disposition="quarantine", lane=None, lane_name=None, cell=None,
        divert={"status": "uncertain", "intended_lane": intended},
        recovery={"reason": "divert unconfirmed", "candidate_lanes": [0, intended],
                  "decided_at": "2026-12-07T10:00:00.000Z"},
    )
    message = envelope.build("decision", body)
    published = [Publication(TOPICS.decisions, encode(message))]
    await journal.record_outcome(unit, "lane_unknown", message, published, None, [])
    return decision_id


def test_a_lane_unknown_unit_seen_leaving_by_a_candidate_lane_is_found(tmp_path: Path) -> None:
    """An unconfirmed divert leaves the unit in one of two lanes and a person searching; the exit eye
    that sees it leave by one of them ends the search: a decision naming that lane, its cell's order,
    an info alarm, once."""
    path = tmp_path / "j.db"

    async def run() -> tuple[list[tuple[str, dict]], str, dict]:
        async with Journal(path) as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            old = await _lane_unknown(journal, envelope, "U7", item=77)
            before = await _last_seq(journal)
            # Evidence that does not settle it changes nothing: an edge inferred while the eye stayed
            # blocked or shared with another unit in the window (sole False), one after a link gap,
            # one about a unit the tracker held sure of its lane (a reused PLC item id).
            for unsure in (
                ExitEvent("departed", 77, 2, (0, 2), 2400.0, 2900),
                ExitEvent("departed", 77, 2, (0, 2), 2400.0, 2900, blind=True, sole=True),
                ExitEvent("departed", 77, 2, (2,), 2400.0, 2900, sole=True),
            ):
                assert unsure.confirmed
                assert await correct_mismatch(journal, alarms, LANES, "U7", unsure) is None
            assert await _outbox_after(journal, before) == []
            found = ExitEvent("departed", 77, 2, (0, 2), 2400.0, 2900, sole=True)
            assert found.confirmed
            assert await record_departure(journal, alarms, found, lanes=LANES) == "U7"
            published = await _outbox_after(journal, before)
            again = await _last_seq(journal)
            assert await record_departure(journal, alarms, found, lanes=LANES) == "U7"
            assert await _outbox_after(journal, again) == []  # a repeat changes nothing
            assert alarms.raised_total["lane_found"] == 1 and alarms.raised_total["divert_mismatch"] == 0
            history = read_unit_history(path, "U7")
            assert history is not None
            return published, old, history

    published, old, history = asyncio.run(run())
    assert [topic for topic, _ in published] == [TOPICS.decisions, TOPICS.cell_orders("cell-b"), TOPICS.alarms]
    (_, decision), (_, order), (_, alarm) = published
    assert decision["supersedes"] == old and (decision["lane"], decision["cell"]) == (2, "cell-b")
    assert decision["disposition"] == "quarantine" and "recovery" not in decision
    assert decision["correction"]["reason"] == "lane_found" and decision["correction"]["decided_lane"] is None
    assert decision["correction"]["cancelled_cell"] is None  # a lane_unknown unit had no order to cancel
    assert any(r.startswith("lane_found: unit left by lane 2") for r in decision["reasons"])
    assert order["decision_id"] == decision["decision_id"] and order["lane"] == 2
    assert (alarm["code"], alarm["severity"], alarm["state"]) == ("lane_found", "info", "event")
    assert "no need to search" in alarm["message"] and old in alarm["message"]
    for topic, payload in published:
        assert problems_with(topic, encode(payload)) == [], payload
    assert history["state"] == "diverted" and history["decision"]["lane"] == 2
    assert [(o["cell"], o["state"]) for o in history["orders"]] == [("cell-b", "QUEUED")]


def test_a_lane_unknown_unit_leaving_by_a_lane_it_could_not_take_is_a_mismatch(tmp_path: Path) -> None:
    async def run() -> tuple[dict, dict]:
        async with Journal(tmp_path / "j.db") as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            await _lane_unknown(journal, envelope, "U8", item=78)
            before = await _last_seq(journal)
            # Candidates 0 and 2; lane 1's diverter fired on it: a fault, not a find.
            assert await record_departure(journal, alarms, ExitEvent("departed", 78, 1, (0, 2), 2400.0, 2900,
                                                                     sole=True), lanes=LANES) == "U8"
            (_, decision), _, (_, alarm) = await _outbox_after(journal, before)
            return decision, alarm

    decision, alarm = asyncio.run(run())
    assert decision["correction"]["reason"] == "divert_mismatch" and decision["lane"] == 1
    assert (alarm["code"], alarm["severity"]) == ("divert_mismatch", "critical")


def test_the_correction_is_durable_and_completes_with_the_new_cell(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def first_run() -> str:
        async with Journal(path) as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            await _decided(journal, envelope, "U2", item=7, lane=1, cell="cell-a")
            await journal.mark_sent([m.seq for m in await journal.unsent(1000)])  # the first lot reached the broker
            correction = await correct_mismatch(
                journal, Alarms(journal, envelope, TOPICS), LANES, "U2", _left_by(7, 2, expected=1)
            )
            assert correction is not None
            return correction.decision_id
        # the process stops here, before the broker saw the correction

    new_id = asyncio.run(first_run())

    async def after_restart() -> tuple[list[str], str, str]:
        async with Journal(path) as journal:
            waiting = [m.topic for m in await journal.unsent(1000)]
            outcome = await journal.record_cell_state(new_id, "cell-b", "FINISHED", None)
            row = await journal.transact(lambda db: db.execute("SELECT state FROM units").fetchone())
            return waiting, outcome, row[0]

    waiting, outcome, state = asyncio.run(after_restart())
    assert waiting == [TOPICS.cell_orders("cell-a"), TOPICS.decisions, TOPICS.cell_orders("cell-b"), TOPICS.alarms]
    assert (outcome, state) == ("applied", "complete")


def test_nothing_is_corrected_when_the_decision_names_the_lane_or_the_lane_has_no_cell(tmp_path: Path) -> None:
    async def run() -> tuple[list, list]:
        async with Journal(tmp_path / "j.db") as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            # The PLC did not accept the divert, so the decision already said lane 0 (reject).
            await _decided(journal, envelope, "U3", item=3, lane=0, cell="cell-q")
            before = await _last_seq(journal)
            assert await correct_mismatch(journal, alarms, LANES, "U3", _left_by(3, 0)) is None
            assert await _outbox_after(journal, before) == []
            # Left by lane 3, which has no robot cell: corrected, no order, the unit is done here.
            await _decided(journal, envelope, "U4", item=4)
            before = await _last_seq(journal)
            assert await record_departure(journal, alarms, _left_by(4, 3), lanes=LANES) == "U4"
            published = await _outbox_after(journal, before)
            rows = await journal.transact(
                lambda db: db.execute("SELECT unit_id, state, lane, cell FROM units ORDER BY unit_id").fetchall()
            )
            return published, rows

    published, rows = asyncio.run(run())
    assert [p[1].get("action") or p[1]["schema"] for p in published] == [
        "cancel",
        "returns/v1/decision",
        "returns/v1/alarm",
    ]
    assert published[1][1]["cell"] is None and "a person must take it" in published[2][1]["message"]
    assert rows == [("U3", "diverted", 0, "cell-q"), ("U4", "complete", 3, None)]


def test_a_unit_leaving_before_its_outcome_is_journalled_is_corrected_after_it(tmp_path: Path) -> None:
    """The exit can be seen while the pipeline still waits for the divert ack: correcting then
    would be overtaken by the pipeline publishing the old lane."""

    async def run() -> list[str]:
        async with Journal(tmp_path / "j.db") as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            body = _decision("U5", "d-U5", 5, 2, "cell-b")
            await journal.record_decision("U5", "d-U5", 5, body, [])

            async def outcome_later() -> None:
                await asyncio.sleep(0.3)
                message = envelope.build("decision", body)
                await journal.record_outcome(
                    "U5", "diverted", message, [Publication(TOPICS.decisions, encode(message))], None, []
                )

            later = asyncio.create_task(outcome_later())
            await record_departure(
                journal, Alarms(journal, envelope, TOPICS), _left_by(5, 0), lanes=LANES, decision_wait_s=5.0
            )
            await later
            return [
                json.loads(m.payload).get("supersedes", "-")
                for m in await journal.unsent(1000)
                if m.topic == TOPICS.decisions
            ]

    assert asyncio.run(run()) == ["-", "d-U5"]  # the original first, then the correction superseding it


def test_cells_honour_a_cancellation_through_a_real_broker(mosquitto, tmp_path: Path) -> None:
    """The order reaches cell-b, which waits for the unit; the cancellation stops it (answered FAILED
    "cancelled", kept on the cancelled order), and cell-q, where the unit really is, gets the
    corrected order and finishes it."""
    events: list[dict] = []
    physical: dict[int, int] = {}

    async def run() -> tuple[str, dict | None]:
        async with Journal(tmp_path / "j.db") as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)

            async def on_message(topic: str, payload: bytes) -> None:
                parsed = TOPICS.cell_from_topic(topic)
                if parsed is not None and parsed[1] == "state":
                    data = json.loads(payload)
                    await journal.record_cell_state(data["decision_id"], parsed[0], data["state"], data.get("reason"))

            cells = [
                SimulatedRobotCell(
                    cell,
                    lanes,
                    TOPICS,
                    mosquitto.host,
                    mosquitto.port,
                    physical.get,
                    finish_after_s=0.1,
                    unit_wait_s=20.0,
                    on_event=events.append,
                )
                for cell, lanes in (("cell-b", {2}), ("cell-q", {0}))
            ]
            link = MqttLink(
                host=mosquitto.host,
                port=mosquitto.port,
                client_id="edge-t",
                topics=TOPICS,
                journal=journal,
                on_message=on_message,
                reconnect_max_s=0.5,
                subscriptions=[f"{TOPICS.root}/cells/+/state"],
            )
            async with cells[0], cells[1], link:
                await asyncio.wait_for(asyncio.gather(*(c.online.wait() for c in cells), link.connected.wait()), 15)
                old = await _decided(journal, envelope, "U6", item=66)
                await _until(lambda: "d-U6" in cells[0].record.handled)  # cell-b waits for the unit
                # The stuck diverter let it ride to the belt end, where the reject eye saw it.
                assert await record_departure(journal, alarms, _left_by(66, 0), lanes=LANES) == "U6"
                await _until(lambda: cells[0].record.cancelled)
                physical[66] = 0  # cell-q finds it in its lane (cell-b would have said FAILED)
                await _until(lambda: any(e.get("state") == "FINISHED" for e in events))
                await asyncio.sleep(0.3)  # time for a wrong late answer to show up
                state = await journal.transact(
                    lambda db: db.execute("SELECT state FROM units WHERE unit_id='U6'").fetchone()[0]
                )
                assert cells[0].record.cancelled == [old]
                return state, read_unit_history(tmp_path / "j.db", "U6")

    state, history = asyncio.run(run())
    assert state == "complete"
    assert [(e["cell"], e["state"]) for e in events] == [("cell-b", "CANCELLED"), ("cell-q", "FINISHED")]
    assert history is not None
    assert [(o["cell"], o["state"]) for o in history["orders"]] == [("cell-b", "CANCELLED"), ("cell-q", "FINISHED")]
    assert history["orders"][0]["cancellation"] == {"state": "FAILED", "sent_count": 1, "reason": "cancelled"}


async def _until(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.05)


def test_the_contract_tells_a_cancellation_from_an_order() -> None:
    envelope = Envelope("edge-t")
    cancel = envelope.build(
        "order",
        {
            "action": "cancel",
            "decision_id": "d-1",
            "unit_id": "U1",
            "item_id": 4,
            "lane": 2,
            "reason": "r",
            "superseded_by": "d-2",
            "actual_lane": 0,
        },
    )
    topic = TOPICS.cell_orders("cell-b")
    assert problems_with(topic, encode(cancel)) == []
    assert problems_with(topic, encode({k: v for k, v in cancel.items() if k != "superseded_by"}))
    assert problems_with(topic, encode({**cancel, "action": "undo"}))
    assert problems_with(topic, encode({**cancel, "grade": "A"}))  # neither a pick order nor a cancellation
    assert (parse_order(encode(cancel)).action, parse_order(encode(cancel)).superseded_by) == ("cancel", "d-2")
    pick = parse_order(b'{"decision_id": "d-3", "lane": 1, "item_id": 9, "unit_id": "U3"}')
    assert (pick.action, pick.lane, pick.item_id) == ("pick", 1, 9)


@given(
    st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from(["decision_id", "action", "lane", "item_id", "unit_id", "superseded_by"]),
            st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=70)),
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_parse_order_accepts_or_rejects_clearly(payload: bytes) -> None:
    try:
        order = parse_order(payload)
    except ContractError:
        return
    assert order.action in ("pick", "cancel") and 0 <= order.lane <= 255 and 1 <= len(order.decision_id) <= 64


async def _cancellation(journal: Journal, decision_id: str) -> tuple[str, int, str | None] | None:
    def query(db):  # type: ignore[no-untyped-def]
        return db.execute(
            "SELECT state, sent_count, reason FROM cancellations WHERE decision_id = ?", (decision_id,)
        ).fetchone()

    return await journal.transact(query)


def test_a_cancellation_is_re_sent_until_answered_and_expires_like_an_order(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> tuple[list[list[tuple[str, str | None]]], list, dict, list[dict], dict]:
        async with Journal(path) as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            old = await _decided(journal, envelope, "U8", item=8)
            correction = await correct_mismatch(journal, alarms, LANES, "U8", _left_by(8, 0))
            assert correction is not None
            rounds = []
            for older_than in ({"cell-b": 3600.0}, {"cell-b": 0.0}):
                await journal.mark_sent([m.seq for m in await journal.unsent(1000)])
                await journal.requeue_unanswered_orders(older_than, default_s=3600.0)
                rounds.append([(m.topic, json.loads(m.payload).get("action")) for m in await journal.unsent(1000)])
            # cell-b still says nothing: after its expiry the cancellation is given up, alarmed like an
            # order (one order_unanswered per cell) and journalled; the unit keeps its corrected record.
            expired = await alarms.expire_unanswered({"cell-b": 0.0}, default_s=3600.0)
            alarm_messages = [json.loads(m.payload) for m in await journal.unsent(1000) if m.topic == TOPICS.alarms]
            await journal.mark_sent([m.seq for m in await journal.unsent(1000)])
            assert await journal.requeue_unanswered_orders({"cell-b": 0.0}, default_s=3600.0) == 0
            expired_row = await _cancellation(journal, old)
            assert expired_row is not None and expired_row[:2] == ("EXPIRED", 2) and "cell-b" in str(expired_row[2])
            # A late answer still closes it on record, and is not applied to the unit.
            assert await journal.record_cell_state(old, "cell-b", "FAILED", "cancelled") == "cancelled"
            await alarms.cell_answered("cell-b")
            alarm_messages += [json.loads(m.payload) for m in await journal.unsent(1000) if m.topic == TOPICS.alarms]
            history = read_unit_history(path, "U8")
            assert history is not None
            return rounds, expired, history, alarm_messages, {"new": correction.decision_id, "old": old}

    rounds, expired, history, alarm_messages, ids = asyncio.run(run())
    assert rounds[0] == []  # not yet due
    assert sorted(rounds[1]) == sorted([(TOPICS.cell_orders("cell-b"), "cancel")])
    assert [(e.decision_id, e.cell, e.cancellation) for e in expired] == [(ids["old"], "cell-b", True)]
    assert [(a["code"], a["state"], a["subject"]) for a in alarm_messages] == [
        ("order_unanswered", "raised", "cell-b"), ("order_unanswered", "cleared", "cell-b"),
    ]
    # Said as what happened: the cell may have picked a unit whose record is already corrected.
    raised, cleared = alarm_messages[0]["message"], alarm_messages[1]["message"]
    assert f"did not answer the cancellation of decision {ids['old']} (unit U8)" in raised
    assert "check that the cell did not pick the withdrawn unit" in raised and "must see to the unit" not in raised
    assert f"1 cancellation(s) went unanswered meanwhile (decisions {ids['old']})" in cleared
    assert "order(s) expired" not in cleared and "`expired`" not in cleared
    assert history["state"] == "diverted" and history["decision_id"] == ids["new"]
    assert history["orders"][0]["cancellation"] == {"state": "FAILED", "sent_count": 2, "reason": "cancelled"}
    assert [e["data"]["decision_id"] for e in history["events"] if e["kind"] == "cancellation_expired"] == [ids["old"]]
    assert not any(e["kind"] == "order_expired" for e in history["events"])


def test_a_cancellation_waits_longer_once_the_cell_reports_it_running(tmp_path: Path) -> None:
    """A cell built before cancellations repeats RUNNING for an order it is still working on: that
    answer is kept, and like a running order's it is re-sent only after three timeouts."""

    async def run() -> list[int]:
        async with Journal(tmp_path / "j.db") as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            old = await _decided(journal, envelope, "U9", item=9)
            assert await correct_mismatch(journal, Alarms(journal, envelope, TOPICS), LANES, "U9", _left_by(9, 0))
            assert await journal.record_cell_state(old, "cell-b", "RUNNING", None) == "cancelled"
            assert await journal.record_cell_state(old, "cell-b", "ACCEPTED", None) == "duplicate"
            # The broker acknowledged the cancellation: a copy still waiting in the outbox is never doubled.
            await journal.mark_sent([m.seq for m in await journal.unsent()])

            def age(db) -> None:  # type: ignore[no-untyped-def]
                db.execute("UPDATE cancellations SET updated_at = updated_at - 150")

            await journal.transact(age)
            counts = [await journal.requeue_unanswered_orders({"cell-b": 100.0}, default_s=3600.0)]
            await journal.transact(age)
            await journal.transact(age)
            counts.append(await journal.requeue_unanswered_orders({"cell-b": 100.0}, default_s=3600.0))
            return counts

    assert asyncio.run(run()) == [0, 1]


def test_a_cancellation_survives_a_restart_and_is_re_sent_after_it(tmp_path: Path) -> None:
    """The broker took the cancellation, but cell-b was away with a clean session: lost. After a
    restart the controller's re-send on connecting (Controller._on_connect) sends it again."""
    path = tmp_path / "j.db"

    async def first_run() -> tuple[str, bytes]:
        async with Journal(path) as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            old = await _decided(journal, envelope, "U10", item=10)
            assert await correct_mismatch(journal, Alarms(journal, envelope, TOPICS), LANES, "U10", _left_by(10, 0))
            sent = await journal.unsent(1000)
            await journal.mark_sent([m.seq for m in sent])  # all of it reached the broker
            cancel = next(m.payload for m in sent if json.loads(m.payload).get("action") == "cancel")
            return old, cancel

    old, cancel = asyncio.run(first_run())

    async def after_restart() -> tuple[list[bytes], str, int, list[bytes]]:
        async with Journal(path) as journal:
            await journal.requeue_unanswered_orders({}, default_s=0.0)
            again = [m.payload for m in await journal.unsent(1000) if m.topic == TOPICS.cell_orders("cell-b")]
            outcome = await journal.record_cell_state(old, "cell-b", "FAILED", "cancelled")
            await journal.mark_sent([m.seq for m in await journal.unsent(1000)])
            count = await journal.requeue_unanswered_orders({}, default_s=0.0)
            later = [m.payload for m in await journal.unsent(1000) if m.topic == TOPICS.cell_orders("cell-b")]
            return again, outcome, count, later

    again, outcome, count, later = asyncio.run(after_restart())
    assert again == [cancel]
    assert (outcome, count, later) == ("cancelled", 1, [])  # answered: only cell-q's order is still open


def test_finished_after_a_cancellation_is_kept_and_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> tuple[str, list[dict], dict]:
        async with Journal(path) as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            old = await _decided(journal, envelope, "U11", item=11)
            assert await correct_mismatch(journal, alarms, LANES, "U11", _left_by(11, 0))
            before = await _last_seq(journal)
            # What Controller._inbound does with the answer.
            outcome = await journal.record_cell_state(old, "cell-b", "FINISHED", None)
            assert outcome == "cancelled"
            await answered_after_cancel(alarms, "cell-b", old, "FINISHED")
            await answered_after_cancel(alarms, "cell-b", "d-other", "FAILED")  # the expected answer: quiet
            alarm_messages = [p for t, p in await _outbox_after(journal, before) if t == TOPICS.alarms]
            history = read_unit_history(path, "U11")
            assert history is not None
            return old, alarm_messages, history

    old, alarm_messages, history = asyncio.run(run())
    assert [(a["code"], a["severity"], a["state"], a["subject"]) for a in alarm_messages] == [
        ("picked_after_cancel", "warning", "event", "cell-b")
    ]
    assert old in alarm_messages[0]["message"]
    assert problems_with(TOPICS.alarms, encode(alarm_messages[0])) == []
    assert history["state"] == "diverted"  # the corrected order to cell-q still decides the unit
    assert history["orders"][0]["state"] == "CANCELLED"
    assert history["orders"][0]["cancellation"]["state"] == "FINISHED"


def test_the_corrected_order_counts_against_the_actual_lane(tmp_path: Path) -> None:
    """And the lane first counted gets its place back: the unit never reached it."""

    async def run() -> tuple[int, int, int | None, tuple[int, int, int]]:
        async with Journal(tmp_path / "j.db") as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            guard = LaneGuard(STATION)
            for cell in ("cell-q", "cell-b"):
                guard.on_connection(cell, "ONLINE")
            guard.route(0, "seed")
            guard.on_capacity("cell-q", "seed", 5)
            guard.route(3, "seed-b")
            guard.on_capacity("cell-b", "seed-b", 2)
            before = guard.free[0]
            await _decided(journal, envelope, "U12", item=12, lane=3, cell="cell-b")
            assert guard.route(3, "d-U12") == (3, None)  # as the pipeline counted it
            lane_3 = [guard.free[3]]
            correction = await correct_mismatch(
                journal, Alarms(journal, envelope, TOPICS), STATION, "U12", _left_by(12, 0, expected=3), orders=guard
            )
            assert correction is not None and correction.order_cell == "cell-q"
            lane_3.append(guard.free[3])
            guard.give_back("d-U12")  # said twice: nothing more changes
            lane_3.append(guard.free[3])
            # cell-b's answer to the cancellation still reports on lane 3
            assert guard.on_capacity("cell-b", "d-U12", 2) == 3
            # cell-q's reports about the corrected order are about lane 0
            return before, guard.free[0], guard.on_capacity("cell-q", correction.decision_id, 9), tuple(lane_3)

    assert asyncio.run(run()) == (5, 4, 0, (1, 2, 2))


def test_an_outcome_journalled_late_still_gets_the_record_corrected(tmp_path: Path) -> None:
    """The divert outcome comes after the wait (a stalled journal or PLC link): the mismatch alarm
    goes out at once, and the correction follows when the outcome is journalled."""
    path = tmp_path / "j.db"

    async def run() -> tuple[list[str], list[dict], list[str]]:
        async with Journal(path) as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            body = _decision("U13", "d-U13", 13, 2, "cell-b")
            await journal.record_decision("U13", "d-U13", 13, body, [])
            departure = asyncio.create_task(
                record_departure(
                    journal, alarms, _left_by(13, 0), lanes=LANES, decision_wait_s=0.1, late_outcome_wait_s=60.0
                )
            )

            def mismatch_alarmed() -> bool:
                return alarms.raised_total["divert_mismatch"] >= 1

            await _until(mismatch_alarmed)
            assert not departure.done()  # still waiting for the outcome, in its own task
            message = envelope.build("decision", body)
            order = envelope.build("order", pick_order(
                decision_id="d-U13", unit_id="U13", item_id=13, lane=2, disposition="refurbish", grade="C",
                sku="S", barcode=None, needs_sanitization=False,
            ))
            await journal.record_outcome(
                "U13", "diverted", message, [Publication(TOPICS.decisions, encode(message))],
                OrderToSend("d-U13", "U13", "cell-b", TOPICS.cell_orders("cell-b"), encode(order)), [],
            )
            assert await asyncio.wait_for(departure, 30) == "U13"
            unsent = [(m.topic, json.loads(m.payload)) for m in await journal.unsent(1000)]
            history = read_unit_history(path, "U13")
            assert history is not None
            kinds = [e["kind"] for e in history["events"]]
            return (
                [p.get("supersedes", "-") for t, p in unsent if t == TOPICS.decisions],
                [p for t, p in unsent if t == TOPICS.alarms],
                kinds,
            )

    decisions, alarm_messages, kinds = asyncio.run(run())
    assert decisions == ["-", "d-U13"]
    assert [a["code"] for a in alarm_messages] == ["divert_mismatch", "divert_mismatch"]
    assert "corrected once its divert outcome is journalled" in alarm_messages[0]["message"]
    assert "superseded by" in alarm_messages[1]["message"]
    assert kinds.count("departed") == 1 and kinds.count("divert_corrected") == 1


def test_a_cell_offline_with_a_clean_session_still_gets_the_cancellation(mosquitto, tmp_path: Path) -> None:
    """cell-b has the order, then drops off the broker with a clean session: the cancellation sent
    meanwhile is lost to it. Back online it gets the re-sent cancellation, stops and answers FAILED
    "cancelled", which the journal keeps on the cancelled order."""
    path = tmp_path / "j.db"

    async def run() -> tuple[str, list[str], tuple[str, int, str | None] | None, int]:
        async with Journal(path) as journal:
            envelope = Envelope("edge-t", await journal.reserve_sequence_block())
            alarms = Alarms(journal, envelope, TOPICS)
            outcomes: list[str] = []

            async def on_message(topic: str, payload: bytes) -> None:
                parsed = TOPICS.cell_from_topic(topic)
                if parsed is not None and parsed[1] == "state":
                    data = json.loads(payload)
                    state, reason = data["state"], data.get("reason")
                    outcomes.append(await journal.record_cell_state(data["decision_id"], parsed[0], state, reason))

            def cell_b() -> SimulatedRobotCell:
                return SimulatedRobotCell(
                    "cell-b", {2}, TOPICS, mosquitto.host, mosquitto.port, lambda _: None,
                    unit_wait_s=60.0, clean_session=True,
                )

            link = MqttLink(
                host=mosquitto.host, port=mosquitto.port, client_id="edge-t", topics=TOPICS, journal=journal,
                on_message=on_message, reconnect_max_s=0.5, subscriptions=[f"{TOPICS.root}/cells/+/state"],
            )
            async with link:
                await asyncio.wait_for(link.connected.wait(), 15)
                first = cell_b()
                async with first:
                    await asyncio.wait_for(first.online.wait(), 15)
                    old = await _decided(journal, envelope, "U14", item=14)
                    await _until(lambda: old in first.record.handled)  # it waits for the unit
                    await _until(lambda: "applied" in outcomes)  # its ACCEPTED
                # cell-b is gone, with no session on the broker
                assert await record_departure(journal, alarms, _left_by(14, 0), lanes=LANES) == "U14"

                async def delivered() -> bool:
                    return not [m for m in await journal.unsent(1000) if m.topic == TOPICS.cell_orders("cell-b")]

                async with asyncio.timeout(10):
                    while not await delivered():  # the broker took it (and had nobody to give it to)
                        await asyncio.sleep(0.05)
                back = cell_b()
                back.record = first.record  # the same cell, back: it remembers the order it had
                async with back:
                    await asyncio.wait_for(back.online.wait(), 15)

                    async def resend() -> None:  # what Controller._resend_orders does, faster
                        while True:
                            await journal.requeue_unanswered_orders({"cell-b": 0.2}, default_s=3600.0)
                            await asyncio.sleep(0.1)

                    resender = asyncio.create_task(resend())
                    try:
                        await _until(lambda: "cancelled" in outcomes)
                    finally:
                        resender.cancel()
                    cancelled = list(back.record.cancelled)
                    answer = await _cancellation(journal, old)
                    return old, cancelled, answer, outcomes.count("cancelled")

    old, cancelled, answer, answers = asyncio.run(run())
    assert cancelled == [old]
    assert answer is not None and answer[0] == "FAILED" and answer[2] == "cancelled" and answer[1] >= 2
    assert answers == 1
    history = read_unit_history(path, "U14")
    assert history is not None and history["orders"][0]["cancellation"]["state"] == "FAILED"
