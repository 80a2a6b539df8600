"""One place that turns the `scale:` section of a station file into a scale driver.

Every driver it returns is an async context manager with `read_weight(stable_only, deadline_s)`,
`state`, `wait_for_state` and an `errors` counter, so the daemon and `edge probe` need not care
which protocol the scale speaks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from drivers.scale_ad import AdScale
from drivers.scale_nci import NciScale
from drivers.scale_sics import SicsScale
from drivers.scale_toledo import ToledoScale
from drivers.serial_port import SerialSettings

if TYPE_CHECKING:
    from edge.config import ScaleSettings

Protocol = Literal["sics", "toledo", "nci", "ad"]
PROTOCOLS: tuple[Protocol, ...] = ("sics", "toledo", "nci", "ad")

__all__ = ["PROTOCOLS", "open_scale"]


def open_scale(settings: ScaleSettings, *, name: str = "scale", **overrides: Any) -> Any:
    """The driver for `settings.protocol`, not yet entered (use `async with`)."""
    serial = SerialSettings(settings.port, settings.baudrate, settings.bytesize, settings.parity, settings.stopbits)
    if settings.protocol == "sics":
        return SicsScale(
            settings.port, baudrate=settings.baudrate, bytesize=settings.bytesize, parity=settings.parity,
            stopbits=settings.stopbits, name=name, **overrides,
        )
    common: dict[str, Any] = {
        "stability_window_s": settings.stability_window_s,
        "stability_tolerance_g": settings.stability_tolerance_g,
        "name": name,
        **overrides,
    }
    if settings.protocol == "toledo":
        return ToledoScale(serial, checksum=settings.checksum, **common)
    if settings.protocol == "nci":
        return NciScale(serial, poll_interval_s=settings.poll_interval_s, **common)
    if settings.protocol == "ad":
        return AdScale(serial, polled=settings.polled, poll_interval_s=settings.poll_interval_s, **common)
    raise ValueError(f"unknown scale protocol {settings.protocol!r}")
