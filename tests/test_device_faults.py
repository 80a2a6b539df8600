"""Scenario device faults against the real drivers over ptys, config for the new scale protocols,
and the pipeline's host trigger at the scan photo-eye."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.scale_sics import ScaleUnstable
from drivers.scales import open_scale
from drivers.scanner import NoRead, ScanRead, SerialScanner
from edge.catalog import Catalog
from edge.config import ScaleSettings, ScannerSettings, load_station
from edge.pipeline import Arrival, Pipeline, UnitFacts
from edge.reads import ReadMatcher
from simulator.device_faults import DeviceFault, DeviceFaultPlan
from simulator.scales import SimulatedToledoScale, simulated_scale_for
from simulator.scanner import SimulatedScanner

from .conftest import until

REPO = Path(__file__).resolve().parent.parent


def test_fault_must_fit_the_device() -> None:
    DeviceFault(unit=3, device="scale", fault="unstable")
    with pytest.raises(ValidationError):
        DeviceFault(unit=3, device="scanner", fault="overload")
    with pytest.raises(ValidationError):
        DeviceFault(unit=3, device="scale", fault="no_read")
    with pytest.raises(ValidationError):
        DeviceFault(unit=3, device="scale", fault="melted")  # type: ignore[arg-type]


def test_scale_and_scanner_settings() -> None:
    scale = ScaleSettings(protocol="toledo", port="/dev/ttyUSB0", stability_window_s=0.2, checksum=True)
    assert (scale.protocol, scale.stability_window_s, scale.checksum) == ("toledo", 0.2, True)
    with pytest.raises(ValidationError):
        ScaleSettings(protocol="mettler", port="x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ScaleSettings(port="x", stability_window_s=-1)
    with pytest.raises(ValidationError):
        ScaleSettings(port="x", stabilty_window_s=0.1)  # typo: extra keys are refused
    scanner = ScannerSettings(port="x", suffix="none", no_read_messages=["NG"], duplicate_window_s=1.5,
                              host_trigger=True)
    assert (scanner.suffix, scanner.no_read_messages, scanner.host_trigger) == ("none", ["NG"], True)


async def test_plan_drives_real_faults_seen_by_the_drivers(tmp_path: Path) -> None:
    scanner_link, scale_link = str(tmp_path / "scanner"), str(tmp_path / "scale")
    faults = [
        DeviceFault(unit=0, device="scanner", fault="unplug", duration_s=0.6),
        DeviceFault(unit=1, device="scale", fault="unstable"),
        DeviceFault(unit=1, device="scanner", fault="no_read"),
        DeviceFault(unit=2, device="scale", fault="wrong_baud", duration_s=0.4),
        DeviceFault(unit=3, device="scale", fault="garbage"),
    ]
    async with (
        SimulatedScanner(link_path=scanner_link) as sim_scanner,
        SimulatedToledoScale(link_path=scale_link) as sim_scale,
        SerialScanner(scanner_link) as scanner,
        open_scale(ScaleSettings(protocol="toledo", port=scale_link, stability_window_s=0.05)) as scale,
    ):
        plan = DeviceFaultPlan(faults, sim_scanner, sim_scale)
        await scanner.wait_for_state("online", 2.0)
        await scale.wait_for_state("online", 2.0)

        assert plan.before_scan(0) == set()
        await scanner.wait_for_state("lost", 2.0)
        await scanner.wait_for_state("online", 2.6)  # replugged after 0.6 s, back within 2 s

        assert plan.before_scan(1) == {"unstable", "no_read"}
        sim_scale.set_load(800.0, settle_s=float("inf"))
        # Steady frames of the old load sent before the change may still be on their way (a busy
        # machine); they would end the next wait as a steady weight. Wait for the new load first.
        for _ in range(50):
            if abs((await scale.read_weight(stable_only=False, deadline_s=1.0)).grams - 800.0) < 100.0:
                break
        else:
            raise AssertionError("the scale never reported the new load")
        with pytest.raises(ScaleUnstable):
            await scale.read_weight(deadline_s=0.3)

        sim_scale.set_load(900.0)
        plan.before_scan(2)
        before = scale.errors["parse"]
        await until(lambda: scale.errors["parse"] > before, what="scrambled frames counted")
        await until(lambda: not sim_scale.wrong_baud, what="the wrong baud to end")
        assert (await scale.read_weight(deadline_s=1.0)).grams == pytest.approx(900.0)

        plan.before_scan(3)
        assert (await scale.read_weight(deadline_s=1.0)).grams == pytest.approx(900.0)
        assert len(plan.applied) == 5


@pytest.mark.parametrize("protocol", ["sics", "toledo", "nci", "ad"])
async def test_every_simulated_scale_behind_the_factory(tmp_path: Path, protocol: str) -> None:
    link = str(tmp_path / "scale")
    async with (
        simulated_scale_for(protocol, link) as sim,
        open_scale(ScaleSettings(protocol=protocol, port=link, stability_window_s=0.05)) as scale,
    ):
        await scale.wait_for_state("online", 2.0)
        sim.set_load(1250.0)
        assert (await scale.read_weight(deadline_s=1.0)).grams == pytest.approx(1250.0, abs=0.01)


async def test_pipeline_triggers_the_scanner_at_the_photo_eye(tmp_path: Path) -> None:
    station = load_station(REPO / "config" / "station.sim.yaml")
    link = str(tmp_path / "scanner")
    scanner_cfg = station.scanner.model_copy(update={"port": link, "host_trigger": True, "read_after_s": 0.3})
    config = station.model_copy(update={"scanner": scanner_cfg})
    reads: ReadMatcher = ReadMatcher(scanner_cfg.read_before_s, scanner_cfg.read_after_s)
    async with (
        SimulatedScanner(link_path=link, triggered=True) as sim,
        SerialScanner(link, trigger_window_s=scanner_cfg.read_after_s) as scanner,
    ):
        await scanner.wait_for_state("online", 2.0)

        async def feed() -> None:
            while True:
                await reads.add(await scanner.events.get())

        feeder = asyncio.create_task(feed())
        pipeline = Pipeline(
            config=config, policy=None, catalog=Catalog.load(station.catalog), journal=None,  # type: ignore[arg-type]
            envelope=None, topics=None, alarms=None, reads=reads, scale=None, camera=None,  # type: ignore[arg-type]
            checker=None, vision_executor=None, plc=None, scanner=scanner,  # type: ignore[arg-type]
        )
        # The camera fallback for no-reads is another test's subject; here a no-read stays one.
        pipeline.frame_barcodes = None
        try:
            sim.present("0109506000134352211234567")
            sim.present(None)
            loop = asyncio.get_running_loop()
            facts = UnitFacts()
            await asyncio.wait_for(pipeline._identify(Arrival(1, loop.time()), facts), 5.0)
            assert isinstance(facts.read, ScanRead) and facts.identity is not None
            assert facts.identity.gtin == "09506000134352"
            facts = UnitFacts()
            await asyncio.wait_for(pipeline._identify(Arrival(2, loop.time()), facts), 5.0)
            assert isinstance(facts.read, NoRead | type(None)) and facts.identity is None
            assert sim.triggers == 2
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
