"""Station configuration: one YAML file describes a whole grading station.

Every model forbids unknown keys, so a typo is an error with its line number instead of a
silently ignored setting. Cross-field rules live in model validators.
"""

from __future__ import annotations

import math
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


class MqttTls(StrictModel):
    ca_file: str | None = Field(
        None, description="CA the broker certificate must chain to (path or credential:NAME); default: system CAs."
    )
    cert_file: str | None = Field(None, description="Client certificate (PEM), path or credential:NAME.")
    key_file: str | None = Field(
        None, description="Client private key (PEM), path or credential:NAME; must not be world-readable."
    )
    verify_hostname: bool = Field(True, description="Check the broker certificate names the url's host.")

    @model_validator(mode="after")
    def _key_with_cert(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttSettings(StrictModel):
    url: str = Field("mqtt://127.0.0.1:1883", description="Broker URL, mqtt://host:port.")
    topic_prefix: str = Field("returns/v1", description="First topic levels, before {site}/{line}.")
    client_id: TopicId | None = Field(None, description="MQTT client id; defaults to the controller id.")
    username: str | None = Field(None, description="Broker user name.")
    password_file: str | None = Field(
        None,
        description="Broker password: a file path or credential:NAME from $CREDENTIALS_DIRECTORY (never inline).",
    )
    tls: MqttTls | None = Field(None, description="TLS to the broker; needs an mqtts:// url.")
    keepalive_s: int = Field(15, ge=5, le=600, description="MQTT keepalive; the Will fires after 1.5x this.")
    session_expiry_s: int = Field(3600, ge=0, description="How long the broker keeps our session while away.")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version: 5 with a session expiry; auto falls back to 3.1.1 if the broker refuses 5."
    )
    status_interval_s: float = Field(5.0, gt=0, le=300, description="Period of controller/status.")
    reconnect_max_s: float = Field(10.0, gt=0, le=300, description="Cap of the reconnect backoff.")
    stop_drain_s: float = Field(
        2.0, ge=0, le=10,
        description="On stop, how long the outbox may go on sending what is queued (waiting for a connection "
        "that is still coming up) before the connection closes; what is left is sent after the next start.",
    )

    @field_validator("url")
    @classmethod
    def _url_is_mqtt(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "tcp", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        return value

    @model_validator(mode="after")
    def _tls_needs_mqtts(self) -> MqttSettings:
        if self.tls is not None and not self.tls_enabled:
            raise ValueError("tls: settings need an mqtts:// url")
        return self

    @property
    def tls_enabled(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

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
        return urlsplit(self.url).port or (8883 if self.tls_enabled else 1883)


class ScannerSettings(StrictModel):
    port: str = Field(description="Serial device, ideally a stable /dev/serial/by-id/... path.")
    baudrate: int = Field(9600, description="Baud rate.")
    bytesize: Literal[7, 8] = Field(8, description="Data bits.")
    parity: Literal["N", "E", "O"] = Field("N", description="Parity.")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits.")
    suffix: Literal["crlf", "cr", "lf", "none"] = Field(
        "crlf", description="Line terminator the scanner sends; 'none' frames by inter-character timeout."
    )
    intercharacter_timeout_s: float = Field(
        0.05, gt=0, le=2, description="With suffix 'none': a pause this long ends a read."
    )
    max_line: int = Field(512, ge=16, le=8192, description="Longest read accepted; longer lines are dropped.")
    no_read_messages: list[str] = Field(
        default_factory=lambda: ["NR", "NOREAD", "NO READ"],
        description="Texts the scanner sends for a failed read (compared case-insensitively).",
    )
    duplicate_window_s: float = Field(
        0.0, ge=0, le=60, description="Drop a repeat of the same symbol this soon after it was accepted (0: off)."
    )
    banner_patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions of lines to drop as power-up banners (searched in the whole line).",
    )
    aim_required: bool = Field(
        False,
        description="The scanner is set to prefix every read with its AIM identifier: a line without one is "
        "garbage (noise, wrong baud rate), counted and alarmed, never used as an identity.",
    )
    min_length: int = Field(
        4, ge=1, le=64, description="Reads shorter than this are garbage (no label on this line is that short)."
    )
    host_trigger: bool = Field(
        False, description="Trigger a read (Honeywell SYN T CR) when a unit reaches the scan photo-eye."
    )
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

    @field_validator("banner_patterns")
    @classmethod
    def _banners_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from exc
        return value


class ScaleSettings(StrictModel):
    protocol: Literal["sics", "toledo", "nci", "ad"] = Field(
        "sics",
        description="Scale protocol: MT-SICS, Toledo continuous output, NCI/Weigh-Tronix SCP-01 or A&D/CAS lines.",
    )
    port: str = Field(description="Serial device of the scale.")
    baudrate: int = Field(9600, description="Baud rate.")
    bytesize: Literal[7, 8] = Field(8, description="Data bits.")
    parity: Literal["N", "E", "O"] = Field("N", description="Parity.")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits.")
    stable_deadline_s: float = Field(0.3, gt=0, le=5, description="How long to wait for a stable weight.")
    stability_window_s: float = Field(
        0.1, ge=0, le=5, description="toledo/nci/ad: the weight must be stable and unchanged this long."
    )
    stability_tolerance_g: float = Field(
        0.0, ge=0, description="toledo/nci/ad: largest change in grams still counted as unchanged."
    )
    poll_interval_s: float = Field(
        0.05, gt=0, le=5, description="nci, and ad when polled: period of the W / Q weight request."
    )
    checksum: bool = Field(False, description="toledo: frames end with a checksum byte after CR.")
    polled: bool = Field(
        False, description="ad: the balance is in command mode; ask for each weight with Q instead of stream mode."
    )


class PlcSerialSettings(StrictModel):
    port: str = Field(description="Serial device of the RS-485 adapter, ideally /dev/serial/by-id/...")
    baudrate: int = Field(19200, description="Baud rate.")
    bytesize: Literal[7, 8] = Field(8, description="Data bits.")
    parity: Literal["N", "E", "O"] = Field("E", description="Parity (Modbus RTU default: even).")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits.")


class PlcTrackingSettings(StrictModel):
    mm_per_count: float = Field(gt=0, description="Belt travel per encoder_count step, in mm.")
    scan_point_mm: float = Field(ge=0, description="Scan photo-eye position along the belt, in mm.")
    diverter_mm: dict[int, float] = Field(description="Diverter position per lane id (lane 0 has none), in mm.")
    margin_mm: float = Field(50.0, ge=0, description="Refuse a divert unless the unit is this far upstream.")
    belt_end_mm: float | None = Field(
        None, gt=0, description="Belt end (reject_eye) position in mm; set it to confirm exits by the lane eyes."
    )
    exit_window_mm: float = Field(
        100.0, gt=0, description="How far from its lane's exit a unit may be when the exit eye trips, in mm."
    )


class PlcSettings(StrictModel):
    transport: Literal["tcp", "rtu"] = Field("tcp", description="Modbus transport: tcp or rtu (serial).")
    host: str = Field("127.0.0.1", description="PLC address.")
    port: int = Field(502, ge=1, le=65535, description="Modbus TCP port.")
    serial: PlcSerialSettings | None = Field(None, description="Serial line settings; required for rtu.")
    rearm_delay_s: float = Field(
        0.5, ge=0, le=60, description="Both heartbeats healthy this long before diverts re-arm."
    )
    require_plc_armed: bool = Field(
        True, description="Divert only while the PLC sets the armed bit (0x0004) of status_word."
    )
    tracking: PlcTrackingSettings | None = Field(
        None, description="Controller-side encoder tracking: refuse diverts that can no longer make it."
    )
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

    @model_validator(mode="after")
    def _serial_for_rtu(self) -> PlcSettings:
        if self.transport == "rtu" and self.serial is None:
            raise ValueError("transport rtu needs a serial: section (port, baudrate, ...)")
        if self.transport == "rtu" and self.device_id == 0:
            # 0 is the RTU broadcast address: every device obeys, none answers.
            raise ValueError("device_id: 0 is the broadcast address on an RTU bus; use the PLC's own id (1..247)")
        return self

    def build_register_map(self) -> RegisterMap:
        if self.register_map == "default":
            return default_map(device_id=self.device_id)
        return RegisterMap.from_dict(self.register_map, device_id=self.device_id)


class CameraSettings(StrictModel):
    kind: Literal["http_trigger"] = Field(
        "http_trigger", description="Hardware-triggered camera serving frames by trigger id over HTTP."
    )
    url: str = Field(description="Base URL of the camera, e.g. http://10.0.0.20:8080.")
    timeout_s: float = Field(0.5, gt=0, le=10, description="How long to wait for a triggered frame.")


Homography = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]


