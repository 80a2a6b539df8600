"""The AsyncAPI document itself: well formed, covering every topic, and strict enough to catch drift."""

from __future__ import annotations

import json

import pytest
import yaml

from edge.contract import Envelope, Topics, encode

from .asyncapi_contract import ASYNCAPI, load_channels, problems_with

TOPICS = Topics("returns/v1", "site-1", "line-1")


def _decision(**changes: object) -> dict:
    body = {
        "unit_id": "U1", "decision_id": "d-1", "item_id": 7,
        "identity": {"barcode": "0100614141001002\u001d21X7K2", "symbology": "GS1-128", "gtin": "00614141001002",
                     "serial": "X7K2", "imei": None, "rma": None, "sku": "PH-1", "model": "Phone"},
        "weight_g": 173.4, "expected_weight_g": 174.0, "weight_tolerance_g": 6.0,
        "vision": {"device_found": True, "defects": [{"kind": "scratch", "length_mm": 5.1, "x_mm": 1.0}],
                   "damage_score": 0.1},
        "grade": "B", "disposition": "restock", "r2_category": "R2 reuse", "needs_sanitization": True,
        "lane": 1, "lane_name": "restock", "cell": "cell-a", "reasons": ["grade B"],
        "divert": {"status": "accepted", "intended_lane": 1}, "latency_ms": 21.4,
    }
    body.update(changes)
    return Envelope("edge-01", 5).build("decision", body)


def test_document_declares_every_topic_of_the_contract() -> None:
    document = yaml.safe_load(ASYNCAPI.read_text())
    assert document["asyncapi"].startswith("2.6")
    names = {c.message for c in load_channels()}
    assert names == {"Connection", "Status", "Telemetry", "Decision", "Order", "CellState", "Alarm"}
    for topic in (TOPICS.connection, TOPICS.status, TOPICS.decisions, TOPICS.alarms, TOPICS.telemetry("plc"),
                  TOPICS.cell_orders("cell-a"), TOPICS.cell_state("cell-a"), TOPICS.cell_connection("cell-a")):
        assert sum(1 for c in load_channels() if c.pattern.match(topic)) == 1, topic


def test_a_good_decision_conforms() -> None:
    assert problems_with(TOPICS.decisions, encode(_decision())) == []
    recovered = _decision(lane=None, cell=None, lane_name=None, disposition="quarantine",
                          divert={"status": "unknown", "intended_lane": 1},
                          recovery={"reason": "restart", "candidate_lanes": [1, 0]})
    assert problems_with(TOPICS.decisions, encode(recovered)) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"grade": "E"}, "grade"),
        ({"disposition": "sell"}, "disposition"),
        ({"lane": "1"}, "lane"),
        ({"reasons": []}, "reasons"),
        ({"cell": "cell/a"}, "cell"),
        ({"identity": {"barcode": "x"}}, "identity"),
    ],
)
def test_a_drifted_decision_is_caught(change: dict, why: str) -> None:
    found = problems_with(TOPICS.decisions, encode(_decision(**change)))
    assert found and any(why in problem for problem in found), found


def test_header_fields_are_checked() -> None:
    decision = _decision()
    for broken in ({"seq": 0}, {"timestamp": "2026-11-22 03:12:08"}, {"message_id": "x"}):
        assert problems_with(TOPICS.decisions, encode({**decision, **broken}))
    del decision["controller"]
    assert problems_with(TOPICS.decisions, encode(decision))


def test_orders_allow_no_unknown_fields_and_connection_is_plain_text() -> None:
    order = Envelope("edge-01").build("order", {
        "decision_id": "d", "unit_id": "u", "item_id": 1, "lane": 1, "disposition": "restock", "grade": "A",
        "sku": "S", "barcode": "B", "needs_sanitization": False})
    assert problems_with(TOPICS.cell_orders("cell-a"), encode(order)) == []
    assert problems_with(TOPICS.cell_orders("cell-a"), encode({**order, "extra": 1}))
    assert problems_with(TOPICS.connection, b"ONLINE") == []
    assert problems_with(TOPICS.connection, b"online")
    assert problems_with(TOPICS.cell_state("c"), json.dumps({"decision_id": "d", "state": "DONE"}).encode())
    assert problems_with("returns/v1/site-1/line-1/somewhere/else", b"{}")
