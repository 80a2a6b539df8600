"""`edge demo` (what `make demo` runs): embedded broker, simulated line, daemon process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import CONFIG, REPO


@pytest.mark.e2e
def test_demo_grades_units_with_the_embedded_broker(tmp_path: Path) -> None:
    # The demo's own scenario, with camera frames rendered a few units ahead: the simulator renders a
    # frame far slower than a camera takes one, and on a busy machine a frame rendered only as its unit
    # is inducted can come after the controller's frame timeout (a quarantined unit, a "mismatch").
    scenario = yaml.safe_load((CONFIG / "scenario.demo.yaml").read_text())
    scenario.update(station=str(CONFIG / "station.sim.yaml"), camera_lookahead_units=4)
    scenario_path = tmp_path / "scenario.yaml"
    scenario_path.write_text(yaml.safe_dump(scenario))
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "edge", "demo", "--units", "8", "--rate", "4", "--summary-json", str(summary_path),
         "--scenario", str(scenario_path), "--run-dir", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "embedded MQTT broker listening on mqtt://127.0.0.1:" in out
    assert "mosquitto_sub -h 127.0.0.1 -p" in out
    assert sum(1 for line in out.splitlines() if re.match(r"unit +\d+ +item +\d+ ", line)) == 8
    summary = json.loads(summary_path.read_text())
    assert summary["decisions"] == 8 and summary["units_inducted"] == 8
    assert summary["mismatches"] == 0 and summary["wrong_physical_lane"] == 0
    assert summary["orders_finished"] == 8
    assert summary["controller_exit_code"] == 0
    assert summary["controller_connection_states"][-1] == "OFFLINE"
