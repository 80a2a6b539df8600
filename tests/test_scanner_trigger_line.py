"""The simulated line with its scanner in Honeywell serial trigger mode, end to end.

`edge sim` and `edge run` as separate processes on a real mosquitto. The station sets
`scanner.host_trigger`, so the simulated scanner stays silent until the controller sends SYN T CR
when the PLC reports a unit at the scan photo-eye; every unit must still be identified from its
own label, read by the scanner (not recovered from the camera frame).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import CONFIG, REPO

UNITS = 12


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.e2e
def test_every_unit_identified_by_a_host_triggered_read(mosquitto, tmp_path: Path) -> None:
    station = yaml.safe_load((CONFIG / "station.sim.yaml").read_text())
    station["scanner"]["host_trigger"] = True
    station["grading_policy"] = str(CONFIG / station["grading_policy"])
    station["catalog"] = str(CONFIG / station["catalog"])
    station_path = tmp_path / "station.trigger.yaml"
    station_path.write_text(yaml.safe_dump(station))
    scenario = yaml.safe_load((CONFIG / "scenario.demo.yaml").read_text())
    # Two units a second: the trigger goes out well before the next unit reaches the eye, even on
    # a loaded machine (a trigger that would be late is not sent: a no-read, never a wrong label).
    scenario.update(station=str(station_path), units=UNITS, rate_per_s=2.0, seed=31,
                    faults={"no_read": 0.0, "wrong_weight": 0.0, "unknown_gtin": 0.0})
    scenario_path = tmp_path / "scenario.yaml"
    scenario_path.write_text(yaml.safe_dump(scenario))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sim_log = (tmp_path / "sim.log").open("wb")
    daemon_log_path = tmp_path / "daemon.log"
    daemon_log = daemon_log_path.open("wb")
    sim = subprocess.Popen(
        [sys.executable, "-m", "edge", "sim", "--scenario", str(scenario_path), "--broker", mosquitto.url,
         "--run-dir", str(run_dir), "--linger", "3"],
        stdout=sim_log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
    )
    daemon = None
    try:
        _wait_for(lambda: (run_dir / "station.yaml").exists(), 30, "the simulator's station file")
        assert yaml.safe_load((run_dir / "station.yaml").read_text())["scanner"]["host_trigger"] is True
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(run_dir / "station.yaml")],
            stdout=daemon_log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )
        _wait_for(lambda: sim.poll() is not None, 120, "the simulator to run all units")
        assert sim.returncode == 0, (tmp_path / "sim.log").read_text()[-3000:]
        assert daemon.poll() is None, daemon_log_path.read_text()[-3000:]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, daemon_log_path.read_text()[-3000:]
    finally:
        for process in (sim, daemon):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    truth = {t["item_id"]: t for t in map(json.loads, (run_dir / "truth.jsonl").read_text().splitlines())}
    assert len(truth) == UNITS
    db = sqlite3.connect(run_dir / "journal.db")
    item_of = dict(db.execute("SELECT unit_id, item_id FROM units").fetchall())
    assert sorted(item_of.values()) == sorted(truth)
    reads = {unit: json.loads(data) for unit, data in db.execute("SELECT unit_id, data FROM events WHERE kind='read'")}
    assert set(reads) == set(item_of)
    for unit_id, read in reads.items():
        expected = truth[item_of[unit_id]]
        # The scanner's own read of this unit's label: only a trigger makes the simulated scanner talk.
        assert (read["source"], read["text"], read["aim"]) == ("scanner", expected["barcode"], expected["aim"]), read
    assert "scanner_trigger" not in daemon_log_path.read_text()
    # One SYN T CR per unit at the photo-eye, each answered by exactly one read; SYN U CR ends a read
    # window that the next trigger did not already replace.
    scanner = json.loads((run_dir / "devices.json").read_text())["scanner"]
    assert scanner["host_trigger_mode"] is True
    assert scanner["triggers"] == UNITS and scanner["reads_sent"] == UNITS
    assert scanner["untriggers"] >= 1
