"""`edge demo` (what `make demo` runs): embedded broker, simulated line, daemon process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.mark.e2e
def test_demo_grades_units_with_the_embedded_broker(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "edge", "demo", "--units", "8", "--rate", "4", "--summary-json", str(summary_path),
         "--run-dir", str(tmp_path / "run")],
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
