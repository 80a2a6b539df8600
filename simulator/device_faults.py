"""Serial device faults in scenario files: which unit they hit, which device, for how long.

A scenario lists them under `device_faults`, e.g.

    device_faults:
      - {unit: 10, device: scale, fault: unstable}
      - {unit: 20, device: scanner, fault: unplug, duration_s: 3}
      - {unit: 30, device: scale, fault: wrong_baud, duration_s: 1}

`unit` is the 0-based index of the unit at whose scan the fault starts. Per-unit faults (no_read,
unstable, overload) affect that unit only; unplug, wrong_baud and garbage act on the device for
`duration_s` (garbage: one burst).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DeviceFault", "DeviceFaultPlan"]

_PER_UNIT = {"no_read", "unstable", "overload"}


class DeviceFault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: int = Field(
        ge=0, description="The unit at whose scan the fault starts, as `edge sim` counts them: 1 for the first unit.",
    )
    device: Literal["scanner", "scale"] = Field(description="Which serial device misbehaves.")
    fault: Literal["unplug", "garbage", "no_read", "unstable", "overload", "wrong_baud"] = Field(
        description="unplug/replug, a burst of noise, a failed read, a weight that never settles, "
        "overload, or the bit salad of a wrong baud rate."
    )
    duration_s: float = Field(1.0, ge=0, le=600, description="How long unplug or wrong_baud lasts.")

    @model_validator(mode="after")
    def _fits_device(self) -> DeviceFault:
        if self.device == "scanner" and self.fault in ("unstable", "overload"):
            raise ValueError(f"a scanner has no {self.fault} fault")
        if self.device == "scale" and self.fault == "no_read":
            raise ValueError("a scale has no no_read fault")
        return self


class DeviceFaultPlan:
    """Applies the scenario's device faults as units reach the scan point."""

    def __init__(self, faults: list[DeviceFault], scanner: Any, scale: Any) -> None:
        self._by_unit: dict[int, list[DeviceFault]] = {}
        for fault in faults:
            self._by_unit.setdefault(fault.unit, []).append(fault)
        self._devices = {"scanner": scanner, "scale": scale}
        self.applied: list[DeviceFault] = []

    def before_scan(self, unit_index: int) -> set[str]:
        """Start the faults due at this unit; returns the per-unit ones ("no_read", "unstable", ...)."""
        per_unit: set[str] = set()
        loop = asyncio.get_running_loop()
        for fault in self._by_unit.get(unit_index, []):
            self.applied.append(fault)
            device = self._devices[fault.device]
            if fault.fault in _PER_UNIT:
                per_unit.add(fault.fault)
            elif fault.fault == "unplug":
                if device.is_open:
                    device.unplug()
                    loop.call_later(fault.duration_s, _replug, device)
            elif fault.fault == "wrong_baud":
                device.wrong_baud = True
                loop.call_later(fault.duration_s, setattr, device, "wrong_baud", False)
            elif fault.fault == "garbage" and device.is_open:
                if hasattr(device, "emit_garbage"):
                    device.emit_garbage(64)
                else:
                    device.send_garbage(64)
                # Noise ends with a line break so the unit's own frame is not glued onto it.
                device.write(b"\r\n")
        return per_unit


def _replug(device: Any) -> None:
    if not device.is_open:
        device.replug()
