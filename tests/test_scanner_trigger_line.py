"""The simulated line with its scanner in Honeywell serial trigger mode, end to end.

`edge sim` and `edge run` as separate processes on a real mosquitto. The station sets
`scanner.host_trigger`, so the simulated scanner stays silent until the controller sends SYN T CR
when the PLC reports a unit at the scan photo-eye; every unit must still be identified from its
own label, read by the scanner (not recovered from the camera frame).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .fault_harness import LineRun

UNITS = 12


def _host_trigger(station: dict[str, Any]) -> None:
    station["scanner"]["host_trigger"] = True


@pytest.mark.e2e
def test_every_unit_identified_by_a_host_triggered_read(mosquitto, tmp_path: Path) -> None:
    # Two units a second: the trigger goes out well before the next unit reaches the eye, even on
    # a loaded machine (a trigger that would be late is not sent: a no-read, never a wrong label).
    run = LineRun(tmp_path, mosquitto, units=UNITS, rate=2.0, seed=31, linger=3.0, edit_station=_host_trigger,
                  faults={"no_read": 0.0, "wrong_weight": 0.0, "unknown_gtin": 0.0})
    try:
        run.start_sim()
        assert run.daemon_station()["scanner"]["host_trigger"] is True
        run.start_daemon()
        run.finish(timeout=120)
        run.verify()
    finally:
        run.close()

    run_dir = run.run_dir
    truth = {t["item_id"]: t for t in map(json.loads, (run_dir / "truth.jsonl").read_text().splitlines())}
    db = sqlite3.connect(run_dir / "journal.db")
    item_of = dict(db.execute("SELECT unit_id, item_id FROM units").fetchall())
    assert sorted(item_of.values()) == sorted(truth)
    reads = {unit: json.loads(data) for unit, data in db.execute("SELECT unit_id, data FROM events WHERE kind='read'")}
    assert set(reads) == set(item_of)
    for unit_id, read in reads.items():
        expected = truth[item_of[unit_id]]
        # The scanner's own read of this unit's label: only a trigger makes the simulated scanner talk.
        assert (read["source"], read["text"], read["aim"]) == ("scanner", expected["barcode"], expected["aim"]), read
    assert "scanner_trigger" not in run.daemon_log()
    # One SYN T CR per unit at the photo-eye, each answered by exactly one read; SYN U CR ends a read
    # window that the next trigger did not already replace.
    scanner = json.loads((run_dir / "devices.json").read_text())["scanner"]
    assert scanner["host_trigger_mode"] is True
    assert scanner["triggers"] == UNITS and scanner["reads_sent"] == UNITS
    assert scanner["untriggers"] >= 1
