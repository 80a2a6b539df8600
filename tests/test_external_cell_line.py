"""A robot cell of the user's own on the simulated line (`external_cells`), end to end.

`edge sim` and `edge run` as separate processes on a real mosquitto. The scenario leaves cell-a to
the test: a small cell written to docs/mqtt.md (retained ONLINE, orders at QoS 1, ACCEPTED then
FINISHED, every copy of an order answered, none handled twice). The simulator must not play
cell-a, and every order the controller sends to cell-a must end FINISHED in the journal.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from edge.yamlconf import ConfigError
from simulator.scenario import load_scenario

from .conftest import CONFIG
from .fault_harness import LineRun, wait_for

UNITS = 16


class DocsCell:
    """A robot cell as an integrator writes it from docs/mqtt.md."""

    def __init__(self, host: str, port: int, prefix: str, cell: str) -> None:
        self.prefix, self.cell = prefix, cell
        self.lock = threading.Lock()
        self.copies: dict[str, int] = {}  # decision_id -> copies received
        self.handled: list[str] = []  # decision_ids picked, in order
        self.latest: dict[str, dict[str, Any]] = {}
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"docs-{cell}", clean_session=False)
        self.client.will_set(f"{prefix}/cells/{cell}/connection", "CONNECTIONBROKEN", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(f"{self.prefix}/cells/{self.cell}/orders", qos=1)
        client.publish(f"{self.prefix}/cells/{self.cell}/connection", "ONLINE", qos=1, retain=True)

    def _answer(self, decision_id: str, state: str, **extra: Any) -> None:
        message = {"decision_id": decision_id, "state": state, "lane_capacity": 20, **extra}
        self.latest[decision_id] = message
        self.client.publish(f"{self.prefix}/cells/{self.cell}/state", json.dumps(message), qos=1)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        order = json.loads(message.payload)
        decision_id = order["decision_id"]
        with self.lock:
            self.copies[decision_id] = self.copies.get(decision_id, 0) + 1
            if decision_id in self.latest:  # a copy: repeat the latest answer, never handle it twice
                self.client.publish(f"{self.prefix}/cells/{self.cell}/state", json.dumps(self.latest[decision_id]),
                                    qos=1)
                return
            if order.get("action") == "cancel":
                self._answer(decision_id, "FAILED", reason="cancelled")
                return
            self.handled.append(decision_id)
            self._answer(decision_id, "ACCEPTED")
            self._answer(decision_id, "FINISHED")

    def stop(self) -> None:
        offline = self.client.publish(f"{self.prefix}/cells/{self.cell}/connection", "OFFLINE", qos=1, retain=True)
        offline.wait_for_publish(5)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.e2e
def test_an_external_cell_answers_the_orders_of_its_lanes(mosquitto, tmp_path: Path) -> None:
    run = LineRun(tmp_path, mosquitto, units=UNITS, rate=2.0, seed=12, linger=3.0,
                  faults={"no_read": 0.0, "wrong_weight": 0.0, "unknown_gtin": 0.0},
                  scenario={"external_cells": ["cell-a"]})
    cell = None
    try:
        run.start_sim()
        station = run.daemon_station()
        prefix = f"{station['mqtt']['topic_prefix']}/{station['site']}/{station['line']}"
        cell = DocsCell(mosquitto.host, mosquitto.port, prefix, "cell-a")
        wait_for(lambda: "not simulated (yours to answer): cell-a" in (tmp_path / "sim.log").read_text(), 30,
                 "the simulator to say it leaves cell-a alone")
        run.start_daemon()
        run.finish(timeout=120)
    finally:
        run.close()
        if cell is not None:
            cell.stop()

    db = sqlite3.connect(run.run_dir / "journal.db")
    orders = db.execute("SELECT decision_id, state FROM orders WHERE cell = 'cell-a'").fetchall()
    db.close()
    assert orders, "the seeded units include restock units for lane 1 (cell-a)"
    assert all(state == "FINISHED" for _, state in orders), orders
    assert sorted(cell.handled) == sorted(decision_id for decision_id, _ in orders)
    assert len(set(cell.handled)) == len(cell.handled)
    # The simulator's own cells never saw cell-a's orders.
    cell_events = [json.loads(line) for line in (run.run_dir / "cells.jsonl").read_text().splitlines()]
    assert not [e for e in cell_events if e.get("cell") == "cell-a"]
    assert [e for e in cell_events if e.get("cell") in ("cell-b", "cell-q")], "the other cells are simulated"


def test_an_external_cell_must_be_a_cell_of_the_station(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(f"station: {CONFIG / 'station.sim.yaml'}\nexternal_cells: [cell-a]\n")
    loaded, _, _, _ = load_scenario(scenario, ["cell-q", "cell-a"])
    assert loaded.external_cells == ["cell-a", "cell-q"]
    with pytest.raises(ConfigError, match=r"cell-z not a cell of station station\.sim\.yaml"):
        load_scenario(scenario, ["cell-z"])
