"""`edge probe plc` as an operator runs it (a real process), against the simulated PLC over TCP and
over RTU on a pty; plus the plc: config section it reads."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import load_station
from edge.yamlconf import ConfigError
from plc.probe import reference
from plc.register_map import default_map
from simulator.conveyor import SimulatedConveyor
from simulator.rtu_bus import RtuBusSim

CONFIG = Path(__file__).resolve().parent.parent / "config"
ROOT = CONFIG.parent


def _station(tmp_path: Path, plc: dict[str, Any]) -> Path:
    data = yaml.safe_load((CONFIG / "station.example.yaml").read_text())
    data["grading_policy"] = str(CONFIG / "grading.yaml")
    data["catalog"] = str(CONFIG / "catalog.csv")
    data["plc"] = plc
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def _probe(config: Path, *extra: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "probe", "plc", "--config", str(config), *extra,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


def _check_live(report: dict[str, Any], sim: SimulatedConveyor) -> None:
    signals = report["signals"]
    assert set(signals) == set(default_map().signals)
    assert signals["belt_speed_mm_s"]["value"] == sim.belt_speed_mm_s
    assert signals["estop_healthy"]["value"] is True
    assert signals["belt_run"]["value"] is True  # outputs are read too
    assert signals["scan_item_id"]["value"] == 1  # the unit inducted before probing
    assert signals["encoder_count"]["value"] > 0 and signals["encoder_count"]["type"] == "uint32"
    assert signals["gateway_heartbeat"]["reference"] == "40001"
    assert signals["scan_eye"]["reference"] == "10002"
    assert report["plc_heartbeat_alive"] is True
    assert report["plc_armed"] is False  # nobody is writing a gateway heartbeat
    assert report["errors"] == []
    assert sim.signal("gateway_heartbeat") == 0  # the probe only reads


async def _one_unit_scanned(sim: SimulatedConveyor) -> None:
    sim.induct(100.0, "probe")
    while sim.signal("scan_item_id") != 1:
        await asyncio.sleep(0.01)


async def test_probe_over_tcp_json_and_text(tmp_path: Path) -> None:
    async with SimulatedConveyor(belt_speed_mm_s=2000.0) as sim:
        await _one_unit_scanned(sim)
        # A generous reply timeout: the simulated PLC shares this test's event loop, which a busy
        # machine can hold up for longer than a real PLC ever takes to answer.
        config = _station(tmp_path, {"transport": "tcp", "host": "127.0.0.1", "port": sim.port, "timeout_s": 1.0})
        code, out, err = await _probe(config, "--json")
        assert code == 0, err
        _check_live(json.loads(out), sim)
        code, out, err = await _probe(config)
        assert code == 0, err
        line = next(ln for ln in out.splitlines() if ln.strip().startswith("estop_healthy"))
        assert "discrete_input" in line and "10004" in line and line.rstrip().endswith("ON")
        assert "plc heartbeat: changing" in out and "plc armed bit: clear" in out


async def test_probe_over_rtu_on_a_pty(tmp_path: Path) -> None:
    async with RtuBusSim() as wire:
        sim = SimulatedConveyor(
            belt_speed_mm_s=2000.0, transport="rtu", serial_port=wire.attach(),
            register_map=default_map(device_id=5), parity="N",
        )
        async with sim:
            await _one_unit_scanned(sim)
            config = _station(tmp_path, {
                "transport": "rtu", "device_id": 5, "timeout_s": 1.0,  # see the TCP probe
                "serial": {"port": wire.master_path, "baudrate": 19200, "parity": "N"},
            })
            code, out, err = await _probe(config, "--json")
            assert code == 0, err
            report = json.loads(out)
            assert report["device_id"] == 5
            _check_live(report, sim)


async def test_probe_of_an_absent_plc_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = _station(tmp_path, {"host": "127.0.0.1", "port": port})
    code, out, _err = await _probe(config, "--json")
    assert code == 1
    assert json.loads(out)["connected"] is False


def test_reference_numbers() -> None:
    m = default_map()
    assert [reference(m[n]) for n in ("belt_run", "infeed_eye", "plc_heartbeat", "divert_request_lane")] == [
        "00001", "10001", "30001", "40004",
    ]


@pytest.mark.parametrize(
    ("plc", "message"),
    [
        ({"transport": "rtu"}, "needs a serial"),
        ({"transport": "rtu", "serial": {"port": "/dev/ttyUSB0", "baud": 9600}}, "Extra inputs"),
        ({"tracking": {"mm_per_count": 0, "scan_point_mm": 500, "diverter_mm": {1: 1500}}}, "greater than 0"),
        ({"transport": "udp"}, "transport"),
    ],
)
def test_plc_config_errors(tmp_path: Path, plc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_station(_station(tmp_path, plc))
    assert message in str(caught.value)


def test_plc_config_builds_the_right_link(tmp_path: Path) -> None:
    from plc.factory import build_link
    from plc.rtu import RtuPlcLink

    station = load_station(_station(tmp_path, {
        "transport": "rtu", "device_id": 9,
        "serial": {"port": "/dev/ttyUSB0"},
        "tracking": {"mm_per_count": 0.5, "scan_point_mm": 500, "diverter_mm": {1: 1500, 2: 1800}},
    }))
    link = build_link(station.plc)
    assert isinstance(link, RtuPlcLink) and link.register_map.device_id == 9
    assert link.bus.parity == "E" and link.bus.baudrate == 19200
    assert link.positions is not None and link.positions.geometry.counts_to_diverter(2) == 2600


