"""Simulator scenarios: which units come down the line, how fast, and what goes wrong.

A scenario is seeded, so the same file produces the same units, labels, weights and damage every
time, each with its ground truth (the grade a perfect station would give and the lane it belongs in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.catalog import Catalog, CatalogItem
from edge.config import StationConfig, load_station
from edge.grading import DamageSummary, Observation, grade_unit
from edge.policy import GradingPolicy, load_policy
from edge.yamlconf import ConfigError, load_yaml, validate
from simulator.device_faults import DeviceFault
from simulator.render import Appearance, Imaging, camera_tilt, generate_appearance

# Beyond ~1e-4 /px the keystone across a 1280 px frame passes 6%: no camera is mounted like that.
CameraTilt = Annotated[float, Field(ge=-1e-4, le=1e-4)]

Fault = Literal["none", "no_read", "wrong_weight", "unknown_gtin"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CellBehaviour(_Strict):
    id: str = Field(description="Robot cell id (must match the station's cells).")
    accept_after_s: float = Field(0.05, ge=0, description="Delay before ACCEPTED.")
    finish_after_s: float = Field(0.4, ge=0, description="Delay from ACCEPTED to FINISHED.")
    lane_capacity: int = Field(40, ge=0, description="Reported free places in the lane.")
    answer_twice: bool = Field(False, description="Publish every state message twice (a QoS 1 re-delivery).")
    offline_after_orders: int | None = Field(
        None, ge=1, description="Go OFFLINE (retained) after handling this many orders; unset: never."
    )
    offline_for_s: float = Field(5.0, ge=0, le=600, description="How long the cell stays offline, then returns.")


class Scenario(_Strict):
    station: Path = Field(Path("station.sim.yaml"), description="Station file the simulated line matches.")
    seed: int = Field(7, description="Seed of every random choice.")
    units: int = Field(40, ge=0, description="Units to induct; 0 runs until stopped.")
    rate_per_s: float = Field(2.0, gt=0, le=50, description="Units inducted per second.")
    belt_speed_mm_s: float = Field(
        1000.0, gt=0, le=10000,
        description="Belt speed (above ~3000 only to reach benchmark rates with laptops on the belt).",
    )
    grade_mix: dict[Literal["A", "B", "C", "D"], float] = Field(
        default_factory=lambda: {"A": 0.45, "B": 0.2, "C": 0.2, "D": 0.15},
        description="Share of each true cosmetic grade.",
    )
    faults: dict[Literal["no_read", "wrong_weight", "unknown_gtin"], float] = Field(
        default_factory=lambda: {"no_read": 0.04, "wrong_weight": 0.03, "unknown_gtin": 0.02},
        description="Share of units with each fault.",
    )
    allow_ambiguous: bool = Field(True, description="Let a few units sit on a grade threshold.")
    scale_settle_s: float = Field(
        0.0, ge=0, le=2,
        description="Time the scale shows 'dynamic' after a unit reaches the scan eye (a weigh conveyor"
        " upstream of the eye has usually settled by then).",
    )
    plc_port: int = Field(0, ge=0, le=65535, description="Modbus TCP port of the simulated PLC; 0 picks one.")
    plc_transport: Literal["tcp", "rtu"] = Field(
        "tcp", description="Serve the PLC over Modbus TCP, or over Modbus RTU on a pty (8N1, 19200 baud)."
    )
    plc_exit_tracking: bool = Field(
        False, description="Write the belt geometry into the station file: encoder tracking and exit confirmation."
    )
    stuck_diverters: list[int] = Field(
        default_factory=list,
        description="Lanes whose diverter paddle never fires: units accepted for them ride on to the belt end "
        "(lane 0), which the exit eyes report as a divert mismatch.",
    )
    camera_port: int = Field(0, ge=0, le=65535, description="HTTP port of the simulated camera; 0 picks one.")
    camera_tilt_per_px: tuple[CameraTilt, CameraTilt] = Field(
        (3.0e-5, -2.0e-5),
        description="The simulated camera's fixed tilt (projective terms x, y in 1/px, about the frame centre; "
        "3e-5 is about 2% keystone across the frame). The station file written for the controller carries the "
        "matching calibration (vision.camera_homography), as a calibrated real station would.",
    )
    camera_lookahead_units: int = Field(
        0, ge=0, le=500,
        description="Render this many units' frames before they are inducted (high-rate benchmarks: rendering a "
        "frame costs the simulator far more than a camera takes; a late frame would count as controller latency).",
    )
    cells: list[CellBehaviour] = Field(default_factory=list, description="Robot cell behaviour.")
    external_cells: list[str] = Field(
        default_factory=list,
        description="Cells of the station the simulator does not play: their orders are left to a robot cell of "
        "your own (or a real one) on the same broker. `edge sim --external-cell ID` adds to it.",
    )
    device_faults: list[DeviceFault] = Field(
        default_factory=list, description="Serial scanner/scale faults by unit (simulator/device_faults.py)."
    )

    @model_validator(mode="after")
    def _shares(self) -> Scenario:
        if abs(sum(self.grade_mix.values()) - 1.0) > 1e-6:
            raise ValueError("grade_mix shares must add up to 1")
        if sum(self.faults.values()) >= 1.0:
            raise ValueError("fault shares must add up to less than 1")
        return self


@dataclass
class SimUnit:
    """One simulated returned unit and its ground truth."""

    index: int
    item: CatalogItem
    gtin: str
    serial: str
    aim: str
    barcode: str
    weight_g: float
    appearance: Appearance
    true_grade: str
    fault: Fault
    ambiguous: bool
    expected_disposition: str = ""
    expected_lane: int = -1
    expected_reasons: list[str] = field(default_factory=list)

    @property
    def length_mm(self) -> float:
        return self.item.length_mm

    def truth(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "sku": self.item.sku,
            "gtin": self.gtin,
            "serial": self.serial,
            "barcode": self.barcode,
            "aim": self.aim,
            "weight_g": round(self.weight_g, 1),
            "true_grade": self.true_grade,
            "fault": self.fault,
            "ambiguous": self.ambiguous,
            "expected_disposition": self.expected_disposition,
            "expected_lane": self.expected_lane,
        }


def _gtin_with_check(body13: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(body13))
    return body13 + str((10 - total % 10) % 10)


class UnitFactory:
    """Draws units for a scenario; the ground truth comes from the station's own grading policy."""

    SERIAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"

    def __init__(self, scenario: Scenario, station: StationConfig, policy: GradingPolicy, catalog: Catalog):
        self.scenario = scenario
        self.station = station
        self.policy = policy
        self.catalog = catalog
        self.rng = np.random.default_rng(scenario.seed)
        self.count = 0

    def _pick_fault(self) -> Fault:
        draw = self.rng.random()
        edge = 0.0
        for fault, share in self.scenario.faults.items():
            edge += share
            if draw < edge:
                return fault
        return "none"

    def next_unit(self) -> SimUnit:
        rng = self.rng
        self.count += 1
        item = self.catalog.items[int(rng.integers(len(self.catalog.items)))]
        grades = list(self.scenario.grade_mix)
        true_grade = str(rng.choice(grades, p=[self.scenario.grade_mix[g] for g in grades]))
        fault = self._pick_fault()
        serial = "".join(rng.choice(list(self.SERIAL_ALPHABET), size=int(rng.integers(8, 13))))
        gtin = item.gtin
        if fault == "unknown_gtin":
            gtin = _gtin_with_check("0" + "0614141" + f"{int(rng.integers(90000, 99999)):05d}")
        aim = "]C1" if rng.random() < 0.6 else "]d2"
        barcode = f"01{gtin}21{serial}"
        weight = item.weight_g + float(rng.normal(0.0, item.weight_tolerance_g / 6))
        if fault == "wrong_weight":
            weight = item.weight_g * float(rng.choice([0.7, 1.3]))
        appearance, ambiguous = generate_appearance(
            true_grade, item.category, item.length_mm, item.width_mm, rng,
            allow_ambiguous=self.scenario.allow_ambiguous,
            # The unit's label as the camera sees it: the same element string in HRI form.
            label_text=f"(01){gtin}(21){serial}",
        )
        # One camera, mounted once: every unit is seen through the same tilt.
        tilt_x, tilt_y = self.scenario.camera_tilt_per_px
        appearance = replace(appearance, imaging=replace(appearance.imaging, perspective_x=tilt_x,
                                                         perspective_y=tilt_y))
        unit = SimUnit(self.count, item, gtin, serial, aim, barcode, weight, appearance, true_grade, fault,
                       ambiguous)
        self._ground_truth(unit)
        return unit

    def _ground_truth(self, unit: SimUnit) -> None:
        scratches = tuple(d.length_mm for d in unit.appearance.defects if d.kind == "scratch")
        cracks = sum(1 for d in unit.appearance.defects if d.kind == "crack")
        known = unit.fault != "unknown_gtin"
        # A scanner no-read is recovered from the camera frame when the unit carries a label.
        unreadable = unit.fault == "no_read" and unit.appearance.label is None
        observation = Observation(
            barcode=None if unreadable else unit.barcode,
            gtin=unit.gtin,
            identity_problems=(),
            item=unit.item if known else None,
            weight_g=unit.weight_g,
            weight_problem=None,
            damage=DamageSummary(
                scratches, cracks, 0.0, dent_count=len(unit.appearance.dents),
                missing_part_count=len(unit.appearance.missing_parts),
            ),
            vision_problem=None,
        )
        verdict = grade_unit(observation, self.policy)
        unit.expected_disposition = verdict.disposition
        unit.expected_lane = self.station.lane_for(verdict.disposition).id
        unit.expected_reasons = list(verdict.reasons)