class CameraCalibration(StrictModel):
    """The camera's calibration; also the whole content of an `edge inspect --calibration` file."""

    px_per_mm: float = Field(
        3.0, gt=0, le=100,
        description="Pixels per millimetre on the belt plane (with camera_homography: of the plane it maps from).",
    )
    camera_homography: Homography | None = Field(
        None,
        description="Camera tilt: 3x3 matrix (three rows of three) mapping belt-plane px at px_per_mm to camera "
        "frame px, for a camera not looking straight down. With it sizes and positions are measured on the belt "
        "plane, so both ends of a tilted view are in true mm; without it the frame is taken as the plane.",
    )

    @field_validator("camera_homography")
    @classmethod
    def _invertible(cls, value: Homography | None) -> Homography | None:
        if value is None:
            return value
        if not all(math.isfinite(v) for row in value for v in row):
            raise ValueError("every entry must be a finite number")
        import numpy as np

        scale = max(abs(v) for row in value for v in row)
        if scale == 0:
            raise ValueError("matrix is not invertible")
        # A homography means the same at any scale: kept with its largest entry 1 (no overflow in
        # what follows), and invertible means well-conditioned, a test independent of the scale.
        normalised = tuple(tuple(v / scale for v in row) for row in value)
        if not float(np.linalg.cond(np.array(normalised))) < 1e12:  # vision.damage.MAX_HOMOGRAPHY_CONDITION
            raise ValueError("matrix is not invertible")
        return normalised  # type: ignore[return-value]


