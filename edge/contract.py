"""MQTT contract version 1: topic names and message envelopes (see docs/mqtt.md).

Topic levels come only from configured identifiers; anything a device sent (barcodes, serials)
goes into payloads, never into topic names.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TOPIC_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
CONTRACT_VERSION = "v1"
CELL_STATES = ("ACCEPTED", "RUNNING", "FINISHED", "FAILED")
CONNECTION_STATES = ("ONLINE", "OFFLINE", "CONNECTIONBROKEN")
# An order message without `action` is a pick order (every order before cancellations existed).
ORDER_ACTIONS = ("pick", "cancel")
MAX_INBOUND_PAYLOAD = 64 * 1024


class ContractError(ValueError):
    """A message or identifier does not follow the MQTT contract."""


def check_topic_id(value: str, what: str) -> str:
    if not TOPIC_ID.match(value):
        raise ContractError(f"{what} {value!r} is not a valid topic level ({TOPIC_ID.pattern})")
    return value


@dataclass(frozen=True)
class Topics:
    prefix: str
    site: str
    line: str

    def __post_init__(self) -> None:
        for level in self.prefix.split("/"):
            check_topic_id(level, "topic prefix level")
        check_topic_id(self.site, "site")
        check_topic_id(self.line, "line")

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.site}/{self.line}"

    @property
    def connection(self) -> str:
        return f"{self.root}/controller/connection"

    @property
    def status(self) -> str:
        return f"{self.root}/controller/status"

    @property
    def decisions(self) -> str:
        return f"{self.root}/units/decisions"

    @property
    def alarms(self) -> str:
        return f"{self.root}/alarms"

    def telemetry(self, device: str) -> str:
        return f"{self.root}/devices/{check_topic_id(device, 'device')}/telemetry"

    def cell_orders(self, cell: str) -> str:
        return f"{self.root}/cells/{check_topic_id(cell, 'cell')}/orders"

    def cell_state(self, cell: str) -> str:
        return f"{self.root}/cells/{check_topic_id(cell, 'cell')}/state"

    def cell_connection(self, cell: str) -> str:
        return f"{self.root}/cells/{check_topic_id(cell, 'cell')}/connection"

    def cell_from_topic(self, topic: str) -> tuple[str, str] | None:
        """(cell, kind) for a cells/{cell}/{state|connection} topic under our root."""
        prefix = f"{self.root}/cells/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :].split("/")
        if len(rest) != 2 or not TOPIC_ID.match(rest[0]) or rest[1] not in ("state", "connection"):
            return None
        return rest[0], rest[1]


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-22T03:12:08.123Z."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Envelope:
    """Builds payloads with the common header; `seq` rises by one per message."""

    def __init__(self, controller: str, first_seq: int = 1) -> None:
        self.controller = controller
        self._next_seq = first_seq
        self._seq_lock = threading.Lock()  # a message may be built off the event loop

    @property
    def next_seq(self) -> int:
        """The seq the next message will take."""
        return self._next_seq

    def take_seq(self) -> int:
        """A seq for a message built later (off the event loop), taken now so seq follows outbox order."""
        with self._seq_lock:
            seq = self._next_seq
            self._next_seq += 1
        return seq

    def build(self, schema: str, body: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
        return {
            "schema": f"returns/{CONTRACT_VERSION}/{schema}",
            "message_id": str(uuid.uuid4()),
            "timestamp": utc_timestamp(),
            "controller": self.controller,
            "seq": self.take_seq() if seq is None else seq,
            **body,
        }


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class CellState:
    decision_id: str
    state: str
    reason: str | None
    lane_capacity: int | None


def _json_object(payload: bytes) -> dict[str, Any]:
    """The inbound payload as a JSON object, within the size limit; raises ContractError."""
    if len(payload) > MAX_INBOUND_PAYLOAD:
        raise ContractError(f"payload of {len(payload)} bytes is over the {MAX_INBOUND_PAYLOAD} byte limit")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ContractError("payload is not a JSON object")
    return data


def parse_cell_state(payload: bytes) -> CellState:
    """Validate a robot cell's state message; raises ContractError with a clear message."""
    data = _json_object(payload)
    decision_id = data.get("decision_id")
    state = data.get("state")
    if not isinstance(decision_id, str) or not 1 <= len(decision_id) <= 64:
        raise ContractError("decision_id missing or not a string of 1-64 characters")
    if state not in CELL_STATES:
        raise ContractError(f"state {state!r} is not one of {', '.join(CELL_STATES)}")
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ContractError("reason must be a string")
    capacity = data.get("lane_capacity")
    if capacity is not None and (not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0):
        raise ContractError("lane_capacity must be a non-negative integer")
    return CellState(decision_id, state, reason[:500] if reason else None, capacity)


@dataclass(frozen=True)
class OrderMessage:
    """What a robot cell needs from a message on cells/{cell}/orders."""

    decision_id: str
    action: str
    unit_id: str | None
    item_id: int | None
    lane: int
    superseded_by: str | None = None


def parse_order(payload: bytes) -> OrderMessage:
    """Validate an order or order cancellation (for robot cells); raises ContractError."""
    data = _json_object(payload)
    decision_id = data.get("decision_id")
    if not isinstance(decision_id, str) or not 1 <= len(decision_id) <= 64:
        raise ContractError("decision_id missing or not a string of 1-64 characters")
    action = data.get("action", "pick")
    if action not in ORDER_ACTIONS:
        raise ContractError(f"action {action!r} is not one of {', '.join(ORDER_ACTIONS)}")
    lane = data.get("lane")
    if not isinstance(lane, int) or isinstance(lane, bool) or not 0 <= lane <= 255:
        raise ContractError("lane missing or not an integer 0-255")
    item_id = data.get("item_id")
    if item_id is not None and (
        not isinstance(item_id, int) or isinstance(item_id, bool) or not 0 <= item_id <= 0xFFFF
    ):
        raise ContractError("item_id must be an integer 0-65535")
    unit_id = data.get("unit_id")
    superseded_by = data.get("superseded_by")
    return OrderMessage(
        decision_id,
        action,
        unit_id if isinstance(unit_id, str) else None,
        item_id,
        lane,
        superseded_by if isinstance(superseded_by, str) else None,
    )


def pick_order(
    *,
    decision_id: str,
    unit_id: str,
    item_id: int | None,
    lane: int,
    disposition: str,
    grade: str | None,
    sku: str | None,
    barcode: str | None,
    needs_sanitization: bool,
) -> dict[str, Any]:
    """Body of a pick order to the cell of the unit's lane (no `action`: a pick is the default)."""
    return {
        "decision_id": decision_id,
        "unit_id": unit_id,
        "item_id": item_id,
        "lane": lane,
        "disposition": disposition,
        "grade": grade,
        "sku": sku,
        "barcode": barcode,
        "needs_sanitization": needs_sanitization,
    }


def order_cancellation(
    *,
    decision_id: str,
    unit_id: str,
    item_id: int | None,
    lane: int,
    reason: str,
    superseded_by: str,
    actual_lane: int | None,
) -> dict[str, Any]:
    """Body of an order cancellation: same decision_id as the order it withdraws. A cell that has
    not finished that order (or never had it) drops it and answers FAILED "cancelled"; one that has
    finished it repeats its final answer (docs/mqtt.md "Order cancellation")."""
    return {
        "action": "cancel",
        "decision_id": decision_id,
        "unit_id": unit_id,
        "item_id": item_id,
        "lane": lane,
        "reason": reason,
        "superseded_by": superseded_by,
        "actual_lane": actual_lane,
    }
