"""Shared fixtures: a real mosquitto broker on a free port that a test can stop and restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check correctness, never speed: a per-example deadline only makes them fail when the
# machine is busy (CI runs on two shared cores). Tests that set their own settings keep them.
settings.register_profile("edge", deadline=None)
settings.load_profile("edge")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        raise RuntimeError("mosquitto is not installed: run `make test`, which installs or names it")
    return found


class Mosquitto:
    """A private mosquitto: its own port, config and persistence folder."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            # Started as root, mosquitto drops to its own user, which cannot write the persistence
            # file in a root-owned test folder: sessions would not survive a restart.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"


async def until(cond: Callable[[], object], timeout_s: float = 3.0, what: str = "condition") -> None:
    """Wait (async) until `cond()` is true; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
