import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.contract import ContractError, Envelope, Topics, parse_cell_state, utc_timestamp


def test_topics_follow_the_contract() -> None:
    topics = Topics("returns/v1", "dc-berlin", "line-1")
    assert topics.decisions == "returns/v1/dc-berlin/line-1/units/decisions"
    assert topics.cell_orders("cell-a") == "returns/v1/dc-berlin/line-1/cells/cell-a/orders"
    assert topics.cell_from_topic("returns/v1/dc-berlin/line-1/cells/cell-a/state") == ("cell-a", "state")
    assert topics.cell_from_topic("returns/v1/dc-berlin/line-1/cells/a/b/state") is None
    with pytest.raises(ContractError):
        topics.telemetry("scanner/#")
    with pytest.raises(ContractError):
        Topics("returns/v1", "dc+", "line")


def test_envelope_header() -> None:
    envelope = Envelope("edge-01", first_seq=41)
    first = envelope.build("decision", {"x": 1})
    second = envelope.build("decision", {"x": 2})
    assert first["schema"] == "returns/v1/decision"
    assert (first["seq"], second["seq"]) == (41, 42)
    assert first["message_id"] != second["message_id"]
    assert first["timestamp"].endswith("Z") and len(first["timestamp"]) == len("2026-11-22T03:12:08.123Z")
    assert utc_timestamp().count(".") == 1


def test_cell_state_parsing() -> None:
    state = parse_cell_state(json.dumps({"decision_id": "d1", "state": "FAILED", "reason": "jam"}).encode())
    assert (state.decision_id, state.state, state.reason) == ("d1", "FAILED", "jam")
    for bad in (b"", b"[]", b"\xff", b'{"decision_id": "d1", "state": "DONE"}', b'{"state": "FINISHED"}',
                b'{"decision_id": "d", "state": "RUNNING", "lane_capacity": -1}', b"x" * 70000):
        with pytest.raises(ContractError):
            parse_cell_state(bad)


@given(st.binary(max_size=512))
def test_cell_state_parser_never_raises_anything_else(payload: bytes) -> None:
    with contextlib.suppress(ContractError):
        parse_cell_state(payload)


@given(st.dictionaries(st.text(max_size=12), st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                                       st.booleans(), st.floats(allow_nan=False)), max_size=6))
def test_cell_state_parser_on_json_objects(obj) -> None:
    with contextlib.suppress(ContractError):
        parse_cell_state(json.dumps(obj).encode())
