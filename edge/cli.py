"""The `edge` command: run the daemon, the simulator, the demo, or check a configuration."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from edge import __version__
from edge.yamlconf import ConfigError

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    for noisy in ("pymodbus", "amqtt", "transitions", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    from edge.logformat import quiet_expected_backlog

    quiet_expected_backlog()  # the simulated cells' answers held back by a broker outage


def _install_stop_handlers(stop: callable) -> None:  # type: ignore[valid-type]
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)


def load_everything(config_path: Path):
    """Station, policy and catalog, all validated; raises ConfigError naming file, line and field."""
    from edge.catalog import Catalog
    from edge.config import load_station
    from edge.policy import load_policy

    station = load_station(config_path)
    policy = load_policy(station.grading_policy)
    catalog = Catalog.load(station.catalog)
    return station, policy, catalog


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        station, policy, catalog = load_everything(Path(args.file))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    print(
        f"{args.file}: valid: controller {station.controller_id}, {len(station.lanes)} lanes, "
        f"{len(station.cells)} cells, {len(policy.rules)} grading rules, {len(catalog)} catalog items"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge.logformat import setup_logging

    setup_logging(args.verbose, args.log_format)
    try:
        station, policy, catalog = load_everything(Path(args.config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    from edge.daemon import Controller

    async def main() -> None:
        controller = Controller(station, policy, catalog)
        _install_stop_handlers(controller.request_stop)
        await controller.run()

    asyncio.run(main())
    logging.getLogger("edge").info("stopped cleanly")
    return 0


def _broker_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise SystemExit(f"--broker must look like mqtt://host:port, not {url!r}")
    return parts.hostname, parts.port or 1883


def cmd_sim(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    from simulator.line import SimulatedLine
    from simulator.scenario import load_scenario

    try:
        scenario, station, policy, catalog = load_scenario(Path(args.scenario), args.external_cell)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    host, port = _broker_address(args.broker)
    units = scenario.units if args.units is None else args.units

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop_handlers(stop.set)
        async with SimulatedLine(scenario, station, policy, catalog, broker_host=host, broker_port=port,
                                 run_dir=Path(args.run_dir)) as line:
            print("simulated line up; devices:\n" + line.describe(), flush=True)
            print(f"run the controller against it:  edge run --config {line.endpoints['station']}", flush=True)
            if not args.no_wait:
                print("sim: waiting for the controller to come ONLINE before inducting units", flush=True)
                if not await line.wait_for_controller():
                    print("sim: no controller came online; inducting anyway", flush=True)
            work = asyncio.create_task(line.run_units(units))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                await work
                done = await line.wait_for_cells(line.exited, timeout_s=args.linger)
                print(f"sim: {line.inducted} units inducted, {line.exited} off the belt, "
                      f"{done} orders finished by the simulated cells", flush=True)
                if args.linger_forever:
                    await stop.wait()
            work.cancel()
            stopper.cancel()

    asyncio.run(main())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import run_demo
    from edge.logformat import setup_logging

    # The demo prints its own lines; what the simulated devices and the MQTT clients log comes
    # through our formatter (time, level, logger), warnings and up only.
    setup_logging(level=logging.WARNING)
    return asyncio.run(run_demo(
        units=args.units, broker=args.broker, summary_json=Path(args.summary_json) if args.summary_json else None,
        scenario_path=Path(args.scenario), run_dir=Path(args.run_dir) if args.run_dir else None,
        rate=args.rate,
    ))


def cmd_units_show(args: argparse.Namespace) -> int:
    from edge.config import load_station
    from edge.journal import read_unit_history

    journal = Path(args.journal) if args.journal else load_station(Path(args.config)).journal.path
    history = read_unit_history(journal, args.unit_id)
    if history is None:
        print(f"no unit {args.unit_id} in {journal}", file=sys.stderr)
        return 1
    print(json.dumps(history, indent=2))
    return 0


def cmd_units_export(args: argparse.Namespace) -> int:
    from edge.audit import AuditError, export_units_csv, parse_since
    from edge.config import load_station

    journal = Path(args.journal) if args.journal else load_station(Path(args.config)).journal.path
    try:
        since = parse_since(args.since)
        if args.out in (None, "-"):
            count = export_units_csv(journal, since, sys.stdout)
        else:
            with open(args.out, "w", encoding="utf-8", newline="") as out:
                count = export_units_csv(journal, since, out)
    except AuditError as exc:
        print(f"edge units export: {exc}", file=sys.stderr)
        return 2
    print(f"{count} unit(s) since {since.isoformat()} exported", file=sys.stderr)
    return 0


def _default_log_format() -> str:
    from edge.logformat import default_format

    return default_format()


def cmd_warm_up(args: argparse.Namespace) -> int:
    import os
    import time

    cache_dir = args.cache_dir
    if cache_dir is None and args.config:
        from edge.config import load_station

        try:
            configured = load_station(Path(args.config)).vision.cache_dir
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 2
        cache_dir = str(configured) if configured else None
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
    began = time.monotonic()
    # Imported only now: Numba reads NUMBA_CACHE_DIR when it is first imported.
    from vision.damage import warm_up

    warm_up()
    print(f"vision kernels warm in {time.monotonic() - began:.2f} s "
          f"(cache: {os.environ.get('NUMBA_CACHE_DIR', 'next to the sources')})")
    return 0


def cmd_broker_acl(args: argparse.Namespace) -> int:
    from edge.acl import mosquitto_acl
    from edge.config import load_station

    try:
        station = load_station(Path(args.config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    print(mosquitto_acl(station, args.username), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="Returns-grading edge controller")
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the controller daemon")
    run.add_argument("--config", required=True, help="station YAML file")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--log-format", choices=("text", "json"), default=_default_log_format(),
                     help="stdout log lines: text, or JSON with unit ids (default: $EDGE_LOG_FORMAT or text)")
    run.set_defaults(func=cmd_run)

    warm = sub.add_parser("warm-up", help="compile the vision kernels into the Numba cache, then exit")
    warm.add_argument("--cache-dir", default=None, help="Numba cache folder (default: $NUMBA_CACHE_DIR)")
    warm.add_argument("--config", default=None, help="take the cache folder from this station file")
    warm.set_defaults(func=cmd_warm_up)

    acl = sub.add_parser("broker-acl", help="print the mosquitto ACL for this station's controller and cells")
    acl.add_argument("--config", required=True, help="station YAML file")
    acl.add_argument("--username", default=None, help="the controller's broker user (default: mqtt.username)")
    acl.set_defaults(func=cmd_broker_acl)

    sim = sub.add_parser("sim", help="run only the simulated line (PLC, scanner, scale, camera, robot cells)")
    sim.add_argument("--scenario", default=str(REPO_CONFIG / "scenario.demo.yaml"))
    sim.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker the robot cells use")
    sim.add_argument("--run-dir", default="/tmp/edge-sim", help="where device links and files are written")
    sim.add_argument("--units", type=int, default=None, help="units to induct (0: until stopped)")
    sim.add_argument("--no-wait", action="store_true", help="do not wait for a controller to come ONLINE")
    sim.add_argument("--external-cell", action="append", default=[], metavar="CELL",
                     help="a station cell the simulator does not play, so your own robot cell answers its orders "
                     "(repeatable; adds to the scenario's external_cells)")
    sim.add_argument("--linger", type=float, default=15.0, help="seconds to wait for the cells at the end")
    sim.add_argument("--linger-forever", action="store_true", help="keep the devices up after the last unit")
    sim.add_argument("-v", "--verbose", action="store_true")
    sim.set_defaults(func=cmd_sim)

    demo = sub.add_parser("demo", help="simulated line + broker + daemon, grading units live")
    demo.add_argument("--units", type=int, default=40)
    demo.add_argument("--broker", default=None, help="mqtt://host:port; default: an embedded broker")
    demo.add_argument("--summary-json", default=None, help="write the end summary here as JSON")
    demo.add_argument("--scenario", default=str(REPO_CONFIG / "scenario.demo.yaml"))
    demo.add_argument("--run-dir", default=None, help="where the run's files go (default: a temp folder)")
    demo.add_argument("--rate", type=float, default=None, help="units per second (default: the scenario's)")
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check-config", help="validate a station file, its policy and its catalog")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    units = sub.add_parser("units", help="the audit trail of graded units")
    units_sub = units.add_subparsers(dest="units_command", required=True)
    show = units_sub.add_parser("show", help="one unit's whole history")
    show.add_argument("unit_id")
    show.add_argument("--config", default="/etc/edge/station.yaml")
    show.add_argument("--journal", default=None, help="journal file (instead of the one in --config)")
    show.set_defaults(func=cmd_units_show)
    export = units_sub.add_parser("export", help="CSV of every unit decided since TIME, for the WMS")
    export.add_argument("--since", required=True, help="ISO 8601 time (UTC if no offset), a date, or 30m/12h/7d")
    export.add_argument("--out", default=None, help="CSV file to write (default: standard output)")
    export.add_argument("--config", default="/etc/edge/station.yaml")
    export.add_argument("--journal", default=None, help="journal file (instead of the one in --config)")
    export.set_defaults(func=cmd_units_export)

    from plc.probe import add_probe_parser
    add_probe_parser(sub)
    from vision.inspect_cli import add_parser as add_inspect_parser

    add_inspect_parser(sub)
    from edge.probe import add_device_probes

    add_device_probes(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
