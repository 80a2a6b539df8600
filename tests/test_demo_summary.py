"""`edge demo`'s summary and stop: counts only this run's orders, says how many are not finished,
and waits for the journal's open orders; aiomqtt's pending-calls warning stays out of the output."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import aiomqtt
import pytest

from edge.contract import Topics
from edge.demo import DecisionWatcher, _print_summary, _summary, open_orders, order_counts, wait_for_open_orders
from edge.journal import Journal, OrderToSend, Publication
from edge.logformat import setup_logging

from .conftest import Mosquitto

TOPICS = Topics("returns/v1", "site", "line")


def _line() -> SimpleNamespace:
    """What the summary reads from the simulated line: nothing known about the units."""
    return SimpleNamespace(units_by_item={}, final_lane={}, inducted=3)


def _decision(n: int, cell: str | None = "cell-a") -> bytes:
    return json.dumps({"decision_id": f"d-{n}", "item_id": n, "lane": 1, "cell": cell, "grade": "A",
                       "disposition": "restock", "latency_ms": 10.0}).encode()


def _answer(decision_id: str, state: str) -> bytes:
    return json.dumps({"cell": "cell-a", "decision_id": decision_id, "state": state}).encode()


def test_answers_to_an_earlier_runs_orders_are_not_counted(capsys: pytest.CaptureFixture[str]) -> None:
    watcher = DecisionWatcher("127.0.0.1", 1, TOPICS, _line())  # type: ignore[arg-type]
    state = f"{TOPICS.root}/cells/cell-a/state"
    for n in (1, 2, 3):
        watcher._on_message(TOPICS.decisions, _decision(n))
    watcher._on_message(state, _answer("d-1", "FINISHED"))
    watcher._on_message(state, _answer("d-2", "FAILED"))
    # Orders of an earlier run on the same broker, answered by the cells' kept sessions:
    for old in ("d-701", "d-702", "d-703", "d-704"):
        watcher._on_message(state, _answer(old, "FAILED"))
    assert watcher.run_answers() == {"d-1": "FINISHED", "d-2": "FAILED"}

    summary = _summary(watcher, _line(), 3, 0, 1.0)  # type: ignore[arg-type]  # no journal: what MQTT showed
    assert (summary["orders_finished"], summary["orders_failed"], summary["orders_not_finished"]) == (1, 1, 1)
    capsys.readouterr()
    _print_summary(summary)
    assert "robot cell orders    1 finished, 1 failed, 1 not finished" in capsys.readouterr().out


async def _journal_with_orders(path: Path, states: dict[str, str | None]) -> None:
    async with Journal(path) as journal:
        for n, (decision_id, state) in enumerate(states.items()):
            unit_id = f"U-{decision_id}"
            await journal.record_decision(unit_id, decision_id, n, {"lane": 1, "cell": "cell-a"}, [])
            await journal.record_outcome(
                unit_id, "diverted", {"lane": 1, "cell": "cell-a"}, [Publication("t/decisions", b"{}")],
                OrderToSend(decision_id, unit_id, "cell-a", "t/cells/cell-a/orders", decision_id.encode()), [],
            )
            if state is not None:
                assert await journal.record_cell_state(decision_id, "cell-a", state, None) == "applied"


async def test_the_summary_counts_unfinished_orders_from_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    await _journal_with_orders(path, {"d-old": "FINISHED"})
    since = time.time()
    # The last units of a run: the controller stopped before their cells answered.
    await _journal_with_orders(path, {"d-1": "FINISHED", "d-2": "FINISHED", "d-3": "FAILED", "d-4": "ACCEPTED",
                                      "d-5": None})
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE orders SET queued_at = ? WHERE decision_id = 'd-old'", (since - 3600,))
        db.execute("UPDATE orders SET state = 'CANCELLED' WHERE decision_id = 'd-2'")  # superseded: not counted
    db.close()

    counts = order_counts(path, since=since - 1)
    assert counts == {"finished": 1, "failed": 1, "not_finished": 2}
    assert open_orders(path) == 2
    watcher = DecisionWatcher("127.0.0.1", 1, TOPICS, _line())  # type: ignore[arg-type]
    summary = _summary(watcher, _line(), 3, 0, 1.0, journal_orders=counts)  # type: ignore[arg-type]
    assert summary["orders_not_finished"] == 2


async def test_the_demo_waits_for_open_orders_only_while_there_are_some(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "journal.db"
    assert await wait_for_open_orders(tmp_path / "missing.db", 0.0) is None
    await _journal_with_orders(path, {"d-1": "FINISHED"})
    assert await wait_for_open_orders(path, 3600.0) == 0  # nothing open: no wait at all
    assert "waiting" not in capsys.readouterr().out
    await _journal_with_orders(path, {"d-2": "RUNNING"})
    assert await wait_for_open_orders(path, 0.0) == 1
    assert "waiting up to 0 s for the robot cells to answer 1 open order(s)" in capsys.readouterr().out


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, mqtt = logging.getLogger(), logging.getLogger("mqtt")
    handlers, level, mqtt_level, mqtt_filters = list(root.handlers), root.level, mqtt.level, list(mqtt.filters)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    mqtt.setLevel(mqtt_level)
    mqtt.filters[:] = mqtt_filters


async def _publish_burst(broker: Mosquitto, count: int) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await asyncio.gather(*(client.publish("returns/v1/test", b"x", qos=1) for _ in range(count)))


@pytest.mark.parametrize("debug", [False, True])
async def test_the_pending_publish_calls_warning_is_not_printed_bare(
    mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str], restore_logging: None, debug: bool,
) -> None:
    """More QoS 1 publishes awaiting PUBACK than aiomqtt's threshold (10), like the backlog after an
    outage: no WARNING line; a DEBUG one, through our formatter, only when aiomqtt's logger is at DEBUG."""
    setup_logging(verbose=debug)  # its handler writes to the captured stdout
    if debug:
        logging.getLogger("mqtt").setLevel(logging.DEBUG)  # aiomqtt sets it to WARNING on import
    await _publish_burst(mosquitto, 14)
    lines = [line for line in capsys.readouterr().out.splitlines() if "pending publish calls" in line]
    if debug:
        assert lines and all(" DEBUG mqtt: There are " in line for line in lines)
    else:
        assert lines == []


