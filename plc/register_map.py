"""Conveyor PLC register map: where each named signal lives and how its words are packed.

Pure data and arithmetic, no I/O: the link (plc.client), the simulated PLC (simulator.conveyor)
and config loading all share this one description, so the two ends of the wire cannot drift apart.
Addresses are 0-based protocol addresses (what goes in the Modbus PDU), not 4xxxx-style numbers.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

Table = Literal["coil", "discrete_input", "input_register", "holding_register"]
SignalType = Literal["bool", "uint16", "int16", "uint32", "int32", "float32"]
WordOrder = Literal["big", "little"]
Value = bool | int | float

TABLES: Final[tuple[Table, ...]] = get_args(Table)
SIGNAL_TYPES: Final[tuple[SignalType, ...]] = get_args(SignalType)
BIT_TABLES: Final[frozenset[str]] = frozenset({"coil", "discrete_input"})
WRITABLE_TABLES: Final[frozenset[str]] = frozenset({"coil", "holding_register"})
WIDTH: Final[dict[str, int]] = {
    "bool": 1,
    "uint16": 1,
    "int16": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
}
# Modbus PDU limits per read request (FC1/FC2 bits, FC3/FC4 registers).
MAX_READ_BITS: Final = 2000
MAX_READ_REGISTERS: Final = 125
_MAX_ADDRESS: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class Signal:
    """One named value in one Modbus table.

    `type` defaults to "bool" in the bit tables and "uint16" in the register tables, so a
    config entry only has to say what differs from the obvious.
    """

    name: str
    table: Table
    address: int
    type: SignalType | None = None
    word_order: WordOrder = "big"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"signal name must be a non-empty string, got {self.name!r}")
        if self.table not in TABLES:
            raise ValueError(f"signal {self.name!r}: unknown table {self.table!r} (expected one of {TABLES})")
        if self.type is None:
            object.__setattr__(self, "type", "bool" if self.table in BIT_TABLES else "uint16")
        if self.type not in SIGNAL_TYPES:
            raise ValueError(
                f"signal {self.name!r}: unknown type {self.type!r} (expected one of {SIGNAL_TYPES})"
            )
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(
                f"signal {self.name!r}: type {self.type!r} cannot live in bit table {self.table!r}"
            )
        if self.word_order not in ("big", "little"):
            raise ValueError(f"signal {self.name!r}: word_order must be 'big' or 'little'")
        # bool is an int subclass; an address of True is a config mistake, not address 1.
        if not isinstance(self.address, int) or isinstance(self.address, bool):
            raise ValueError(f"signal {self.name!r}: address must be an integer, got {self.address!r}")
        if self.address < 0 or self.end - 1 > _MAX_ADDRESS:
            raise ValueError(
                f"signal {self.name!r}: address {self.address} (width {self.width}) outside 0..65535"
            )

    @property
    def width(self) -> int:
        """Number of coils/registers the signal occupies."""
        return WIDTH[self.type or "uint16"]

    @property
    def end(self) -> int:
        """One past the last address used."""
        return self.address + self.width

    def decode(self, words: Sequence[int] | Sequence[bool]) -> Value:
        """Decode exactly `width` raw values (bits or 16-bit words) into a Python value."""
        if len(words) != self.width:
            raise ValueError(f"signal {self.name!r}: expected {self.width} values, got {len(words)}")
        if self.table in BIT_TABLES or self.type == "bool":
            return bool(words[0])
        regs = [_check_word(self.name, w) for w in words]
        if self.type == "uint16":
            return regs[0]
        if self.type == "int16":
            return regs[0] - 0x10000 if regs[0] & 0x8000 else regs[0]
        hi, lo = (regs[0], regs[1]) if self.word_order == "big" else (regs[1], regs[0])
        raw = struct.pack(">HH", hi, lo)
        if self.type == "uint32":
            return int(struct.unpack(">I", raw)[0])
        if self.type == "int32":
            return int(struct.unpack(">i", raw)[0])
        return float(struct.unpack(">f", raw)[0])

    def encode(self, value: Value) -> list[int]:
        """Encode a Python value into `width` raw values (0/1 for bits, 16-bit words otherwise)."""
        if self.type == "bool":
            if not isinstance(value, bool | int):
                raise ValueError(f"signal {self.name!r}: bool value expected, got {value!r}")
            return [1 if value else 0]
        if self.type == "float32":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"signal {self.name!r}: number expected, got {value!r}")
            fval = float(value)
            if math.isfinite(fval) and abs(fval) > 3.4028234663852886e38:
                raise ValueError(f"signal {self.name!r}: {value!r} overflows float32")
            raw = struct.pack(">f", fval)
        else:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"signal {self.name!r}: integer expected, got {value!r}")
            fmt = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i"}[self.type or "uint16"]
            try:
                raw = struct.pack(fmt, value)
            except struct.error as exc:
                raise ValueError(f"signal {self.name!r}: {value!r} out of range for {self.type}") from exc
        words = list(struct.unpack(f">{len(raw) // 2}H", raw))
        if self.word_order == "little" and len(words) == 2:
            words.reverse()
        return words

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "address": self.address,
            "type": self.type,
            "word_order": self.word_order,
        }


def _check_word(name: str, word: int) -> int:
    if not isinstance(word, int) or not 0 <= word <= 0xFFFF:
        raise ValueError(f"signal {name!r}: register value {word!r} is not a 16-bit word")
    return int(word)


_SIGNAL_KEYS: Final = frozenset({"table", "address", "type", "word_order"})

# Decode plan entries: (signal name, offset in the read, value kind, big word order first).
_PlanEntry = tuple[str, int, int, bool]
_UINT16, _INT16, _UINT32, _INT32, _FLOAT32_KIND = range(5)
_KIND: Final[dict[str, int]] = {
    "bool": _UINT16,  # only ever in the bit tables, decoded there as bool
    "uint16": _UINT16,
    "int16": _INT16,
    "uint32": _UINT32,
    "int32": _INT32,
    "float32": _FLOAT32_KIND,
}
_UINT32_BYTES: Final = struct.Struct(">I")
_FLOAT32: Final = struct.Struct(">f")
_MAX_PLANS: Final = 64


class RegisterMap:
    """A validated set of signals plus the Modbus device (unit) id they are read from."""

    def __init__(self, signals: Mapping[str, Signal], device_id: int = 1) -> None:
        if not isinstance(device_id, int) or isinstance(device_id, bool) or not 0 <= device_id <= 255:
            raise ValueError(f"device_id must be 0..255, got {device_id!r}")
        self.device_id = device_id
        self.signals: dict[str, Signal] = {}
        for key, sig in signals.items():
            if not isinstance(sig, Signal):
                raise ValueError(f"signal {key!r}: expected a Signal, got {type(sig).__name__}")
            if key != sig.name:
                raise ValueError(f"signal {key!r}: key does not match Signal.name {sig.name!r}")
            self.signals[key] = sig
        self._by_table: dict[str, list[Signal]] = {t: [] for t in TABLES}
        for sig in sorted(self.signals.values(), key=lambda s: (s.table, s.address)):
            self._by_table[sig.table].append(sig)
        for table, sigs in self._by_table.items():
            for prev, cur in itertools.pairwise(sigs):
                if cur.address < prev.end:
                    raise ValueError(
                        f"signal {cur.name!r} overlaps signal {prev.name!r} in {table} "
                        f"at address {cur.address}"
                    )
        # Decode plans per (table, start, count) read: the link decodes the same few blocks a
        # hundred times a second, so the per-signal lookups are done once (see `decode`).
        self._plans: dict[tuple[str, int, int], tuple[_PlanEntry, ...]] = {}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], device_id: int = 1) -> RegisterMap:
        """Build from the config format `{name: {table, address, type?, word_order?}}`."""
        if not isinstance(d, Mapping):
            raise ValueError(f"register map must map signal names to entries, got {type(d).__name__}")
        signals: dict[str, Signal] = {}
        for name, entry in d.items():
            if not isinstance(name, str):
                raise ValueError(f"signal name must be a string, got {name!r}")
            if not isinstance(entry, Mapping):
                raise ValueError(f"signal {name!r}: entry must be a mapping, got {type(entry).__name__}")
            unknown = set(entry) - _SIGNAL_KEYS
            if unknown:
                raise ValueError(f"signal {name!r}: unknown keys {sorted(unknown)}")
            for required in ("table", "address"):
                if required not in entry:
                    raise ValueError(f"signal {name!r}: missing {required!r}")
            signals[name] = Signal(
                name=name,
                table=entry["table"],
                address=entry["address"],
                type=entry.get("type"),
                word_order=entry.get("word_order", "big"),
            )
        return cls(signals, device_id=device_id)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: sig.to_dict() for name, sig in self.signals.items()}

    def __contains__(self, name: object) -> bool:
        return name in self.signals

    def __getitem__(self, name: str) -> Signal:
        try:
            return self.signals[name]
        except KeyError:
            raise KeyError(f"no signal {name!r} in register map") from None

    def __repr__(self) -> str:
        return f"RegisterMap({len(self.signals)} signals, device_id={self.device_id})"

    def require(self, names: Iterable[str]) -> None:
        """Raise ValueError naming every signal the caller needs that the map lacks."""
        missing = [n for n in names if n not in self.signals]
        if missing:
            raise ValueError(f"register map lacks required signals: {', '.join(missing)}")

    def table_signals(self, table: Table) -> list[Signal]:
        """Signals of one table, ordered by address."""
        return list(self._by_table[table])

    def table_span(self, table: Table) -> tuple[int, int] | None:
        """(first address, one past last address) used in a table, or None when it is empty."""
        sigs = self._by_table[table]
        if not sigs:
            return None
        return sigs[0].address, max(s.end for s in sigs)

    def blocks(self, max_gap: int = 0) -> dict[Table, list[tuple[int, int]]]:
        """Read requests covering every signal: `{table: [(address, count), ...]}`.

        Signals merge into one request when at most `max_gap` unused addresses separate them.
        The default of 0 never reads an address the map does not name, because many PLCs answer
        a read touching an unmapped address with an exception for the whole request.
        """
        out: dict[Table, list[tuple[int, int]]] = {}
        for table in TABLES:
            limit = MAX_READ_BITS if table in BIT_TABLES else MAX_READ_REGISTERS
            spans: list[list[int]] = []
            for sig in self._by_table[table]:
                if spans and sig.address - spans[-1][1] <= max_gap and sig.end - spans[-1][0] <= limit:
                    spans[-1][1] = max(spans[-1][1], sig.end)
                else:
                    spans.append([sig.address, sig.end])
            if spans:
                out[table] = [(start, end - start) for start, end in spans]
        return out

    def decode(self, table: Table, start: int, values: Sequence[int] | Sequence[bool]) -> dict[str, Value]:
        """Decode every signal of `table` lying wholly inside `values` read from `start`.

        Extra trailing values (bit reads come back padded to a byte) are ignored. Same result as
        decoding each signal with `Signal.decode`, which is what happens whenever a word is not a
        plain int in 0..0xFFFF (so a bad word raises the very same error).
        """
        key = (table, start, len(values))
        plan = self._plans.get(key)
        if plan is None:
            if table not in TABLES:
                raise ValueError(f"unknown table {table!r}")
            plan = self._plan(table, start, len(values))
            if len(self._plans) >= _MAX_PLANS:  # odd one-off reads (tools) must not grow it forever
                self._plans.clear()
            self._plans[key] = plan
        out: dict[str, Value] = {}
        if table in BIT_TABLES:
            for name, off, _kind, _big in plan:
                out[name] = bool(values[off])
            return out
        for name, off, kind, big in plan:
            word = values[off]
            if word.__class__ is not int or not 0 <= word <= 0xFFFF:
                return self._decode_signals(table, start, values)
            if kind == _UINT16:
                out[name] = word
            elif kind == _INT16:
                out[name] = word - 0x10000 if word & 0x8000 else word
            else:
                other = values[off + 1]
                if other.__class__ is not int or not 0 <= other <= 0xFFFF:
                    return self._decode_signals(table, start, values)
                raw = (word << 16) | other if big else (other << 16) | word
                if kind == _UINT32:
                    out[name] = raw
                elif kind == _INT32:
                    out[name] = raw - 0x1_0000_0000 if raw & 0x8000_0000 else raw
                else:
                    out[name] = float(_FLOAT32.unpack(_UINT32_BYTES.pack(raw))[0])
        return out

    def _plan(self, table: Table, start: int, count: int) -> tuple[_PlanEntry, ...]:
        end = start + count
        return tuple(
            (sig.name, sig.address - start, _KIND[sig.type or "uint16"], sig.word_order == "big")
            for sig in self._by_table[table]
            if sig.address >= start and sig.end <= end
        )

    def _decode_signals(self, table: Table, start: int, values: Sequence[int] | Sequence[bool]) -> dict[str, Value]:
        """Signal by signal: the reference for `decode`, and the path that reports bad words."""
        end = start + len(values)
        out: dict[str, Value] = {}
        for sig in self._by_table[table]:
            if sig.address >= start and sig.end <= end:
                off = sig.address - start
                out[sig.name] = sig.decode(values[off : off + sig.width])
        return out

    def encode(self, name: str, value: Value) -> list[int]:
        """Raw words (or 0/1 for bits) for one signal's value."""
        return self[name].encode(value)


