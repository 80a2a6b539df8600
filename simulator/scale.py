"""An MT-SICS level 0/1 scale on a pty, answering from a simulated load.

Reply formats follow the MT-SICS reference manual: the weight right-aligned in a 10-character
field after "S S " / "S D ", then a space and the unit, e.g. b"S S     123.45 g\\r\\n".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drivers.scale_sics import UNIT_GRAMS
from simulator.scales import CommandedScale

CRLF = b"\r\n"


class SimulatedScale(CommandedScale):
    """Load, faults (unplug, garbage, wrong baud, unstable, over/underload) and the command-line
    plumbing come from `CommandedScale`, shared with the NCI and A&D simulators."""

    bad_command_reply = b"ES" + CRLF
    max_command = 128

    def __init__(
        self,
        link_path: str | None = None,
        *,
        unit: str = "g",
        decimals: int = 2,
        capacity_g: float = 6200.0,
        serial_number: str = "B021002593",
        model: str = "WMS404C-L/10",
        stable_timeout_s: float = 1.0,
    ) -> None:
        super().__init__(link_path, unit=unit, decimals=decimals)
        self.capacity_g = capacity_g
        self.serial_number = serial_number
        self.model = model
        # How long "S" (send stable) waits for stability before giving up with "S I", as real
        # balances do after their internal stability timeout.
        self.stable_timeout_s = stable_timeout_s
        self._zero_g = 0.0
        self._tare_g = 0.0
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def net_g(self) -> float:
        return self._load_g - self._zero_g - self._tare_g

    # -- protocol ---------------------------------------------------------------------------------

    def _fault(self) -> str | None:
        if self._range_fault is not None:
            return {"over": "+", "under": "-"}[self._range_fault]
        if self._load_g > self.capacity_g:
            return "+"
        if self._load_g < 0:
            return "-"
        return None

    def _format_weight(self, grams: float) -> str:
        value = grams / UNIT_GRAMS[self.unit]
        text = f"{value:.{self.decimals}f}"
        if text.startswith("-") and float(text) == 0:
            text = text[1:]
        return f"{text:>10} {self.unit}"

    def _weight_line(self, stable: bool) -> bytes:
        return f"S {'S' if stable else 'D'} {self._format_weight(self.net_g)}".encode("ascii") + CRLF

    def _cancel_pending(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def _reply(self, line: bytes) -> None:
        self.transmit(line)

    def _later(self, delay: float, callback: Callable[..., object], *args: object) -> None:
        if self._loop is not None and self.is_open:
            self._timers.append(self._loop.call_later(delay, callback, *args))

    def handle_command(self, command: str) -> None:
        if command in ("@", "SIR", "S", "SI", "Z", "T"):
            # A new weighing command supersedes a repeating or waiting one, as on a real balance.
            self._cancel_pending()
        handler = {
            "S": self._cmd_s,
            "SI": self._cmd_si,
            "SIR": self._cmd_sir,
            "Z": self._cmd_z,
            "T": self._cmd_t,
            "@": self._cmd_reset,
            "I1": lambda: self._reply(b'I1 A "01" "2.20" "2.20" "" ""' + CRLF),
            "I2": lambda: self._reply(f'I2 A "{self.model} {self.capacity_g:.1f} g"'.encode() + CRLF),
            "I3": lambda: self._reply(b'I3 A "2.20"' + CRLF),
            "I4": lambda: self._reply(f'I4 A "{self.serial_number}"'.encode() + CRLF),
        }.get(command)
        if handler is None:
            self._reply(b"ES" + CRLF)
            return
        handler()

    def _cmd_si(self) -> None:
        fault = self._fault()
        if fault:
            self._reply(f"S {fault}".encode() + CRLF)
        else:
            self._reply(self._weight_line(self.stable))

    def _cmd_s(self) -> None:
        fault = self._fault()
        if fault:
            self._reply(f"S {fault}".encode() + CRLF)
            return
        wait = self._settled_at - self._now()
        if wait <= 0:
            self._reply(self._weight_line(True))
        elif wait > self.stable_timeout_s:
            self._later(self.stable_timeout_s, self._reply, b"S I" + CRLF)
        else:
            self._later(wait, self._cmd_s)

    def _cmd_sir(self, interval_s: float = 0.1) -> None:
        self._cmd_si()
        self._later(interval_s, self._cmd_sir, interval_s)

    def _cmd_z(self) -> None:
        fault = self._fault()
        if fault:
            self._reply(f"Z {fault}".encode() + CRLF)
        elif not self.stable:
            self._reply(b"Z I" + CRLF)
        else:
            self._zero_g = self._load_g
            self._tare_g = 0.0
            self._reply(b"Z A" + CRLF)

    def _cmd_t(self) -> None:
        fault = self._fault()
        if fault:
            self._reply(f"T {fault}".encode() + CRLF)
        elif not self.stable:
            self._reply(b"T I" + CRLF)
        else:
            self._tare_g = self._load_g - self._zero_g
            self._reply(f"T S {self._format_weight(self._tare_g)}".encode("ascii") + CRLF)

    def _cmd_reset(self) -> None:
        self._tare_g = 0.0
        self._reply(f'I4 A "{self.serial_number}"'.encode() + CRLF)

    def close(self) -> None:
        self._cancel_pending()
        super().close()
