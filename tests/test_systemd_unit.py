"""systemd/edge.service as ops check it: `systemd-analyze verify` clean, `security` exposure <= 2.0.

The machine running the tests is not booted with systemd, so verify runs with --root on a throwaway
tree: the unit, a stub /opt/edge/venv/bin/edge (verify insists ExecStart is executable) and the few
targets the unit's default dependencies name, copied from the host.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

UNIT = REPO / "systemd" / "edge.service"
ANALYZE = shutil.which("systemd-analyze")
HOST_UNITS = Path("/usr/lib/systemd/system")
TARGETS = ("sysinit.target", "basic.target", "shutdown.target", "network-online.target", "multi-user.target")

pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _root(tmp_path: Path, unit_text: str) -> Path:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/edge.service").write_text(unit_text)
    stub = root / "opt/edge/venv/bin/edge"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for target in TARGETS:
        shutil.copy(HOST_UNITS / target, units / target)
    return root


def _verify(tmp_path: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    root = _root(tmp_path, unit_text)
    return subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "edge.service"], capture_output=True, text=True, timeout=60
    )


def _exposure(unit: Path) -> float:
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Overall exposure level for edge\.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr
    return float(found.group(1))


def test_unit_verifies_clean(tmp_path: Path) -> None:
    result = _verify(tmp_path, UNIT.read_text())
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    # Guards the test above: a misspelt directive must show up, or "clean" proves nothing.
    broken = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilegs=yes")
    result = _verify(tmp_path, broken)
    assert "Unknown key 'NoNewPrivilegs'" in result.stderr


def test_security_exposure_is_at_most_two() -> None:
    exposure = _exposure(UNIT)
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= 2.0


def test_exposure_check_sees_a_weak_unit(tmp_path: Path) -> None:
    weak = tmp_path / "edge.service"
    weak.write_text("\n".join(
        line for line in UNIT.read_text().splitlines()
        if not line.startswith(("Protect", "Restrict", "SystemCall", "CapabilityBoundingSet", "PrivateUsers"))
    ))
    assert _exposure(weak) > 2.0


def test_unit_carries_the_promised_settings() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    assert settings["Type"] == ["notify"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["User"] == ["edge"] and settings["SupplementaryGroups"] == ["dialout"]
    assert settings["ProtectSystem"] == ["strict"]
    assert int(settings["WatchdogSec"][0]) > 0
    assert int(settings["StartLimitBurst"][0]) > 0
    assert settings["ExecStartPre"][0].endswith("edge check-config /etc/edge/station.yaml")
    assert settings["LoadCredential"] == ["edge:/etc/edge/credentials"]
    for key in ("StateDirectory", "ConfigurationDirectory", "NoNewPrivileges", "PrivateTmp", "ProtectHome",
                "RestrictAddressFamilies"):
        assert key in settings, key
