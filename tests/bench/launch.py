"""Shared by the line benchmarks: `edge sim` and `edge run` as separate processes against a real
broker, each pinned to its own core with taskset when there is one (the daemon to core 0)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import CONFIG, Mosquitto
from tests.fault_harness import wait_for

REPO = Path(__file__).resolve().parents[2]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a running process has used, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of a running process in MB (2**20 bytes), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise ValueError(f"no VmRSS for process {pid}")


@dataclass
class Line:
    """A running simulated line: the processes, their logs, and when the daemon was started."""

    workdir: Path
    sim: subprocess.Popen[bytes]
    daemon: subprocess.Popen[bytes] | None = None
    daemon_started_at: float = 0.0  # time.monotonic() just before the daemon's process was created

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    def sim_log(self) -> str:
        return (self.workdir / "sim.log").read_text(errors="replace")

    def daemon_log(self) -> str:
        return (self.workdir / "daemon.log").read_text(errors="replace")

    def start_daemon(self, env: dict[str, str], pin: list[str]) -> None:
        self.daemon_started_at = time.monotonic()
        self.daemon = subprocess.Popen(
            [*pin, sys.executable, "-m", "edge", "run", "--config", str(self.run_dir / "station.yaml")],
            stdout=(self.workdir / "daemon.log").open("wb"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Seconds from the daemon's process start to its READY log line (polled every 10 ms)."""
        wait_for(lambda: "READY" in self.daemon_log(), timeout_s, "the daemon", poll=0.01)
        return time.monotonic() - self.daemon_started_at


@contextlib.contextmanager
def simulated_line(
    broker: Mosquitto, workdir: Path, scenario_changes: dict[str, Any], *, linger_s: float = 10.0
) -> Iterator[Line]:
    """The demo scenario with `scenario_changes`, `edge sim` started and its station file written,
    then `edge run` on it (not yet READY: see `Line.wait_ready`). Both are stopped with SIGTERM on exit."""
    scenario = yaml.safe_load((CONFIG / "scenario.demo.yaml").read_text())
    scenario.update(station=str(CONFIG / "station.sim.yaml"), **scenario_changes)
    (workdir / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    taskset = shutil.which("taskset")
    cores = os.cpu_count() or 1
    sim_pin = [taskset, "-c", str(1 % cores)] if taskset else []
    daemon_pin = [taskset, "-c", "0"] if taskset else []
    run_dir = workdir / "run"
    sim_args = ["--scenario", str(workdir / "scenario.yaml"), "--broker", broker.url, "--run-dir", str(run_dir)]
    sim = subprocess.Popen(
        [*sim_pin, sys.executable, "-m", "edge", "sim", *sim_args, "--linger", str(linger_s)],
        stdout=(workdir / "sim.log").open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    line = Line(workdir, sim)
    try:
        # The simulator renders the frames it looks ahead for before it writes the station file:
        # about 50 ms each on this machine's slower core.
        lookahead = int(scenario_changes.get("camera_lookahead_units", 0) or 0)
        wait_for(lambda: (run_dir / "station.yaml").exists(), 30 + 0.1 * lookahead, "station file")
        line.start_daemon(env, daemon_pin)
        yield line
    finally:
        for process in (line.daemon, line.sim):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
