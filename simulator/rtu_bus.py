"""An RS-485 bus made of pseudo-terminals: one master port, any number of device ports.

The controller opens `master_path` like a USB-RS485 adapter; each simulated device (a pymodbus
serial server) opens its own `attach()`-ed path. Bytes the master writes reach every device; bytes
any device writes reach the master, as on a half-duplex two-wire bus. `cut()` is a cable pulled
out of the terminal block: nothing passes until `restore()`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from simulator.pty_device import PtyDevice


class _Tap(PtyDevice):
    def __init__(self, bus: RtuBusSim, is_master: bool, link_path: str | None = None) -> None:
        super().__init__(link_path)
        self.bus = bus
        self.is_master = is_master

    def data_received(self, data: bytes) -> None:
        self.bus._forward(self, data)


class RtuBusSim:
    """Async context manager owning the ptys of one simulated bus."""

    def __init__(self, master_link_path: str | None = None) -> None:
        self._master = _Tap(self, True, master_link_path)
        self._devices: list[_Tap] = []
        self.connected = True
        self.bytes_to_devices = 0
        self.bytes_to_master = 0

    @property
    def master_path(self) -> str:
        """What the controller opens (or the stable link path, when one was given)."""
        return self._master.link_path or self._master.path

    def open(self) -> None:
        self._master.open()

    def attach(self) -> str:
        """A new device port on the bus; returns the path a serial server should open."""
        tap = _Tap(self, False)
        tap.open()
        self._devices.append(tap)
        return tap.path

    def close(self) -> None:
        for tap in self._devices:
            tap.close()
        self._devices.clear()
        self._master.close()

    def cut(self) -> None:
        self.connected = False

    def restore(self) -> None:
        self.connected = True

    def inject_to_master(self, data: bytes) -> None:
        """Line noise or a misbehaving device: raw bytes towards the controller."""
        self._master.write(data)

    def _forward(self, source: _Tap, data: bytes) -> None:
        if not self.connected:
            return
        if source.is_master:
            self.bytes_to_devices += len(data)
            for tap in self._devices:
                if tap.is_open:
                    tap.write(data)
        elif self._master.is_open:
            self.bytes_to_master += len(data)
            self._master.write(data)

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
