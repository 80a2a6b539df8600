"""Toledo continuous-output, NCI SCP-01 and A&D/CAS scales on ptys, with the faults real ones have.

Each device keeps a simulated load and speaks its protocol byte-exactly (the encoders live next to
the decoders in drivers/, so simulator and driver are checked against the same manual fixtures in
the tests). Fault modes, switchable at any time:

- `unplug()` / `replug()`: the pty disappears and comes back under the same link path;
- `set_load(g, settle_s=inf)`: a weight that never settles (motion frames, jittering value);
- `overload()` / `underload()` / `clear_fault()`: range faults as the protocol reports them;
- `wrong_baud = True`: every frame arrives as the bit salad a receiver at the wrong speed sees;
- `send_garbage(n)`: a burst of random bytes (noise on the line).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Literal

from drivers.scale_ad import encode_ad
from drivers.scale_nci import encode_nci_status, encode_nci_weight
from drivers.scale_sics import UNIT_GRAMS
from drivers.scale_toledo import encode_toledo
from drivers.serial_port import FramingError, LineFramer
from simulator.pty_device import PtyDevice

__all__ = ["SimulatedAdScale", "SimulatedNciScale", "SimulatedToledoScale", "scramble", "simulated_scale_for"]


def scramble(frame: bytes, rng: random.Random) -> bytes:
    """What a UART at the wrong baud rate makes of `frame`: as many bytes, none of them meaningful.

    Start bits land mid-byte, so the receiver sees mostly high-bit and framing-error bytes; NUL and
    0xFF (break and idle line) are typical, as are the odd printable characters.
    """
    out = bytearray()
    for _ in frame:
        out.append(rng.choice((0x00, 0xFF, 0x80, 0xF0, 0xE0, 0xFE, rng.randrange(0x80, 0x100), rng.randrange(256))))
    return bytes(out)


class _FaultyScale(PtyDevice):
    def __init__(
        self,
        link_path: str | None = None,
        *,
        unit: str = "kg",
        decimals: int = 3,
        seed: int = 1,
    ) -> None:
        super().__init__(link_path)
        if unit not in UNIT_GRAMS:
            raise ValueError(f"unit must be one of {sorted(UNIT_GRAMS)}")
        self.unit = unit
        self.decimals = decimals
        self.wrong_baud = False
        self.frames_sent = 0
        self._rng = random.Random(seed)
        self._load_g = 0.0
        self._settled_at = 0.0
        self._range_fault: str | None = None

    # -- scenario control ---------------------------------------------------------------------------

    def set_load(self, grams: float, settle_s: float = 0.0) -> None:
        self._load_g = grams
        self._range_fault = None
        self._settled_at = self._now() + settle_s

    def overload(self) -> None:
        self._range_fault = "over"

    def underload(self) -> None:
        self._range_fault = "under"

    def clear_fault(self) -> None:
        self._range_fault = None

    def unplug(self) -> None:
        self.close()

    def replug(self) -> None:
        self.open()

    def send_garbage(self, count: int = 64) -> bytes:
        data = bytes(self._rng.randrange(256) for _ in range(count))
        if self.is_open:
            self.write(data)
        return data

    # -- state --------------------------------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else asyncio.get_running_loop().time()

    @property
    def stable(self) -> bool:
        return self._now() >= self._settled_at

    def shown_value(self) -> float:
        """The value on the display in the scale's unit, jittering while it is not settled."""
        value = self._load_g / UNIT_GRAMS[self.unit]
        if not self.stable:
            step = 10.0 ** -self.decimals
            value += self._rng.choice((-3, -2, -1, 1, 2, 3)) * step
        return round(value, self.decimals)

    def transmit(self, frame: bytes) -> None:
        if not self.is_open:
            return
        self.write(scramble(frame, self._rng) if self.wrong_baud else frame)
        self.frames_sent += 1


class CommandedScale(_FaultyScale):
    """A scale that answers commands, one per line (CR, LF or CR LF): the reply plumbing shared by
    the MT-SICS, NCI and polled A&D simulators. Subclasses answer in `handle_command`; a line too
    long or garbled gets `bad_command_reply`. With `mute` commands are recorded but not answered
    (a scale hung or in its setup menu)."""

    bad_command_reply = b""
    max_command = 32

    def __init__(self, link_path: str | None = None, **kwargs: object) -> None:
        super().__init__(link_path, **kwargs)  # type: ignore[arg-type]
        self.commands: list[str] = []
        self.mute = False
        self._framer = LineFramer(self.max_command)

    def data_received(self, data: bytes) -> None:
        for line in self._framer.feed(data, self._now()):
            if isinstance(line, FramingError):
                if not self.mute:
                    self.transmit(self.bad_command_reply)
                continue
            command = line.decode("ascii", errors="replace").strip()
            self.commands.append(command)
            if not self.mute:
                self.handle_command(command)

    def handle_command(self, command: str) -> None:
        raise NotImplementedError


class _StreamingScale(_FaultyScale):
    """Sends a frame every `interval_s` while open, as a terminal in continuous mode does."""

    def __init__(self, link_path: str | None = None, *, interval_s: float = 0.02, **kwargs: object) -> None:
        super().__init__(link_path, **kwargs)  # type: ignore[arg-type]
        self.interval_s = interval_s
        self._ticker: asyncio.TimerHandle | None = None

    def open(self) -> None:
        super().open()
        self._schedule()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        super().close()

    def _schedule(self) -> None:
        if self._loop is not None and self.is_open:
            self._ticker = self._loop.call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        with contextlib.suppress(Exception):
            self.transmit(self.frame())
        self._schedule()

    def frame(self) -> bytes:
        raise NotImplementedError


