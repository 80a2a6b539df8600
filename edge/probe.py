"""`edge probe scanner|scale`: commissioning tools for serial devices.

Open a port with the given settings, print what the device sends as parsed values (one JSON object
per line with --json), and when the bytes do not fit the protocol say what is most likely wrong:
nothing at all (cable, power, port, a scale not in continuous mode), bytes with bit 7 set (7E1
device read as 8N1 or the reverse), line noise (baud rate), or frames of another scale protocol.
Exit status: 0 when at least one valid value was seen, 1 when not, 2 when the port cannot be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import serial

from drivers.scale_ad import POLL_COMMAND as AD_POLL_COMMAND
from drivers.scale_ad import AdDecoder
from drivers.scale_nci import NciDecoder
from drivers.scale_sics import SicsReply, WeightReading, parse_sics_line
from drivers.scale_stream import Decoded, LineDecoder, ScaleFault, ScaleNotice, ScaleSample
from drivers.scale_toledo import ToledoDecoder
from drivers.scanner import FramingError, NoRead, ScannerFramer, ScanRead
from drivers.serial_port import PortUnavailable, SerialLink, SerialSettings

__all__ = ["add_device_probes", "diagnose", "run_probe"]

SCALE_PROTOCOLS = ("sics", "toledo", "nci", "ad")
# What a command-driven scale is asked, and how often.
_POLLS = {"sics": b"SI\r\n", "nci": b"W\r"}
_POLL_INTERVAL_S = 0.2
_CAPTURE = 4096


class _SicsDecoder(LineDecoder):
    """MT-SICS replies in the same value vocabulary as the stream decoders, for the probe only."""

    def decode(self, line: bytes, now: float) -> list[Decoded]:
        reply = parse_sics_line(line, now)
        if isinstance(reply, WeightReading):
            return [ScaleSample(now, reply.stable, reply.value, reply.unit, reply.grams, raw=bytes(line))]
        if isinstance(reply, SicsReply):
            return [ScaleNotice(f"{reply.command} {reply.status}", now, None, bytes(line))]
        if reply.code == "parse":
            return [ScaleFault(reply.message, now, reply.raw)]
        status = reply.code.rsplit(" ", 1)[-1]
        fault = {"+": "overload", "-": "underload"}.get(status, reply.message)
        if reply.command in ("S", "SI", "SIR"):
            return [ScaleSample(now, False, None, "", None, fault=fault, raw=bytes(line))]
        return [ScaleNotice(reply.code, now, reply.message, bytes(line))]


DECODERS: dict[str, Callable[[], Any]] = {
    "sics": _SicsDecoder,
    "toledo": ToledoDecoder,
    "nci": NciDecoder,
    "ad": AdDecoder,
}


@dataclass
class Capture:
    """What arrived, for the diagnosis at the end."""

    raw: bytearray = field(default_factory=bytearray)
    total: int = 0
    valid: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = _CAPTURE - len(self.raw)
        if room > 0:
            self.raw += chunk[:room]


def diagnose(kind: str, protocol: str | None, capture: Capture, settings: SerialSettings, waited_s: float) -> str:
    """One or two sentences on why no valid value arrived. Pure."""
    port = f"{settings.port} at {settings.baudrate} {settings.bytesize}{settings.parity}{settings.stopbits:g}"
    if capture.total == 0:
        hint = {
            "scanner": "is the scanner in serial (not keyboard/HID) mode, and was a label scanned?",
            "sics": "did the scale answer SI? check the baud rate and that the port is the scale's",
            "nci": "did the scale answer W? check the baud rate and that the port is the scale's",
            "toledo": "is the terminal's port set to continuous output?",
            "ad": "is the balance in stream mode (or does it need a print key press)?",
        }[protocol or kind]
        return f"no bytes at all from {port} in {waited_s:.1f} s: check cable and power; {hint}"
    not_weights = [m for m in capture.faults if m.startswith("not a weight")]
    if kind == "scale" and not_weights:
        return (f"{port} sends well-formed {protocol} frames, but no weights: {not_weights[0]}; "
                f"switch the scale to weighing mode (grams, kilograms, pounds or ounces)")
    raw = bytes(capture.raw)
    high = sum(1 for b in raw if b & 0x80) / len(raw)
    masked = bytes(b & 0x7F for b in raw)
    if high and kind == "scale" and protocol is not None:
        found = sum(1 for x in DECODERS[protocol]().feed(masked, 0.0) if isinstance(x, ScaleSample))
        if found:
            return (f"{capture.total} bytes from {port}: {protocol} frames appear once bit 7 is ignored, so bit 7 "
                    f"carries parity: try --bytesize 7 --parity E (or O)")
    readable = [x for x in ScannerFramer().feed(masked, 0.0) if isinstance(x, ScanRead)] if kind == "scanner" else []
    if high and readable and all(x.text.replace("\x1d", "").isprintable() for x in readable):
        return (f"{capture.total} bytes from {port}: reads appear once bit 7 is ignored, so bit 7 carries "
                f"parity: try --bytesize 7 --parity E (or O)")
    if high > 0.25:
        parity_hint = (
            "the device probably sends 7 data bits with parity: try --bytesize 7 --parity E"
            if settings.bytesize == 8 else "or the baud rate is wrong"
        )
        return (
            f"{capture.total} bytes from {port} but {high:.0%} have bit 7 set, which no protocol here uses: "
            f"{parity_hint}; if that does not help, the baud rate is wrong"
        )
    if kind == "scale":
        others = []
        candidates = {name: factory for name, factory in DECODERS.items() if name != protocol}
        if protocol == "toledo":
            candidates["toledo without --checksum"] = ToledoDecoder
        for name, factory in candidates.items():
            found = sum(1 for x in factory().feed(raw, 0.0) if isinstance(x, ScaleSample))
            if found:
                others.append(f"{name} ({found} frame(s))")
        if others:
            return (f"{capture.total} bytes from {port}, none a valid {protocol} frame, but they decode as "
                    f"{', '.join(others)}: try --protocol {others[0].split(' ')[0]}")
    controls = sum(1 for b in raw if b < 0x20 and b not in (0x0A, 0x0D, 0x02, 0x03, 0x04, 0x1D, 0x1E))
    if controls / len(raw) > 0.2:
        return f"{capture.total} bytes from {port} look like line noise: the baud rate is probably wrong"
    what = f"{protocol} frames" if kind == "scale" else "scanner reads"
    top = ", ".join(f"{m} (x{n})" for m, n in capture.faults.most_common(3))
    return (f"{capture.total} bytes from {port} but no valid {what}: {top or 'no complete frame'}; "
            f"first bytes {raw[:40]!r}")


def _emit(out: TextIO, as_json: bool, record: dict[str, Any], text: str) -> None:
    print(json.dumps(record, ensure_ascii=False) if as_json else text, file=out, flush=True)


def _scale_record(item: Decoded, t0: float) -> tuple[dict[str, Any], str, bool]:
    at = round(item.received_at - t0, 3)
    if isinstance(item, ScaleSample):
        if item.fault is not None:
            return ({"kind": "fault", "at_s": at, "fault": item.fault, "raw": item.raw.hex()},
                    f"{at:8.3f}  FAULT     {item.fault}", False)
        record = {"kind": "weight", "at_s": at, "stable": item.stable, "value": item.value, "unit": item.unit,
                  "grams": item.grams, "net": item.net, "raw": item.raw.hex()}
        text = (f"{at:8.3f}  {'STABLE ' if item.stable else 'MOTION '}  {item.value} {item.unit} = "
                f"{item.grams:.3f} g{' net' if item.net else ''}")
        return record, text, True
    if isinstance(item, ScaleNotice):
        return ({"kind": "notice", "at_s": at, "notice": item.kind, "fault": item.fault, "raw": item.raw.hex()},
                f"{at:8.3f}  NOTICE    {item.kind}{': ' + item.fault if item.fault else ''}", False)
    return ({"kind": "error", "at_s": at, "error": item.message, "raw": item.raw.hex()},
            f"{at:8.3f}  NOT {item.__class__.__name__}: {item.message} {item.raw[:32]!r}", False)


def _scanner_record(
    item: ScanRead | NoRead | FramingError, t0: float, rma_pattern: str
) -> tuple[dict[str, Any], str, bool]:
    at = round(item.received_at - t0, 3)
    if isinstance(item, ScanRead):
        from edge.identity import parse_identity

        identity = parse_identity(item.text, item.symbology, rma_pattern)
        ident = {k: v for k, v in (("gtin", identity.gtin), ("serial", identity.serial), ("imei", identity.imei),
                                   ("rma", identity.rma), ("lot", identity.lot), ("expiry", identity.expiry)) if v}
        record = {"kind": "read", "at_s": at, "aim": item.aim, "symbology": item.symbology, "text": item.text,
                  "identity": ident, "problems": list(identity.problems), "raw": item.raw.hex()}
        shown = item.text.replace("\x1d", "<GS>").replace("\x1e", "<RS>").replace("\x04", "<EOT>")
        text = f"{at:8.3f}  READ      {item.aim or '(no AIM)'} {item.symbology}: {shown}"
        if ident:
            text += "  -> " + " ".join(f"{k}={v}" for k, v in ident.items())
        if identity.problems:
            text += "  [" + "; ".join(identity.problems) + "]"
        return record, text, True
    if isinstance(item, NoRead):
        return {"kind": "no_read", "at_s": at, "raw": item.raw.hex()}, f"{at:8.3f}  NO READ   {item.raw!r}", True
    return ({"kind": "error", "at_s": at, "error": item.message, "raw": item.raw.hex()},
            f"{at:8.3f}  ERROR     {item.message} {item.raw[:32]!r}", False)


async def run_probe(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    kind: str = args.device
    protocol: str | None = getattr(args, "protocol", None)
    settings = SerialSettings(args.port, args.baudrate, args.bytesize, args.parity, args.stopbits)
    try:
        # A direct open first, so a wrong path or a busy port is reported with the OS's own words.
        serial.Serial(args.port, args.baudrate, args.bytesize, args.parity, args.stopbits).close()
    except (serial.SerialException, OSError, ValueError) as exc:
        _emit(out, args.json, {"kind": "open_failed", "port": args.port, "error": str(exc)},
              f"cannot open {args.port}: {exc}")
        return 2
    chunks: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
    link = SerialLink(settings, name=f"probe-{kind}", on_data=lambda c, t: chunks.put_nowait((c, t)))
    capture = Capture()
    if kind == "scanner":
        framer = ScannerFramer(suffix=args.suffix, no_read_messages=args.no_read or ("NR", "NOREAD", "NO READ"),
                               intercharacter_timeout_s=args.intercharacter_timeout)
    elif protocol == "toledo":
        decoder = ToledoDecoder(checksum=args.checksum)
    else:
        decoder = DECODERS[protocol or "sics"]()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    end = t0 + args.timeout
    next_poll = t0
    seen = 0

    def handle(items: list[Any]) -> None:
        nonlocal seen
        for item in items:
            if kind == "scanner":
                record, text, good = _scanner_record(item, t0, args.rma_pattern)
            else:
                record, text, good = _scale_record(item, t0)
            if good:
                capture.valid += 1
            elif record["kind"] in ("error", "fault"):
                capture.faults[record.get("error") or record["fault"]] += 1
            seen += 1 if good else 0
            _emit(out, args.json, record, text)

    async with link:
        with contextlib.suppress(TimeoutError):
            await link.wait_for_state("online", min(2.0, args.timeout))
        while seen < args.count:
            now = loop.time()
            if now >= end:
                break
            poll = _POLLS.get(protocol or "") if kind == "scale" else None
            if kind == "scale" and protocol == "ad" and getattr(args, "poll", False):
                poll = AD_POLL_COMMAND
            if poll and now >= next_poll and link.state == "online":
                with contextlib.suppress(PortUnavailable):
                    link.write(poll)
                next_poll = now + _POLL_INTERVAL_S
            try:
                async with asyncio.timeout(min(end - now, _POLL_INTERVAL_S)):
                    chunk, at = await chunks.get()
            except TimeoutError:
                if kind == "scanner":
                    handle(framer.flush(loop.time()))
                continue
            capture.add(chunk)
            handle(framer.feed(chunk, at) if kind == "scanner" else decoder.feed(chunk, at))
        if kind == "scanner" and seen < args.count:
            handle(framer.flush(loop.time() + 10.0))
    waited = loop.time() - t0
    if capture.valid:
        _emit(out, args.json, {"kind": "summary", "valid": capture.valid, "bytes": capture.total, "ok": True},
              f"ok: {capture.valid} valid value(s) in {capture.total} bytes")
        return 0
    why = diagnose(kind, protocol, capture, settings, waited)
    _emit(out, args.json, {"kind": "summary", "valid": 0, "bytes": capture.total, "ok": False, "diagnosis": why},
          f"PROBLEM: {why}")
    return 1


def _serial_options(parser: argparse.ArgumentParser, bytesize: int = 8, parity: str = "N") -> None:
    parser.add_argument("--port", required=True, help="serial device, e.g. /dev/serial/by-id/usb-...")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--bytesize", type=int, choices=(7, 8), default=bytesize)
    parser.add_argument("--parity", choices=("N", "E", "O"), default=parity)
    parser.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    parser.add_argument("--count", type=int, default=10, help="stop after this many valid values")
    parser.add_argument("--timeout", type=float, default=10.0, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def cmd_probe(args: argparse.Namespace) -> int:
    return asyncio.run(run_probe(args))


def _probe_kinds(sub: Any) -> Any:
    """The subparsers under `edge probe`, creating `probe` unless another module already did."""
    probe = sub.choices.get("probe")
    if probe is None:
        probe = sub.add_parser("probe", help="commissioning: open a device and print what it sends, parsed")
        return probe.add_subparsers(dest="probe_command", required=True)
    for action in probe._actions:  # argparse keeps no public handle on a parser's subparsers
        if isinstance(action, argparse._SubParsersAction):
            return action
    return probe.add_subparsers(dest="probe_command", required=True)


def add_device_probes(sub: Any) -> None:
    """Register `edge probe scanner` and `edge probe scale` on the CLI's subparsers."""
    kinds = _probe_kinds(sub)
    scanner = kinds.add_parser("scanner", help="print barcode reads with symbology and parsed identity")
    _serial_options(scanner)
    scanner.add_argument("--suffix", choices=("crlf", "cr", "lf", "none"), default="crlf")
    scanner.add_argument("--intercharacter-timeout", type=float, default=0.05,
                         help="with --suffix none: the pause that ends a read")
    scanner.add_argument("--no-read", action="append", help="no-read text (repeatable; default NR, NOREAD)")
    scanner.add_argument("--rma-pattern", default=r"^RMA-?\d{6,10}$")
    scanner.set_defaults(func=cmd_probe, device="scanner")
    scale = kinds.add_parser("scale", help="print weights as the scale reports them, in grams")
    _serial_options(scale)
    scale.add_argument("--protocol", choices=SCALE_PROTOCOLS, required=True)
    scale.add_argument("--checksum", action="store_true", help="toledo: frames end with a checksum byte")
    scale.add_argument("--poll", action="store_true",
                       help="ad: the balance is in command mode; ask for each weight with Q")
    scale.set_defaults(func=cmd_probe, device="scale")
