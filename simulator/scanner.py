"""A serial barcode scanner on a pty: emits reads framed exactly as a real scanner would."""

from __future__ import annotations

from typing import Literal

from drivers.scanner import SUFFIX_BYTES
from simulator.pty_device import PtyDevice


class SimulatedScanner(PtyDevice):
    """`aim=False` models a scanner with AIM identifiers switched off (the factory default of many)."""

    def __init__(
        self,
        link_path: str | None = None,
        aim: bool = True,
        suffix: Literal["crlf", "cr", "lf"] = "crlf",
        no_read_message: str = "NR",
    ) -> None:
        super().__init__(link_path)
        if suffix not in SUFFIX_BYTES:
            raise ValueError(f"suffix must be one of {sorted(SUFFIX_BYTES)}, not {suffix!r}")
        self.aim = aim
        self.suffix = suffix
        self.no_read_message = no_read_message
        self.emitted = 0

    def frame(self, text: str, aim: str = "]C1") -> bytes:
        prefix = aim if self.aim else ""
        return (prefix + text).encode("utf-8") + SUFFIX_BYTES[self.suffix]

    def emit_read(self, text: str, aim: str = "]C1") -> bytes:
        """Send one read; returns the exact bytes written."""
        data = self.frame(text, aim)
        self.write(data)
        self.emitted += 1
        return data

    def emit_no_read(self) -> bytes:
        data = self.no_read_message.encode("ascii") + SUFFIX_BYTES[self.suffix]
        self.write(data)
        self.emitted += 1
        return data

    def emit_raw(self, data: bytes) -> None:
        """Arbitrary bytes, for noise and fault injection."""
        self.write(data)
