"""A diverter whose paddle never fires, on the whole line: `edge sim` + `edge run` + real mosquitto.

Units accepted for lane 1 ride on to the belt end. The reject eye sees each one, and the controller
cancels cell-a's order, publishes a corrected decision naming lane 0 and sends the order to cell-q,
which finds the unit there. LineRun.verify() then checks the usual invariants against the
corrected decisions: every unit in the lane its (current) decision names, every order to the right
cell, none handled twice, every message conforming to docs/asyncapi.yaml.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.journal import read_unit_history

from .conftest import Mosquitto
from .fault_harness import LineRun

pytestmark = pytest.mark.e2e


def test_a_stuck_diverter_gets_every_record_corrected(mosquitto: Mosquitto, tmp_path: Path) -> None:
    run = LineRun(
        tmp_path,
        mosquitto,
        units=14,
        rate=2.0,
        linger=20,
        scenario={"stuck_diverters": [1]},
        # cell-a takes its time after it finds a unit missing: the cancellation, sent as the
        # reject eye sees the unit, reaches it before it would report FAILED.
        cells=[
            {"id": "cell-a", "accept_after_s": 0.05, "finish_after_s": 1.5},
            {"id": "cell-b", "accept_after_s": 0.05, "finish_after_s": 0.6},
            {"id": "cell-q", "accept_after_s": 0.05, "finish_after_s": 0.3},
        ],
    )
    try:
        run.start_sim()
        run.start_daemon()
        run.finish()
        verdict = run.verify()
    finally:
        run.close()
    decisions = run.recorder.json_on("/units/decisions")
    corrections = [d for d in decisions if d.get("supersedes")]
    assert corrections, "the scenario sends some units to lane 1"
    assert sorted(verdict.corrected) == sorted(d["supersedes"] for d in corrections)
    first = {d["decision_id"]: d for d in decisions}
    for correction in corrections:
        assert first[correction["supersedes"]]["lane"] == 1 and first[correction["supersedes"]]["cell"] == "cell-a"
        assert (correction["lane"], correction["cell"], correction["disposition"]) == (0, "cell-q", "quarantine")
    cancels = [o for o in run.recorder.json_on("/cells/cell-a/orders") if o.get("action") == "cancel"]
    assert {c["decision_id"] for c in cancels} == set(verdict.corrected)
    mismatches = [a for a in run.recorder.json_on("/alarms") if a["code"] == "divert_mismatch"]
    assert len(mismatches) == len(corrections)
    journal = run.run_dir / "journal.db"
    for correction in corrections:
        history = read_unit_history(journal, correction["unit_id"])
        assert history is not None and history["decision_id"] == correction["decision_id"]
        assert history["state"] == "complete" and history["order"]["cell"] == "cell-q"
        assert [o["state"] for o in history["orders"]] == ["CANCELLED", "FINISHED"]
        # cell-a answered the cancellation (FAILED: it stopped, or had found the unit missing)
        assert history["orders"][0]["cancellation"]["state"] == "FAILED"
    db = sqlite3.connect(journal)
    assert db.execute("SELECT count(*) FROM events WHERE kind = 'divert_corrected'").fetchone()[0] == len(corrections)
    db.close()