class VisionSettings(CameraCalibration):
    cache_dir: Path | None = Field(None, description="Numba kernel cache directory (NUMBA_CACHE_DIR).")
    workers: int = Field(1, ge=1, le=8, description="Vision worker threads.")
    max_units_in_flight: int = Field(
        16, ge=1, le=1000,
        description="Units being decided at once, each holding its camera frame (a 1280x720 frame is 2.7 MB; 16 is "
        "0.8 s at 20 units/s, when a decision is usually too late for its diverter anyway). A unit beyond this is "
        "not graded by vision: it goes to the reject lane with the reason, an alarm and a counter.",
    )
    barcode_backend: Literal["zxing", "pyzbar", "off"] = Field(
        "zxing",
        description="Decoder for labels in the camera frame when the scanner has no read (pyzbar needs libzbar).",
    )
    # Ridge rules: a thin stroke is a scratch only if the grey profile along its centre line is
    # one narrow, unbroken, two-sided ridge; what fails them (dust specks in a row, a stain's rim,
    # a glare band) is not reported. Defaults are tuned on the simulator's evaluation set.
    ridge_min_gap_ratio: float = Field(
        0.4, ge=0.0, lt=1.0,
        description="Weakest point of a scratch's ridge over its mean contrast; lower keeps strokes with gaps "
        "(dust specks in a row read as a scratch below about 0.3).",
    )
    ridge_min_two_sided: float = Field(
        0.72, ge=0.0, le=1.0,
        description="How much of a scratch's contrast must stand out against both flanks rather than one "
        "(1 a line on a flat surface, about 0 a step such as a stain's rim).",
    )
    ridge_max_width_px: float = Field(
        4.0, ge=2.5, le=12.0,
        description="Widest ridge, in camera px across, still read as a scratch (a scratch blurred by the optics "
        "is 2-4 px); wider ones are glare bands. Raise it for a camera that blurs more.",
    )
    crack_max_width_px: float = Field(
        5.0, ge=2.5, le=15.0,
        description="Widest median ridge, in camera px across its arms, still read as a crack (its impact point "
        "widens it a little over a scratch); wider ones are a glare band's crossing or the ring around a highlight.",
    )
    crack_min_wander_px: float = Field(
        2.0, gt=0.0, le=10.0,
        description="A thin line whose centre line strays this far (camera px, peak to peak) from a smooth curve is "
        "a crack's zigzagging arms; a smoother one is a scratch, straight or bent (scratches stay within about 1 px).",
    )

    bent_scratch_max_width_px: float = Field(
        4.5, ge=2.5, le=12.0,
        description="Widest ridge, in camera px across, still read as a bent scratch when no wider ridge carries "
        "on past its ends (a glare band cut off by the screen edge does); raise it with ridge_max_width_px.",
    )

    @model_validator(mode="after")
    def _wider_rules_cover_the_scratch_width(self) -> VisionSettings:
        # A camera that blurs more widens cracks and bent scratches as much as straight scratches:
        # raising only ridge_max_width_px would silently drop real cracks between the two.
        for name in ("crack_max_width_px", "bent_scratch_max_width_px"):
            if getattr(self, name) < self.ridge_max_width_px:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be at least ridge_max_width_px ({self.ridge_max_width_px}): "
                    "raise it with ridge_max_width_px"
                )
        return self

    def ridge_rules(self) -> dict[str, float]:
        """The ridge and crack rules as `vision.damage.DamageChecker` keyword arguments."""
        return {
            "ridge_min_gap_ratio": self.ridge_min_gap_ratio,
            "ridge_min_two_sided": self.ridge_min_two_sided,
            "ridge_max_width_px": self.ridge_max_width_px,
            "crack_max_width_px": self.crack_max_width_px,
            "crack_min_wander_px": self.crack_min_wander_px,
            "bent_scratch_max_width_px": self.bent_scratch_max_width_px,
        }