class SimulatedToledoScale(_StreamingScale):
    """A Toledo terminal in standard continuous output (9600 7E1 on real terminals; a pty has no
    parity, so what matters here is the byte content)."""

    def __init__(self, link_path: str | None = None, *, checksum: bool = False, **kwargs: object) -> None:
        kwargs.setdefault("unit", "kg")
        kwargs.setdefault("decimals", 3)
        super().__init__(link_path, **kwargs)  # type: ignore[arg-type]
        self.checksum = checksum

    def frame(self) -> bytes:
        if self._range_fault is not None:
            return encode_toledo(
                -1.0 if self._range_fault == "under" else 0.0, unit=self.unit, decimals=self.decimals,
                out_of_range=True, checksum=self.checksum,
            )
        value = self.shown_value()
        return encode_toledo(value, unit=self.unit, decimals=self.decimals, motion=not self.stable,
                             checksum=self.checksum)


class SimulatedAdScale(_StreamingScale, CommandedScale):
    """An A&D balance in stream mode (or a CAS indicator when `gross_net` is "GS"/"NT").

    With `polled=True` it is in command mode: silent until asked, it answers Q, SI (weight now) and
    S (weight once stable) with one line, and EC,E01 to anything else. `mode` "count" or "percent"
    makes it show pieces or percent, as a balance switched to those modes does.
    """

    def __init__(self, link_path: str | None = None, *, gross_net: str | None = None, polled: bool = False,
                 **kwargs: object) -> None:
        kwargs.setdefault("unit", "g")
        kwargs.setdefault("decimals", 2)
        super().__init__(link_path, **kwargs)  # type: ignore[arg-type]
        self.gross_net = gross_net
        self.polled = polled
        self.mode: Literal["weigh", "count", "percent"] = "weigh"

    bad_command_reply = b"EC,E04\r\n"

    def _schedule(self) -> None:
        if not self.polled:
            super()._schedule()

    def frame(self) -> bytes:
        if self._range_fault is not None:
            return encode_ad(0.0, over=self._range_fault == "over", under=self._range_fault == "under",
                             gross_net=self.gross_net)
        if self.mode == "count":
            pieces = round(self._load_g / 2.5)  # a 2.5 g sample piece
            return encode_ad(pieces, unit="PC", decimals=0, header="QT" if self.stable else "US")
        if self.mode == "percent":
            return encode_ad(self._load_g / 10.0, unit="%", decimals=1, stable=self.stable)
        return encode_ad(self.shown_value(), unit=self.unit, decimals=self.decimals, stable=self.stable,
                         gross_net=self.gross_net)

    def handle_command(self, command: str) -> None:
        if command in ("Q", "SI", "S"):
            self.transmit(self.frame())
        else:
            self.transmit(b"EC,E01\r\n")


# Units an SCP-01 scale steps through on "U", with the decimals its display shows in each.
_NCI_UNITS = {"lb": 2, "kg": 3, "oz": 1, "g": 0}


class SimulatedNciScale(CommandedScale):
    """An SCP-01 scale: answers W, H, U, S and Z (each ended by CR), "?" to anything else."""

    bad_command_reply = b"\n?\r\x03"

    def __init__(self, link_path: str | None = None, **kwargs: object) -> None:
        kwargs.setdefault("unit", "lb")
        kwargs.setdefault("decimals", 2)
        super().__init__(link_path, **kwargs)  # type: ignore[arg-type]
        self._zero_g = 0.0

    def _status(self) -> dict[str, bool]:
        return {
            "motion": not self.stable,
            "at_zero": abs(self._load_g - self._zero_g) < 1e-9,
            "over": self._range_fault == "over",
            "under": self._range_fault == "under",
        }

    def handle_command(self, command: str) -> None:
        if command == "U":
            # Next unit of measure, then the weight in it (as "W").
            units = list(_NCI_UNITS)
            self.unit = units[(units.index(self.unit) + 1) % len(units)] if self.unit in units else units[0]
            self.decimals = _NCI_UNITS[self.unit]
            command = "W"
        if command in ("W", "H"):
            # "H": the same reply at ten times the resolution (one more decimal).
            extra = 1 if command == "H" else 0
            value = round(self.shown_value() - self._zero_g / UNIT_GRAMS[self.unit], self.decimals + extra)
            self.transmit(encode_nci_weight(value, unit=self.unit, decimals=self.decimals + extra,
                                            **self._status()))
        elif command == "S":
            self.transmit(b"\n" + encode_nci_status(**self._status()) + b"\r\x03")
        elif command == "Z":
            if self.stable and self._range_fault is None:
                self._zero_g = self._load_g
            self.transmit(b"\n" + encode_nci_status(**self._status()) + b"\r\x03")
        else:
            self.transmit(b"\n?\r\x03")


def simulated_scale_for(
    protocol: str, link_path: str | None = None, *, checksum: bool = False, polled: bool = False
) -> PtyDevice:
    """The simulated scale speaking `protocol` (a station file's scale.protocol)."""
    if protocol == "sics":
        from simulator.scale import SimulatedScale

        return SimulatedScale(link_path=link_path)
    if protocol == "toledo":
        return SimulatedToledoScale(link_path, checksum=checksum)
    if protocol == "nci":
        return SimulatedNciScale(link_path, unit="kg", decimals=3)
    if protocol == "ad":
        return SimulatedAdScale(link_path, polled=polled)
    raise ValueError(f"no simulated scale for protocol {protocol!r}")