def test_a_unit_sent_to_the_reject_lane_on_purpose_is_not_a_wrong_lane() -> None:
    truth = SimpleNamespace(ambiguous=False, expected_lane=1)
    line = SimpleNamespace(units_by_item={7: truth}, final_lane={}, inducted=1)
    watcher = DecisionWatcher("127.0.0.1", 1, TOPICS, line)  # type: ignore[arg-type]

    def verdict(lane: int, divert: dict) -> str:
        return watcher.verdict({"item_id": 7, "lane": lane, "divert": divert})

    assert verdict(1, {"status": "accepted", "intended_lane": 1}) == "ok"
    full = "lane 1 (restock) out of service: lane full (cell-a reported 0 free place(s)): reject/manual lane 0"
    assert verdict(0, {"status": "accepted", "intended_lane": 0, "overflow": full}) == (
        "REROUTED (lane 1 out of service)"
    )
    assert verdict(0, {"status": "too_late", "intended_lane": 1}) == "REROUTED (divert to lane 1 too_late)"
    # Graded for another lane than the truth's: wrong, whatever happened to the divert.
    other = full.replace("lane 1 (restock)", "lane 2 (refurbish)")
    assert verdict(0, {"status": "accepted", "intended_lane": 0, "overflow": other}).startswith("MISMATCH")
    assert verdict(0, {"status": "too_late", "intended_lane": 2}).startswith("MISMATCH")
    assert verdict(3, {"status": "accepted", "intended_lane": 3}).startswith("MISMATCH")