def _sig(name: str, table: Table, address: int, type_: SignalType | None = None) -> Signal:
    return Signal(name=name, table=table, address=address, type=type_)


def default_map(lanes: int = 5, device_id: int = 1) -> RegisterMap:
    """The default map documented in docs/architecture.md.

    `lanes` only changes how many divert_eye_k discrete inputs exist; the documented layout is
    5 lanes, which puts reject_eye at 11. Other lane counts shift reject_eye to follow the eyes.
    """
    if not 1 <= lanes <= 64:
        raise ValueError(f"lanes must be 1..64, got {lanes}")
    sigs: list[Signal] = [
        _sig("infeed_eye", "discrete_input", 0),
        _sig("scan_eye", "discrete_input", 1),
        _sig("jam_eye", "discrete_input", 2),
        _sig("estop_healthy", "discrete_input", 3),
        _sig("motor_overload", "discrete_input", 4),
        _sig("belt_running", "discrete_input", 5),
    ]
    sigs += [_sig(f"divert_eye_{k}", "discrete_input", 5 + k) for k in range(1, lanes + 1)]
    sigs.append(_sig("reject_eye", "discrete_input", 6 + lanes))
    sigs += [
        _sig("plc_heartbeat", "input_register", 0),
        _sig("status_word", "input_register", 1),
        _sig("fault_word", "input_register", 2),
        _sig("item_counter", "input_register", 3),
        _sig("scan_item_id", "input_register", 4),
        _sig("encoder_count", "input_register", 5, "uint32"),
        _sig("belt_speed_mm_s", "input_register", 7),
        _sig("divert_ack_seq", "input_register", 8),
        _sig("divert_ack_item_id", "input_register", 9),
        _sig("divert_ack_lane", "input_register", 10),
        _sig("divert_ack_status", "input_register", 11),
        _sig("diverted_count", "input_register", 12),
        _sig("rejected_count", "input_register", 13),
        _sig("gateway_heartbeat", "holding_register", 0),
        _sig("divert_request_seq", "holding_register", 1),
        _sig("divert_request_item_id", "holding_register", 2),
        _sig("divert_request_lane", "holding_register", 3),
        _sig("belt_run", "coil", 0),
    ]
    return RegisterMap({s.name: s for s in sigs}, device_id=device_id)
