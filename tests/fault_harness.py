"""A whole line for fault tests: `edge sim` + `edge run` processes, a real mosquitto, a recorder.

`LineRun.verify()` checks what every fault test must hold afterwards: every unit has at most one
decision and units without one rode to the reject lane (the PLC's own default while no controller
is there); every decision's order reached its cell and no cell handled a decision twice; no unit is
in a lane its decision did not name; and every message matches docs/asyncapi.yaml.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml

from .asyncapi_contract import assert_all_conform
from .conftest import CONFIG, REPO, Mosquitto


class TcpCutter:
    """A TCP relay between the daemon and the simulated PLC that a test can cut and restore, like a
    pulled network cable: cut closes every relayed connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.open = threading.Event()
        self.open.set()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="tcp-cutter").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


SYNC_TOPIC = "returns/v1/_recorder-sync/"


class PersistentRecorder:
    """A technician's subscriber with a persistent session, so a broker restart loses nothing."""

    def __init__(self, host: str, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self._markers: dict[str, threading.Event] = {}
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"fault-recorder-{port}",
                                  clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("returns/v1/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1.0)
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            if message.topic.startswith(SYNC_TOPIC):
                marker = self._markers.get(message.topic[len(SYNC_TOPIC):])
                if marker is not None:
                    marker.set()
                return
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def sync(self, timeout: float = 30.0) -> None:
        """Until every message the broker took before this call has reached the recorder: the broker
        queues a marker published now behind them on the recorder's session (one ordered queue)."""
        token = uuid.uuid4().hex
        marker = threading.Event()
        with self.lock:
            self._markers[token] = marker
        self.client.publish(SYNC_TOPIC + token, b"", qos=1)
        if not marker.wait(timeout):
            raise AssertionError(f"the recorder did not catch up within {timeout:.0f} s")

    def on(self, suffix: str) -> list[bytes]:
        with self.lock:
            return [payload for topic, payload, _ in self.messages if topic.endswith(suffix)]

    def json_on(self, suffix: str) -> list[dict]:
        return [json.loads(p) for p in self.on(suffix)]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Verdict:
    units: int
    decisions: int
    unseen: list[int] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    overflowed: list[str] = field(default_factory=list)
    corrected: list[str] = field(default_factory=list)  # decision ids superseded by a correction


class LineRun:
    def __init__(self, tmp_path: Path, broker: Mosquitto, *, units: int, rate: float,
                 cells: list[dict] | None = None, linger: float = 30.0, order_timeout_s: float = 2.0,
                 faults: dict[str, float] | None = None, seed: int = 99, scenario: dict[str, Any] | None = None,
                 edit_station: Callable[[dict[str, Any]], None] | None = None) -> None:
        """`scenario`: further scenario fields; `edit_station`: changes to the station the simulator
        starts from (and so to the one it writes for the daemon)."""
        self.tmp = tmp_path
        self.broker = broker
        self.units = units
        self.run_dir = tmp_path / "run"
        station = yaml.safe_load((CONFIG / "station.sim.yaml").read_text())
        station["grading_policy"] = str(CONFIG / "grading.yaml")
        station["catalog"] = str(CONFIG / "catalog.csv")
        station["cells"] = [{"id": c["id"], "order_timeout_s": order_timeout_s} for c in station["cells"]]
        station.setdefault("mqtt", {})["reconnect_max_s"] = 2.0
        if edit_station is not None:
            edit_station(station)
        (tmp_path / "station.yaml").write_text(yaml.safe_dump(station))
        scenario_fields = yaml.safe_load((CONFIG / "scenario.demo.yaml").read_text())
        scenario_fields.update(station=str(tmp_path / "station.yaml"), units=units, rate_per_s=rate, seed=seed)
        if cells is not None:
            scenario_fields["cells"] = cells
        if faults is not None:
            scenario_fields["faults"] = faults
        scenario_fields.update(scenario or {})
        (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(scenario_fields))
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.linger = linger
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_starts = 0
        self.sim: subprocess.Popen[bytes] | None = None
        self.recorder = PersistentRecorder(broker.host, broker.port)
        self.station_file: Path | None = None
        self.plc_cutter: TcpCutter | None = None

    # -- processes ----------------------------------------------------------------------------

    def start_sim(self) -> None:
        log = (self.tmp / "sim.log").open("ab")
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "edge", "sim", "--scenario", str(self.tmp / "scenario.yaml"), "--broker",
             self.broker.url, "--run-dir", str(self.run_dir), "--linger", str(self.linger)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=self.env,
        )
        wait_for(lambda: (self.run_dir / "station.yaml").exists(), 30, "the simulator's station file")

    def cut_plc_link_through(self) -> TcpCutter:
        """Route the daemon's Modbus connection through a relay the test can cut (before start_daemon)."""
        station = self.daemon_station()
        self.plc_cutter = TcpCutter(station["plc"]["host"], int(station["plc"]["port"]))
        station["plc"].update(host="127.0.0.1", port=self.plc_cutter.port)
        self.set_daemon_station(station)
        return self.plc_cutter

    def daemon_station(self) -> dict[str, Any]:
        """The station file the daemon will start with (the simulator's, unless changed)."""
        return yaml.safe_load((self.station_file or self.run_dir / "station.yaml").read_text())

    def set_daemon_station(self, station: dict[str, Any]) -> None:
        self.station_file = self.tmp / "station.daemon.yaml"
        self.station_file.write_text(yaml.safe_dump(station))

    def start_daemon(self, wait_ready: bool = True) -> None:
        self.daemon_starts += 1
        log_path = self.tmp / f"daemon-{self.daemon_starts}.log"
        station_file = self.station_file or self.run_dir / "station.yaml"
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(station_file)],
            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=REPO, env=self.env,
        )
        if wait_ready:
            wait_for(lambda: "READY" in log_path.read_text(errors="replace") or self.daemon.poll() is not None,
                     60, "the daemon to be READY")
            assert self.daemon.poll() is None, log_path.read_text()[-3000:]

    def kill_daemon(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait()

    def daemon_log(self) -> str:
        return (self.tmp / f"daemon-{self.daemon_starts}.log").read_text(errors="replace")

    def finish(self, timeout: float = 200.0) -> None:
        """Let the simulator run out, wait for the cells, stop the daemon cleanly."""
        assert self.sim is not None
        wait_for(lambda: self.sim.poll() is not None, timeout, "the simulator to run all units")
        assert self.sim.returncode == 0, (self.tmp / "sim.log").read_text()[-3000:]
        assert self.daemon is not None and self.daemon.poll() is None, self.daemon_log()[-3000:]
        wait_for(self.journal_settled, 30, "every order to be answered in the journal")
        # Published is not yet delivered: give the recorder's session time to catch up (verify
        # then checks what it got).
        with contextlib.suppress(AssertionError):
            wait_for(lambda: len({d["decision_id"] for d in self.recorder.json_on("/units/decisions")})
                     >= self._journal_units(), 15, "the recorder to see every decision")
        self.daemon.send_signal(signal.SIGTERM)
        assert self.daemon.wait(timeout=30) == 0, self.daemon_log()[-3000:]
        self.recorder.sync()  # the last messages (OFFLINE among them) have reached the recorder

    def _journal_units(self) -> int:
        db = sqlite3.connect(self.run_dir / "journal.db")
        try:
            return int(db.execute("SELECT count(*) FROM units").fetchone()[0])
        finally:
            db.close()

    def journal_settled(self) -> bool:
        db = sqlite3.connect(self.run_dir / "journal.db")
        try:
            open_units = db.execute(
                "SELECT count(*) FROM units WHERE state NOT IN ('complete', 'lane_unknown', 'expired')").fetchone()[0]
            unsent = db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
        except sqlite3.Error:
            return False
        finally:
            db.close()
        return open_units == 0 and unsent == 0

    def close(self) -> None:
        self.recorder.stop()
        if self.plc_cutter is not None:
            self.plc_cutter.close()
        for process in (self.sim, self.daemon):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    # -- the invariants -------------------------------------------------------------------------

    def verify(self, *, allow_unseen: bool = False) -> Verdict:
        truth = [json.loads(line) for line in (self.run_dir / "truth.jsonl").read_text().splitlines()]
        cell_events = [json.loads(line) for line in (self.run_dir / "cells.jsonl").read_text().splitlines()]
        handled = [e for e in cell_events if "decision_id" in e]
        assert len(truth) == self.units, "every inducted unit left the belt"
        published = {d["decision_id"]: d for d in self.recorder.json_on("/units/decisions")}
        # A decision corrected after an exit eye saw its unit leave by another lane is void: only the
        # correction (which names it in `supersedes`) must hold; its order may be cancelled or FAILED.
        superseded = {d["supersedes"] for d in published.values() if d.get("supersedes")}
        decisions = {k: d for k, d in published.items() if k not in superseded}
        verdict = Verdict(units=len(truth), decisions=len(decisions), corrected=sorted(superseded))

        # at most one decision per unit; none only for units the controller never saw, in the reject lane
        per_item = Counter(d["item_id"] for d in decisions.values())
        assert max(per_item.values()) == 1, [i for i, n in per_item.items() if n > 1]
        by_item = {t["item_id"]: t for t in truth}
        assert set(per_item) <= set(by_item)
        verdict.unseen = sorted(set(by_item) - set(per_item))
        if not allow_unseen:
            assert verdict.unseen == [], verdict.unseen
        assert all(by_item[i]["physical_lane"] == 0 for i in verdict.unseen)

        # the journal agrees: one row per decision, nothing left open or unsent
        db = sqlite3.connect(self.run_dir / "journal.db")
        journal_ids = {r[0] for r in db.execute("SELECT decision_id FROM units")}
        assert journal_ids == set(decisions)
        assert db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0] == 0
        db.close()

        # every order reached its cell; no cell handled a decision twice
        handled_count = Counter(e["decision_id"] for e in handled)
        assert set(handled_count.values()) <= {1}, [k for k, n in handled_count.items() if n > 1]
        with_cell = {k for k, d in decisions.items() if d["cell"] is not None}
        assert with_cell <= set(handled_count), sorted(with_cell - set(handled_count))[:5]
        assert set(handled_count) <= set(published)
        cell_of = {e["decision_id"]: e["cell"] for e in handled}
        assert all(cell_of[k] == decisions[k]["cell"] for k in with_cell)

        # no unit in a lane its decision did not name
        failed = {e["decision_id"] for e in handled if e["state"] == "FAILED"} - superseded
        for decision_id, decision in decisions.items():
            physical = by_item[decision["item_id"]]["physical_lane"]
            if decision["lane"] is None:
                verdict.recovered.append(decision_id)
                assert physical in decision["recovery"]["candidate_lanes"]
            else:
                # Accepted diverts stand even when the controller dies (docs/plc.md), so every
                # published lane is where the unit really is.
                assert physical == decision["lane"], (decision, physical)
            if any("out of service" in r for r in decision["reasons"]):
                verdict.overflowed.append(decision_id)
                # Which lane turned it away, and why, in a field a WMS can read (not only in the text).
                assert "out of service" in decision["divert"].get("overflow", ""), decision
        assert not failed, f"a cell reported FAILED for a unit that was in its lane: {sorted(failed)[:5]}"
        assert_all_conform(self.recorder.messages)
        return verdict
