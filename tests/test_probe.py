"""`edge probe scanner|scale` against devices on real ptys: byte captures written from the vendors'
formats (not the simulators' encoders) and the simulated devices, in-process and as a real command."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.cli import build_parser
from edge.probe import run_probe
from simulator.pty_device import PtyDevice
from simulator.scale import SimulatedScale
from simulator.scales import SimulatedAdScale, SimulatedNciScale
from simulator.scanner import SimulatedScanner

# Toledo standard continuous output, 2.500 kg gross stable (SWA 0x2D: decimal code 5), then in motion.
TOLEDO = b"\x02-0 002500000000\r"
TOLEDO_MOTION = b"\x02-8 002513000000\r"
# A&D standard format.
AD = b"ST,+00123.45  g\r\n"


def _seven_e_one(data: bytes) -> bytes:
    """The bytes an 8N1 port receives from a 7E1 device: even parity in bit 7."""
    return bytes(b | (0x80 if bin(b).count("1") % 2 else 0) for b in data)


@contextlib.asynccontextmanager
async def streaming(link: str, frames: list[bytes], interval_s: float = 0.02) -> AsyncIterator[PtyDevice]:
    """A pty that repeats `frames` forever, like a terminal in continuous mode."""
    device = PtyDevice(link_path=link)
    device.open()

    async def pump() -> None:
        i = 0
        while True:
            device.write(frames[i % len(frames)])
            i += 1
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(pump())
    try:
        yield device
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        device.close()


async def probe(*argv: str) -> tuple[int, list[dict]]:
    args = build_parser().parse_args(["probe", *argv, "--json"])
    out = io.StringIO()
    code = await run_probe(args, out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


async def test_toledo_capture_parsed(tmp_path: Path) -> None:
    link = str(tmp_path / "toledo")
    async with streaming(link, [TOLEDO_MOTION, TOLEDO]):
        code, records = await probe("scale", "--port", link, "--protocol", "toledo", "--count", "4")
    assert code == 0
    weights = [r for r in records if r["kind"] == "weight"]
    assert len(weights) == 4
    stable = [r for r in weights if r["stable"]]
    moving = [r for r in weights if not r["stable"]]
    assert stable and moving
    assert stable[0]["grams"] == pytest.approx(2500.0) and stable[0]["unit"] == "kg"
    assert moving[0]["grams"] == pytest.approx(2513.0)
    assert records[-1]["kind"] == "summary" and records[-1]["ok"] is True


async def test_wrong_protocol_names_the_right_one(tmp_path: Path) -> None:
    link = str(tmp_path / "ad")
    async with streaming(link, [AD]):
        code, records = await probe("scale", "--port", link, "--protocol", "toledo", "--timeout", "0.5")
    assert code == 1
    summary = records[-1]
    assert summary["ok"] is False and "try --protocol ad" in summary["diagnosis"]
    assert not any(r["kind"] == "weight" for r in records)


async def test_parity_mismatch_is_explained(tmp_path: Path) -> None:
    link = str(tmp_path / "ad")
    async with streaming(link, [_seven_e_one(AD)]):
        code, records = await probe("scale", "--port", link, "--protocol", "ad", "--timeout", "0.5")
    assert code == 1
    assert "--bytesize 7 --parity E" in records[-1]["diagnosis"]


async def test_toledo_7e1_terminal_on_an_8n1_port_still_reads(tmp_path: Path) -> None:
    # The Toledo format is 7-bit by definition: bit 7 is parity, checked and dropped.
    link = str(tmp_path / "toledo")
    async with streaming(link, [_seven_e_one(TOLEDO)]):
        code, records = await probe("scale", "--port", link, "--protocol", "toledo", "--count", "2")
    assert code == 0
    assert [r["grams"] for r in records if r["kind"] == "weight"] == [pytest.approx(2500.0)] * 2


# A&D EK-i manual, "Data format", counting data example: a balance left in counting mode.
AD_COUNTING = b"QT,+00012345 PC\r\n"
# NCI 7800 manual, "Standard Commands": reply to W, 12.50 lb stable, gross, two status bytes.
NCI_REPLY = b"\n0012.50lb\r\n00\r\x03"


async def test_counting_mode_is_named_not_weighed(tmp_path: Path) -> None:
    link = str(tmp_path / "ad")
    async with streaming(link, [AD_COUNTING]):
        code, records = await probe("scale", "--port", link, "--protocol", "ad", "--timeout", "0.5")
    assert code == 1
    assert not any(r["kind"] == "weight" for r in records)
    assert any(r["kind"] == "fault" and "counting" in r["fault"] for r in records)
    assert "weighing mode" in records[-1]["diagnosis"]


async def test_nci_manual_reply_through_a_pty(tmp_path: Path) -> None:
    link = str(tmp_path / "nci")
    async with streaming(link, [NCI_REPLY], interval_s=0.05):
        code, records = await probe("scale", "--port", link, "--protocol", "nci", "--count", "2")
    assert code == 0
    assert [r["grams"] for r in records if r["kind"] == "weight"] == [pytest.approx(12.5 * 453.59237)] * 2


async def test_ad_balance_in_command_mode_is_polled_with_q(tmp_path: Path) -> None:
    link = str(tmp_path / "ad")
    async with SimulatedAdScale(link_path=link, polled=True) as balance:
        balance.set_load(187.25)
        code, records = await probe("scale", "--port", link, "--protocol", "ad", "--poll", "--count", "2")
    assert code == 0
    assert [r["grams"] for r in records if r["kind"] == "weight"] == [pytest.approx(187.25)] * 2
    assert balance.commands and set(balance.commands) == {"Q"}


async def test_silence_is_explained(tmp_path: Path) -> None:
    link = str(tmp_path / "quiet")
    async with streaming(link, [b""]):
        code, records = await probe("scale", "--port", link, "--protocol", "toledo", "--timeout", "0.4")
    assert code == 1 and "no bytes at all" in records[-1]["diagnosis"]
    assert "continuous output" in records[-1]["diagnosis"]


async def test_nci_and_sics_are_polled(tmp_path: Path) -> None:
    nci_link, sics_link = str(tmp_path / "nci"), str(tmp_path / "sics")
    async with SimulatedNciScale(link_path=nci_link, unit="kg", decimals=3) as nci:
        nci.set_load(1500.0)
        code, records = await probe("scale", "--port", nci_link, "--protocol", "nci", "--count", "2")
    assert code == 0
    assert [r["grams"] for r in records if r["kind"] == "weight"] == [pytest.approx(1500.0)] * 2
    assert "W" in nci.commands
    async with SimulatedScale(link_path=sics_link) as sics:
        sics.set_load(42.5)
        code, records = await probe("scale", "--port", sics_link, "--protocol", "sics", "--count", "1")
    assert code == 0 and records[0]["grams"] == pytest.approx(42.5) and records[0]["stable"]


async def test_scanner_reads_with_identity(tmp_path: Path) -> None:
    link = str(tmp_path / "scanner")
    async with SimulatedScanner(link_path=link) as sim:

        async def scan() -> None:
            # Opening the port flushes whatever was sent before, and a busy machine may open it late:
            # the same pair of events, in one write, until the probe has its two.
            while True:
                await asyncio.sleep(0.3)
                # GS1-128: AI 01 GTIN 09506000134352 (check digit 2), FNC1 as GS, AI 21 serial.
                sim.emit_raw(b"]C1010950600013435221SN12345\x1d10LOT7\r\nNOREAD\r\n")

        task = asyncio.create_task(scan())
        try:
            code, records = await probe("scanner", "--port", link, "--count", "2", "--timeout", "3")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert code == 0
    read, no_read = records[0], records[1]
    assert read["kind"] == "read" and read["symbology"] == "GS1-128"
    assert read["identity"]["gtin"] == "09506000134352"
    assert no_read["kind"] == "no_read"


async def test_edge_probe_command_end_to_end(tmp_path: Path) -> None:
    """The installed command, as a technician runs it, against a capture on a pty."""
    link = str(tmp_path / "by-id" / "usb-AND_FX-300i-if00")
    async with streaming(link, [AD, b"US,+00123.47  g\r\n"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge", "probe", "scale", "--port", link, "--protocol", "ad", "--count", "3",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    text = stdout.decode()
    assert "123.45 g = 123.450 g" in text and "ok: 3 valid value(s)" in text
