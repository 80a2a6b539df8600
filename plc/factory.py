"""Build the PlcLink a station's `plc:` settings describe (TCP or RTU), for the daemon and the probe.

Takes the settings object duck-typed (edge.config.PlcSettings) so plc/ does not import edge/.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from plc.client import PlcLink
from plc.exits import ExitTracker
from plc.positions import PositionTracker, TrackingGeometry
from plc.rtu import RtuBus, RtuPlcLink


def build_positions(settings: Any) -> PositionTracker | None:
    tracking = getattr(settings, "tracking", None)
    if tracking is None:
        return None
    register_map = settings.build_register_map()
    bits = 16 * register_map["encoder_count"].width if "encoder_count" in register_map else 32
    geometry = TrackingGeometry(
        mm_per_count=tracking.mm_per_count,
        scan_point_mm=tracking.scan_point_mm,
        diverter_mm=dict(tracking.diverter_mm),
        margin_mm=tracking.margin_mm,
        counter_bits=bits,
    )
    return PositionTracker(geometry)


def build_exits(settings: Any, positions: PositionTracker | None) -> ExitTracker | None:
    """Exit confirmation needs the encoder geometry and where the belt ends (the reject eye)."""
    tracking = getattr(settings, "tracking", None)
    belt_end_mm = getattr(tracking, "belt_end_mm", None)
    if positions is None or belt_end_mm is None:
        return None
    return ExitTracker(positions.geometry, belt_end_mm=belt_end_mm, window_mm=tracking.exit_window_mm)


class BusConflict(ValueError):
    """Two devices name the same serial port with different line settings."""


class BusPool:
    """One RtuBus per serial port, shared by every device configured on it (one RS-485 master)."""

    def __init__(self) -> None:
        self.buses: dict[str, RtuBus] = {}
        self._owners: dict[str, str] = {}
        self._device_ids: dict[str, dict[int, str]] = {}

    @staticmethod
    def line_settings(settings: Any) -> tuple[object, ...]:
        serial = settings.serial
        # The request timeout is the serial client's, so it is part of what the devices must agree on.
        return (serial.baudrate, serial.bytesize, serial.parity, serial.stopbits, settings.timeout_s)

    def bus_for(self, settings: Any, name: str) -> RtuBus:
        port = os.path.realpath(settings.serial.port)
        on_port = self._device_ids.setdefault(port, {})
        device_id = settings.device_id
        if device_id in on_port:
            raise BusConflict(
                f"{name}: device id {device_id} on {settings.serial.port} is already {on_port[device_id]}'s"
            )
        on_port[device_id] = name
        bus = self.buses.get(port)
        if bus is None:
            serial = settings.serial
            bus = RtuBus(
                serial.port,
                baudrate=serial.baudrate,
                bytesize=serial.bytesize,
                parity=serial.parity,
                stopbits=serial.stopbits,
                timeout_s=settings.timeout_s,
                name=f"{name}-bus",
            )
            self.buses[port] = bus
            self._owners[port] = name
            return bus
        mine = self.line_settings(settings)
        theirs = (bus.baudrate, bus.bytesize, bus.parity, bus.stopbits, bus.timeout_s)
        if mine != theirs:
            raise BusConflict(
                f"{name}: serial port {settings.serial.port} is shared with {self._owners[port]}, so its "
                f"baudrate/bytesize/parity/stopbits/timeout_s must match: {mine} != {theirs}"
            )
        return bus


def build_link(
    settings: Any, *, write_heartbeat: bool = True, name: str = "plc", pool: BusPool | None = None
) -> PlcLink:
    """A PlcLink (not yet entered) for `settings`; the caller owns it as an async context manager.

    RTU links built with the same `pool` share one bus per serial port.
    """
    register_map = settings.build_register_map()
    positions = build_positions(settings)
    common: dict[str, Any] = {
        "poll_period_s": settings.poll_period_s,
        "heartbeat_period_s": settings.heartbeat_period_s,
        "timeout_s": settings.timeout_s,
        "rearm_delay_s": settings.rearm_delay_s,
        "require_plc_armed": settings.require_plc_armed,
        "write_heartbeat": write_heartbeat,
        "positions": positions,
        "exits": build_exits(settings, positions),
        "name": name,
    }
    if settings.transport == "rtu":
        bus = (pool or BusPool()).bus_for(settings, name)
        return RtuPlcLink(bus, register_map, owns_bus=True, **common)
    return PlcLink(settings.host, settings.port, register_map, **common)


def build_links(devices: Mapping[str, Any], *, write_heartbeat: bool = True) -> dict[str, PlcLink]:
    """Links for several named PLC devices; RTU devices on one serial port share its bus.

    Raises BusConflict when devices on one port disagree on its line settings.
    """
    pool = BusPool()
    return {name: build_link(s, write_heartbeat=write_heartbeat, name=name, pool=pool) for name, s in devices.items()}
