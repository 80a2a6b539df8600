"""The daemon as ops run it, against `edge sim` and a real mosquitto.

1. Under a (test-played) systemd: NOTIFY_SOCKET and WATCHDOG_USEC set, JSON logs, metrics endpoint on.
   READY=1 comes first, WATCHDOG=1 follows while units flow, /metrics is scraped over HTTP during
   the run, every log line is JSON and decided units are logged with their ids, SIGTERM stops it
   cleanly with STOPPING=1.
2. In a container: no NOTIFY_SOCKET, text logs on stdout; the same daemon grades units and stops
   cleanly on SIGTERM.

The notify socket is a real AF_UNIX datagram socket, the one thing of systemd a test can play.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import CONFIG, REPO, free_port


class NotifySocket:
    """Collects sd_notify datagrams in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def states(self) -> list[str]:
        return [m for _, m in list(self.messages)]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _graded(metrics: dict[str, list]) -> float:
    return sum(s.value for s in metrics.get("edge_units_graded", []) if s.name == "edge_units_graded_total")


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()[-3000:]


@pytest.mark.e2e
def test_daemon_under_systemd_and_in_a_container(mosquitto, tmp_path: Path) -> None:
    scenario = yaml.safe_load((CONFIG / "scenario.demo.yaml").read_text())
    scenario.update(station=str(CONFIG / "station.sim.yaml"), rate_per_s=4.0, seed=77)
    scenario_path = tmp_path / "scenario.yaml"
    scenario_path.write_text(yaml.safe_dump(scenario))
    run_dir = tmp_path / "run"
    base_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    base_env["PYTHONUNBUFFERED"] = "1"
    sim = subprocess.Popen(
        [sys.executable, "-m", "edge", "sim", "--scenario", str(scenario_path), "--broker", mosquitto.url,
         "--run-dir", str(run_dir), "--units", "0"],
        stdout=(tmp_path / "sim.log").open("wb"), stderr=subprocess.STDOUT, cwd=REPO, env=base_env,
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = None
    try:
        _wait_for(lambda: (run_dir / "station.yaml").exists(), 30, "the simulator's station file")
        station = yaml.safe_load((run_dir / "station.yaml").read_text())
        metrics_port = free_port()
        station["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
        station_path = run_dir / "station-ops.yaml"
        station_path.write_text(yaml.safe_dump(station))

        # 1. under systemd
        log1 = tmp_path / "daemon-systemd.log"
        env = {**base_env, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(station_path), "--log-format", "json"],
            stdout=log1.open("wb"), stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )
        _wait_for(lambda: "READY=1" in notify.states(), 120, "READY=1")
        scraped: dict[str, list] = {}

        def enough_units() -> bool:
            nonlocal scraped
            scraped = _scrape(metrics_port)
            return _graded(scraped) >= 12

        _wait_for(enough_units, 90, "12 graded units on /metrics")
        _wait_for(lambda: notify.states().count("WATCHDOG=1") >= 3, 10, "watchdog pings")
        states = notify.states()
        assert states.index("READY=1") < states.index("WATCHDOG=1")

        latency = {s.name: s.value for s in scraped["edge_decision_latency_seconds"]}
        assert latency["edge_decision_latency_seconds_count"] >= 12
        assert 0 < latency["edge_decision_latency_seconds_sum"] / latency["edge_decision_latency_seconds_count"] < 1
        lanes = {s.labels["lane"] for s in scraped["edge_units_graded"]}
        grades = {s.labels["grade"] for s in scraped["edge_units_graded"]}
        assert len(lanes) >= 2 and len(grades) >= 2
        up = {s.labels["device"]: s.value for s in scraped["edge_device_up"]}
        assert up["plc"] == 1 and up["mqtt"] == 1 and up["scanner"] == 1
        queues = {s.labels["queue"] for s in scraped["edge_queue_depth"]}
        assert {"outbox", "open_orders", "open_cancellations", "in_flight", "plc_arrivals", "evidence"} <= queues
        assert "edge_errors" in scraped  # by kind; the demo's no-reads show up as reads:units_without_event
        assert scraped["edge_controller_info"][0].labels["controller"] == "edge-sim"

        _stop(daemon, log1)
        assert "STOPPING=1" in notify.states()
        with pytest.raises(OSError):
            _scrape(metrics_port)  # the endpoint goes with the daemon
        entries = [json.loads(line) for line in log1.read_text().splitlines() if line.strip()]
        assert all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
        units = [e for e in entries if "unit_id" in e]
        assert len(units) >= 12
        assert all(e["msg"].startswith(f"unit {e['unit_id']}") and "lane" in e and "grade" in e for e in units)
        assert any("journal closed" in e["msg"] for e in entries)

        # 2. in a container: no systemd at all, plain text on stdout
        log2 = tmp_path / "daemon-container.log"
        before = len(notify.messages)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(station_path)],
            stdout=log2.open("wb"), stderr=subprocess.STDOUT, cwd=REPO, env=base_env,
        )
        _wait_for(lambda: log2.read_text().count(" edge.pipeline: unit U") >= 3, 120, "units graded in a container")
        _stop(daemon, log2)
        text = log2.read_text()
        assert "READY" in text and "journal closed" in text and "stopped cleanly" in text
        assert len(notify.messages) == before  # nothing tried to talk to systemd
    finally:
        notify.close()
        for process in (daemon, sim):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