def load_scenario(
    path: Path | str, external_cells: Sequence[str] = ()
) -> tuple[Scenario, StationConfig, GradingPolicy, Catalog]:
    """The scenario at `path`, its station, grading policy and catalog. `external_cells` adds to the
    scenario's own; each must be a cell of the station (ConfigError otherwise)."""
    scenario = validate(Scenario, load_yaml(path))
    station_path = scenario.station
    if not station_path.is_absolute():
        station_path = Path(path).resolve().parent / station_path
    station = load_station(station_path)
    external = list(dict.fromkeys([*scenario.external_cells, *external_cells]))
    known = [cell.id for cell in station.cells]
    unknown = [cell for cell in external if cell not in known]
    if unknown:
        raise ConfigError(path, [
            f"{path}: external_cells: {', '.join(unknown)} not a cell of station {station_path.name} "
            f"(its cells: {', '.join(known) or 'none'})"
        ])
    scenario = scenario.model_copy(update={"station": station_path, "external_cells": external})
    return scenario, station, load_policy(station.grading_policy), Catalog.load(station.catalog)


def camera_calibration(scenario: Scenario) -> list[list[float]]:
    """The simulated camera's tilt as the belt-plane -> frame homography a calibration would find."""
    tilt_x, tilt_y = scenario.camera_tilt_per_px
    return camera_tilt(Imaging(perspective_x=tilt_x, perspective_y=tilt_y)).tolist()
