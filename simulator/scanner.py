"""A serial barcode scanner on a pty: emits reads framed exactly as a real scanner would.

Fault modes: `unplug()`/`replug()` (same link path), `emit_no_read()`, `emit_garbage()`,
`wrong_baud = True` (every read arrives scrambled), and host-trigger mode: with `triggered=True` a
read queued by `present()` is sent only when the host asks with SYN T CR, as a Honeywell scanner in
serial trigger mode does.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Literal

from drivers.scanner import SUFFIX_BYTES, TRIGGER_OFF, TRIGGER_ON
from simulator.pty_device import PtyDevice


class SimulatedScanner(PtyDevice):
    """`aim=False` models a scanner with AIM identifiers switched off (the factory default of many)."""

    def __init__(
        self,
        link_path: str | None = None,
        aim: bool = True,
        suffix: Literal["crlf", "cr", "lf", "none"] = "crlf",
        no_read_message: str = "NR",
        *,
        triggered: bool = False,
        seed: int = 1,
    ) -> None:
        super().__init__(link_path)
        if suffix not in SUFFIX_BYTES:
            raise ValueError(f"suffix must be one of {sorted(SUFFIX_BYTES)}, not {suffix!r}")
        self.aim = aim
        self.suffix = suffix
        self.no_read_message = no_read_message
        self.emitted = 0
        self.triggered = triggered
        self.wrong_baud = False
        self.triggers = 0
        self.lost_while_unplugged = 0
        self.untriggers = 0
        self._presented: deque[tuple[str, str] | None] = deque()
        self._rng = random.Random(seed)
        self._commands = bytearray()

    def unplug(self) -> None:
        self.close()

    def replug(self) -> None:
        self.open()

    def write(self, data: bytes) -> None:
        if not self.is_open:
            # An unplugged scanner's reads go nowhere.
            self.lost_while_unplugged += 1
            return
        if self.wrong_baud:
            from simulator.scales import scramble

            data = scramble(data, self._rng)
        super().write(data)

    def emit_garbage(self, count: int = 32) -> bytes:
        data = bytes(self._rng.randrange(256) for _ in range(count))
        if self.is_open:
            super().write(data)
        return data

    def present(self, text: str | None, aim: str = "]C1", *, replace: bool = False) -> None:
        """Put a label in front of a triggered scanner; None is a unit it cannot read.

        Labels queue up for successive triggers; with `replace` the new unit takes the place of
        whatever was still in front of the scanner (a unit whose trigger never came has moved on,
        so a late trigger must not read it).
        """
        if replace:
            self._presented.clear()
        self._presented.append(None if text is None else (text, aim))

    def data_received(self, data: bytes) -> None:
        self._commands += data
        while True:
            on = self._commands.find(TRIGGER_ON)
            off = self._commands.find(TRIGGER_OFF)
            hits = [i for i in (on, off) if i >= 0]
            if not hits:
                del self._commands[:-2]
                return
            first = min(hits)
            del self._commands[: first + 3]
            if first == on:
                self.triggers += 1
                if self.triggered and self._presented:
                    label = self._presented.popleft()
                    if label is None:
                        self.emit_no_read()
                    else:
                        self.emit_read(*label)
            else:
                self.untriggers += 1

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