class LaneSettings(StrictModel):
    id: int = Field(ge=0, le=255, description="Lane number as the PLC knows it; 0 is the end of the belt.")
    name: TopicId = Field(description="Readable lane name.")
    dispositions: list[Disposition] = Field(description="Dispositions sorted to this lane.")
    cell: TopicId | None = Field(None, description="Robot cell serving this lane.")


class CellSettings(StrictModel):
    id: TopicId = Field(description="Robot cell id, used in its topics.")
    order_timeout_s: float = Field(5.0, gt=0, le=3600, description="Re-send an unanswered order after this.")
    order_expiry_s: float = Field(
        900.0, gt=0, le=7 * 86400,
        description="Stop re-sending an order the cell has not finished this long after the first send: the "
        "decision is marked expired and a critical order_unanswered alarm asks a person to see to the unit.",
    )


class JournalSettings(StrictModel):
    path: Path = Field(Path("/var/lib/edge/journal.db"), description="SQLite decision journal.")
    evidence_dir: Path | None = Field(None, description="Where evidence images are kept.")
    retention_days: float = Field(
        30.0, gt=0, le=3650, description="Completed units older than this are pruned from the journal."
    )
    max_units: int = Field(
        200_000, ge=100, description="At most this many units are kept; the oldest completed ones go first."
    )
    prune_interval_s: float = Field(300.0, ge=1, le=86400, description="How often the retention policy runs.")
    convert_budget_s: float = Field(
        120.0, ge=1, le=3600,
        description="A journal made before incremental auto-vacuum is converted by one VACUUM in the retention "
        "task, only while no unit is in flight: while it is still rebuilding it gives way to the next unit (tried "
        "again at a later pass) and stops after this long (tried again after the next start); a stopped VACUUM "
        "leaves the file as it was.",
    )


class MetricsSettings(StrictModel):
    listen: str | None = Field(
        None, description="host:port of the Prometheus endpoint, e.g. 127.0.0.1:9108; unset: no endpoint."
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must look like host:port, e.g. 127.0.0.1:9108")
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class StationConfig(StrictModel):
    controller_id: TopicId = Field(description="This controller's id in payloads and client ids.")
    site: TopicId = Field(description="Site id, a topic level.")
    line: TopicId = Field(description="Line id, a topic level.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Broker connection.")
    scanner: ScannerSettings = Field(description="Serial barcode scanner at the scan point.")
    scale: ScaleSettings = Field(description="Serial scale at the scan point.")
    plc: PlcSettings = Field(description="Conveyor PLC.")
    plc_devices: dict[str, PlcSettings] = Field(
        default_factory=dict,
        description="Further PLC devices by name, watched for telemetry and device alarms; RTU devices on the"
        " same serial port share one bus and must agree on its line settings.",
    )
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
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Prometheus metrics endpoint.")

    @model_validator(mode="after")
    def _lanes_and_cells_agree(self) -> StationConfig:
        lane_ids = [lane.id for lane in self.lanes]
        if len(set(lane_ids)) != len(lane_ids):
            raise ValueError("lanes: two lanes share an id")
        if self.reject_lane not in lane_ids:
            raise ValueError(f"reject_lane {self.reject_lane} is not one of the lanes")
        if self.reject_lane != 0:
            # The PLC's own safe default (no divert, or a cancelled one) is the end of the belt,
            # lane 0: any other reject lane would make "unsure" and "rejected" two places.
            raise ValueError("reject_lane must be 0, the end of the belt where the PLC sends undiverted units")
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


def _check_shared_buses(path: Path | str, loaded: Any, config: StationConfig) -> None:
    """RTU devices naming one serial port share one bus: its line settings and device ids must agree."""
    from plc.factory import BusConflict, BusPool

    pool = BusPool()
    devices: list[tuple[tuple[str, ...], PlcSettings]] = [(("plc",), config.plc)]
    devices += [(("plc_devices", name), settings) for name, settings in config.plc_devices.items()]
    for loc, settings in devices:
        if settings.transport != "rtu":
            continue
        try:
            pool.bus_for(settings, ".".join(loc))
        except BusConflict as exc:
            line = loaded.line_of((*loc, "serial"))
            raise ConfigError(path, [f"{path}:{line}: {'.'.join(loc)}.serial: {exc}"]) from exc


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
    _check_shared_buses(path, loaded, config)
    for field, file in (("grading_policy", config.grading_policy), ("catalog", config.catalog)):
        if not file.is_file():
            line = loaded.line_of((field,))
            raise ConfigError(path, [f"{path}:{line}: {field}: file {file} does not exist"])
    return config


__all__ = ["DISPOSITIONS", "ConfigError", "StationConfig", "load_station"]
