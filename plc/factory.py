"""Build the PlcLink a station's `plc:` settings describe (TCP or RTU), for the daemon and the probe.

Takes the settings object duck-typed (edge.config.PlcSettings) so plc/ does not import edge/.
"""

from __future__ import annotations

from typing import Any

from plc.client import PlcLink
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


def build_link(settings: Any, *, write_heartbeat: bool = True, name: str = "plc") -> PlcLink:
    """A PlcLink (not yet entered) for `settings`; the caller owns it as an async context manager."""
    register_map = settings.build_register_map()
    common: dict[str, Any] = {
        "poll_period_s": settings.poll_period_s,
        "heartbeat_period_s": settings.heartbeat_period_s,
        "timeout_s": settings.timeout_s,
        "rearm_delay_s": settings.rearm_delay_s,
        "require_plc_armed": settings.require_plc_armed,
        "write_heartbeat": write_heartbeat,
        "positions": build_positions(settings),
        "name": name,
    }
    if settings.transport == "rtu":
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
        return RtuPlcLink(bus, register_map, owns_bus=True, **common)
    return PlcLink(settings.host, settings.port, register_map, **common)
