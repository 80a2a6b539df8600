"""Station configuration: one YAML file describes a whole grading station.

Every model forbids unknown keys, so a typo is an error with its line number instead of a
silently ignored setting. Cross-field rules live in model validators.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.yamlconf import ConfigError, load_yaml, validate
from plc.register_map import RegisterMap, default_map

TOPIC_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
TopicId = Annotated[str, Field(pattern=TOPIC_ID_PATTERN)]

DISPOSITIONS = ("restock", "refurbish", "repair", "harvest", "recycle", "quarantine")
Disposition = Literal["restock", "refurbish", "repair", "harvest", "recycle", "quarantine"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(StrictModel):
    url: str = Field("mqtt://127.0.0.1:1883", description="Broker URL, mqtt://host:port.")
    topic_prefix: str = Field("returns/v1", description="First topic levels, before {site}/{line}.")
    client_id: TopicId | None = Field(None, description="MQTT client id; defaults to the controller id.")
    username: str | None = Field(None, description="Broker user name.")
    password_file: Path | None = Field(None, description="File holding the broker password (never inline).")
    keepalive_s: int = Field(15, ge=5, le=600, description="MQTT keepalive; the Will fires after 1.5x this.")
    session_expiry_s: int = Field(3600, ge=0, description="How long the broker keeps our session while away.")
    status_interval_s: float = Field(5.0, gt=0, le=300, description="Period of controller/status.")
    reconnect_max_s: float = Field(10.0, gt=0, le=300, description="Cap of the reconnect backoff.")

    @field_validator("url")
    @classmethod
    def _url_is_mqtt(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError("must look like mqtt://host:port")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_levels(cls, value: str) -> str:
        levels = value.split("/")
        if not all(re.match(TOPIC_ID_PATTERN, level) for level in levels):
            raise ValueError("each topic level must match " + TOPIC_ID_PATTERN)
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883


class ScannerSettings(StrictModel):
    port: str = Field(description="Serial device, ideally a stable /dev/serial/by-id/... path.")
    baudrate: int = Field(9600, description="Baud rate.")
    bytesize: Literal[7, 8] = Field(8, description="Data bits.")
    parity: Literal["N", "E", "O"] = Field("N", description="Parity.")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits.")
    suffix: Literal["crlf", "cr", "lf"] = Field("crlf", description="Line terminator the scanner sends.")
    read_before_s: float = Field(
        0.25, ge=0, le=5, description="A read this long before the scan photo-eye still belongs to the unit."
    )
    read_after_s: float = Field(
        0.3, gt=0, le=5, description="How long after the scan photo-eye to wait for a read."
    )
    rma_pattern: str = Field(r"^RMA-?\d{6,10}$", description="Regular expression of RMA labels.")

    @field_validator("rma_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class ScaleSettings(StrictModel):
    protocol: Literal["sics"] = Field("sics", description="Scale protocol (Mettler Toledo MT-SICS).")
    port: str = Field(description="Serial device of the scale.")
    baudrate: int = Field(9600, description="Baud rate.")
    bytesize: Literal[7, 8] = Field(8, description="Data bits.")
    parity: Literal["N", "E", "O"] = Field("N", description="Parity.")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits.")
    stable_deadline_s: float = Field(0.3, gt=0, le=5, description="How long to wait for a stable weight.")


class PlcSettings(StrictModel):
    transport: Literal["tcp"] = Field("tcp", description="Modbus transport.")
    host: str = Field("127.0.0.1", description="PLC address.")
    port: int = Field(502, ge=1, le=65535, description="Modbus TCP port.")
    device_id: int = Field(1, ge=0, le=247, description="Modbus unit/device id.")
    poll_period_s: float = Field(0.01, ge=0.002, le=1, description="Period of the input poll.")
    heartbeat_period_s: float = Field(0.1, ge=0.01, le=5, description="Gateway heartbeat period.")
    timeout_s: float = Field(0.2, gt=0, le=5, description="Timeout of one Modbus request.")
    divert_timeout_s: float = Field(0.25, gt=0, le=5, description="How long to wait for a divert ack.")
    register_map: dict[str, dict[str, Any]] | Literal["default"] = Field(
        "default", description="'default' (docs/architecture.md) or {signal: {table, address, type}}."
    )

    @model_validator(mode="after")
    def _map_is_valid(self) -> PlcSettings:
        try:
            self.build_register_map()
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"register_map: {exc}") from exc
        return self

    def build_register_map(self) -> RegisterMap:
        if self.register_map == "default":
            return default_map()
        return RegisterMap.from_dict(self.register_map)


class CameraSettings(StrictModel):
    kind: Literal["http_trigger"] = Field(
        "http_trigger", description="Hardware-triggered camera serving frames by trigger id over HTTP."
    )
    url: str = Field(description="Base URL of the camera, e.g. http://10.0.0.20:8080.")
    timeout_s: float = Field(0.5, gt=0, le=10, description="How long to wait for a triggered frame.")


class VisionSettings(StrictModel):
    px_per_mm: float = Field(3.0, gt=0, le=100, description="Camera calibration: pixels per millimetre.")
    cache_dir: Path | None = Field(None, description="Numba kernel cache directory (NUMBA_CACHE_DIR).")
    workers: int = Field(1, ge=1, le=8, description="Vision worker threads.")


class LaneSettings(StrictModel):
    id: int = Field(ge=0, le=255, description="Lane number as the PLC knows it; 0 is the end of the belt.")
    name: TopicId = Field(description="Readable lane name.")
    dispositions: list[Disposition] = Field(description="Dispositions sorted to this lane.")
    cell: TopicId | None = Field(None, description="Robot cell serving this lane.")


class CellSettings(StrictModel):
    id: TopicId = Field(description="Robot cell id, used in its topics.")
    order_timeout_s: float = Field(5.0, gt=0, le=3600, description="Re-send an unanswered order after this.")


class JournalSettings(StrictModel):
    path: Path = Field(Path("/var/lib/edge/journal.db"), description="SQLite decision journal.")
    evidence_dir: Path | None = Field(None, description="Where evidence images are kept.")


class StationConfig(StrictModel):
    controller_id: TopicId = Field(description="This controller's id in payloads and client ids.")
    site: TopicId = Field(description="Site id, a topic level.")
    line: TopicId = Field(description="Line id, a topic level.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Broker connection.")
    scanner: ScannerSettings = Field(description="Serial barcode scanner at the scan point.")
    scale: ScaleSettings = Field(description="Serial scale at the scan point.")
    plc: PlcSettings = Field(description="Conveyor PLC.")
    camera: CameraSettings = Field(description="Camera at the scan point.")
    vision: VisionSettings = Field(default_factory=VisionSettings, description="Damage check.")
    lanes: list[LaneSettings] = Field(description="Sort lanes; lane 0 is the reject/manual lane.")
    cells: list[CellSettings] = Field(default_factory=list, description="Robot cells.")
    reject_lane: int = Field(0, description="Lane for every unit the controller is unsure about.")
    grading_policy: Path = Field(
        Path("grading.yaml"), description="Grading policy file (relative paths: to this file)."
    )
    catalog: Path = Field(Path("catalog.csv"), description="Product catalog CSV (relative paths: to this file).")
    journal: JournalSettings = Field(default_factory=JournalSettings, description="Decision journal.")

    @model_validator(mode="after")
    def _lanes_and_cells_agree(self) -> StationConfig:
        lane_ids = [lane.id for lane in self.lanes]
        if len(set(lane_ids)) != len(lane_ids):
            raise ValueError("lanes: two lanes share an id")
        if self.reject_lane not in lane_ids:
            raise ValueError(f"reject_lane {self.reject_lane} is not one of the lanes")
        cell_ids = {cell.id for cell in self.cells}
        for lane in self.lanes:
            if lane.cell is not None and lane.cell not in cell_ids:
                raise ValueError(f"lane {lane.id} names cell {lane.cell!r}, which is not in cells")
        claimed: dict[str, int] = {}
        for lane in self.lanes:
            for disposition in lane.dispositions:
                if disposition in claimed:
                    raise ValueError(
                        f"disposition {disposition!r} is sorted to lanes {claimed[disposition]} and {lane.id}"
                    )
                claimed[disposition] = lane.id
        missing = [d for d in DISPOSITIONS if d not in claimed]
        if missing:
            raise ValueError(f"no lane takes disposition(s) {', '.join(missing)}")
        return self

    def lane(self, lane_id: int) -> LaneSettings:
        return next(lane for lane in self.lanes if lane.id == lane_id)

    def lane_for(self, disposition: str) -> LaneSettings:
        return next(lane for lane in self.lanes if disposition in lane.dispositions)

    def cell(self, cell_id: str) -> CellSettings:
        return next(cell for cell in self.cells if cell.id == cell_id)


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def load_station(path: Path | str) -> StationConfig:
    """Load and validate a station file, resolving its relative file paths against it."""
    loaded = load_yaml(path)
    config = validate(StationConfig, loaded)
    base = Path(path).resolve().parent
    journal = config.journal.model_copy(
        update={
            "path": _resolve(base, config.journal.path),
            "evidence_dir": _resolve(base, config.journal.evidence_dir) if config.journal.evidence_dir else None,
        }
    )
    config = config.model_copy(
        update={
            "grading_policy": _resolve(base, config.grading_policy),
            "catalog": _resolve(base, config.catalog),
            "journal": journal,
        }
    )
    for field, file in (("grading_policy", config.grading_policy), ("catalog", config.catalog)):
        if not file.is_file():
            line = loaded.line_of((field,))
            raise ConfigError(path, [f"{path}:{line}: {field}: file {file} does not exist"])
    return config


__all__ = ["DISPOSITIONS", "ConfigError", "StationConfig", "load_station"]
