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
from edge.contract import ContractError, Envelope, Topics, encode, parse_order
from edge.departures import correct_mismatch, record_departure
from edge.journal import Journal, OrderToSend, Publication, read_unit_history
from edge.mqtt import MqttLink
from plc.exits import ExitEvent
from simulator.robot_cell import SimulatedRobotCell

from .asyncapi_contract import problems_with

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
            # The superseded order is not re-sent; its cell's late answer does not close the unit.
            assert await journal.requeue_unanswered_orders({}, default_s=0.0) == 1  # only the new order
            assert await journal.record_cell_state(old, "cell-b", "FAILED", "unit not found") == "cancelled"
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
    assert history["order"]["cell"] == "cell-q"
    kinds = [e["kind"] for e in history["events"]]
    assert "divert_corrected" in kinds and "departed" in kinds
    assert any(e["kind"] == "cell_state" and e["data"].get("order") == "cancelled" for e in history["events"])


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
    """The order reaches cell-b, which waits for the unit; the cancellation stops it (no FAILED),
    and cell-q, where the unit really is, gets the corrected order and finishes it."""
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
