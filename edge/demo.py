"""`edge demo`: a simulated line, a broker and the real daemon, grading units live.

The daemon runs as its own process (`edge run`), exactly as on a gateway. The demo watches the MQTT
topics the way a technician would, prints one line per decision, and ends with a summary that
compares every decision with the simulator's ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiomqtt

from edge.broker import EmbeddedBroker
from edge.contract import Topics
from edge.journal import OPEN_ORDER
from simulator.line import SimulatedLine
from simulator.scenario import load_scenario

T = TypeVar("T")

ORDERS_WAIT_S = 15.0  # how long the demo waits for the cells' last answers before it stops the controller


def say(text: str) -> None:
    print(text, flush=True)


class DecisionWatcher:
    """Subscribes like a technician's mosquitto_sub and keeps what the controller published."""

    def __init__(self, host: str, port: int, topics: Topics, line: SimulatedLine) -> None:
        self.host, self.port, self.topics, self.line = host, port, topics, line
        self.decisions: list[dict[str, Any]] = []
        self.cell_final: dict[str, str] = {}
        self.connection_states: list[str] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=f"demo-watch-{os.getpid()}") as client:
                    await client.subscribe(self.topics.decisions, qos=1)
                    await client.subscribe(f"{self.topics.root}/cells/+/state", qos=1)
                    await client.subscribe(self.topics.connection, qos=1)
                    self.ready.set()
                    async for message in client.messages:
                        self._on_message(str(message.topic), message.payload)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)

    def _on_message(self, topic: str, payload: Any) -> None:
        data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
        if topic == self.topics.connection:
            self.connection_states.append(data.decode("utf-8", "replace"))
            return
        try:
            body = json.loads(data)
        except ValueError:
            return
        if topic == self.topics.decisions:
            if any(d["decision_id"] == body.get("decision_id") for d in self.decisions):
                return  # a QoS 1 re-delivery: the same decision again
            self.decisions.append(body)
            say(self._line(body))
        elif body.get("state") in ("FINISHED", "FAILED"):
            # Kept for any decision_id: an answer can overtake its decision. Only answers to this
            # run's decisions are counted (`run_answers`).
            self.cell_final[str(body.get("decision_id"))] = body["state"]

    def run_answers(self) -> dict[str, str]:
        """Final cell answers to decisions of this run. On a broker that keeps sessions, cells may
        still get (and answer) orders of an earlier run with the same controller id: not counted."""
        ours = {str(d.get("decision_id")) for d in self.decisions}
        return {k: v for k, v in self.cell_final.items() if k in ours}

    def _truth_for(self, decision: dict[str, Any]):
        return self.line.units_by_item.get(int(decision.get("item_id") or -1))

    def verdict(self, decision: dict[str, Any]) -> str:
        truth = self._truth_for(decision)
        if truth is None:
            return "?"
        if truth.ambiguous:
            return "~"  # on a grade threshold: either lane is defensible
        if decision["lane"] == truth.expected_lane:
            return "ok"
        # Graded right, but sent to the reject lane on purpose, as the decision says: its lane was full
        # or its cell offline (a broker outage can do that), or the PLC refused the divert.
        divert = decision.get("divert") or {}
        overflowed = re.match(r"lane (\d+) ", str(divert.get("overflow") or ""))
        if overflowed and int(overflowed[1]) == truth.expected_lane:
            return f"REROUTED (lane {truth.expected_lane} out of service)"
        if divert.get("status") not in (None, "accepted") and divert.get("intended_lane") == truth.expected_lane:
            return f"REROUTED (divert to lane {truth.expected_lane} {divert.get('status')})"
        return f"MISMATCH (expected lane {truth.expected_lane})"

    def _line(self, d: dict[str, Any]) -> str:
        identity = d.get("identity") or {}
        barcode = (identity.get("barcode") or "NO READ").replace("\x1d", "<GS>")
        weight = f"{d['weight_g']:7.1f} g" if d.get("weight_g") is not None else "      - g"
        return (
            f"unit {len(self.decisions):3d}  item {d.get('item_id'):5}  {barcode[:34]:34s} {weight}  "
            f"grade {d.get('grade') or '-'}  {d['disposition']:10s} lane {d['lane']} -> {d.get('cell') or '-':7s} "
            f"{d.get('latency_ms', 0):6.1f} ms  {self.verdict(d)}"
        )


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def run_demo(
    *,
    units: int,
    broker: str | None,
    summary_json: Path | None,
    scenario_path: Path,
    run_dir: Path | None,
    rate: float | None = None,
) -> int:
    scenario, station, policy, catalog = load_scenario(scenario_path)
    if rate:
        scenario = scenario.model_copy(update={"rate_per_s": rate})
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="edge-demo-"))
    topics = Topics(station.mqtt.topic_prefix, station.site, station.line)
    began = time.monotonic()
    started_at = time.time()  # orders queued from now on are this run's (the journal may be reused)
    async with contextlib.AsyncExitStack() as stack:
        if broker:
            parts = urlsplit(broker)
            if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
                say(f"BROKER must look like mqtt://host:port, not {broker!r}")
                return 2
            host, port = parts.hostname, parts.port or 1883
            say(f"demo: using the broker at mqtt://{host}:{port}")
        else:
            embedded = await stack.enter_async_context(EmbeddedBroker())
            host, port = embedded.host, embedded.port
            say(f"demo: embedded MQTT broker listening on {embedded.url}")
        say(f"demo: watch every topic with:  mosquitto_sub -h {host} -p {port} -t '{topics.prefix}/#' -v")
        line = await stack.enter_async_context(
            SimulatedLine(scenario, station, policy, catalog, broker_host=host, broker_port=port, run_dir=run_dir)
        )
        say("demo: simulated devices:\n" + line.describe())
        watcher = DecisionWatcher(host, port, topics, line)
        watch_task = asyncio.create_task(watcher.run(), name="demo-watch")
        stack.push_async_callback(_cancel, watch_task)

        log_path = run_dir / "daemon.log"
        log_file = stack.enter_context(log_path.open("wb"))
        say(f"demo: starting the controller: edge run --config {run_dir / 'station.yaml'}  (log: {log_path})")
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge", "run", "--config", str(run_dir / "station.yaml"),
            stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )
        stack.push_async_callback(_terminate, daemon)
        say("demo: waiting for the controller to warm up and come ONLINE ...")
        if not await line.wait_for_controller(timeout_s=180):
            say(f"demo: the controller did not come online; see {log_path}")
            return 1
        await watcher.ready.wait()
        say(f"demo: controller ONLINE; inducting {units} unit(s) at {scenario.rate_per_s:g}/s")
        say("unit       item  barcode                             weight     grade  disposition lane -> cell"
            "      latency  truth")
        await line.run_units(units, progress=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(watcher.decisions) < units:
            await asyncio.sleep(0.1)
        journal_path = run_dir / "journal.db"  # where SimulatedLine's station.yaml puts the journal
        still_open = await wait_for_open_orders(journal_path, ORDERS_WAIT_S)
        if still_open:
            say(f"demo: {still_open} robot cell order(s) still open after {ORDERS_WAIT_S:g} s; stopping anyway")
        say("demo: all units off the belt; stopping the controller (SIGTERM)")
        daemon.send_signal(signal.SIGTERM)
        try:
            exit_code = await asyncio.wait_for(daemon.wait(), timeout=20)
        except TimeoutError:
            daemon.kill()
            exit_code = await daemon.wait()
        await asyncio.sleep(0.3)
        summary = _summary(watcher, line, units, exit_code, time.monotonic() - began,
                           journal_orders=order_counts(journal_path, since=started_at))
    _print_summary(summary)
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n")
        say(f"demo: summary written to {summary_json}")
    ok = summary["decisions"] == units and summary["mismatches"] == 0 and exit_code == 0
    return 0 if ok else 1


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()


def _read_journal(journal_path: Path, query: Callable[[sqlite3.Connection], T]) -> T | None:
    """`query` on the controller's journal, opened read-only (the controller may be running);
    None when it cannot be read."""
    try:
        db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return None
    try:
        return query(db)
    except sqlite3.Error:
        return None
    finally:
        db.close()


def open_orders(journal_path: Path) -> int | None:
    """Orders and cancellations the cells have not answered yet, read from the controller's journal
    (read-only, while the controller runs); None when it cannot be read."""
    return _read_journal(journal_path, lambda db: sum(
        db.execute(f"SELECT count(*) FROM {table} WHERE {OPEN_ORDER}").fetchone()[0]
        for table in ("orders", "cancellations")
    ))


async def wait_for_open_orders(journal_path: Path, timeout_s: float) -> int | None:
    """Wait (at most `timeout_s`) until the journal has no open order, so the controller is not
    stopped before the cells' last answers arrive; returns how many are still open (None: unknown)."""
    deadline = time.monotonic() + timeout_s
    count = open_orders(journal_path)
    if count:
        say(f"demo: waiting up to {timeout_s:g} s for the robot cells to answer {count} open order(s)")
    while count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        count = open_orders(journal_path)
    return count


def order_counts(journal_path: Path, since: float) -> dict[str, int] | None:
    """This run's robot cell orders by outcome, from the journal after the controller stopped:
    finished, failed, and not finished (no final answer: queued, accepted, running or expired).
    A cancelled order is not counted: the unit's newer decision has its own order."""
    rows = _read_journal(journal_path, lambda db: db.execute(
        "SELECT state, count(*) FROM orders WHERE queued_at >= ? GROUP BY state", (since,)
    ).fetchall())
    if rows is None:
        return None
    states = dict(rows)
    return {
        "finished": states.pop("FINISHED", 0),
        "failed": states.pop("FAILED", 0),
        "not_finished": sum(n for state, n in states.items() if state != "CANCELLED"),
    }


def _summary(
    watcher: DecisionWatcher, line: SimulatedLine, units: int, exit_code: int, elapsed: float,
    journal_orders: dict[str, int] | None = None,
) -> dict:
    decisions = watcher.decisions
    answers = watcher.run_answers()
    if journal_orders is None:
        # No journal to read: what this run saw on MQTT, decisions sent to a cell without an answer.
        with_cell = sum(1 for d in decisions if d.get("cell"))
        finished = sum(1 for s in answers.values() if s == "FINISHED")
        failed = sum(1 for s in answers.values() if s == "FAILED")
        journal_orders = {"finished": finished, "failed": failed,
                          "not_finished": max(0, with_cell - finished - failed)}
    verdicts = [watcher.verdict(d) for d in decisions]
    latencies = [float(d.get("latency_ms", 0.0)) for d in decisions]
    return {
        "units_inducted": line.inducted,
        "decisions": len(decisions),
        "by_grade": dict(Counter(str(d.get("grade")) for d in decisions)),
        "by_disposition": dict(Counter(d["disposition"] for d in decisions)),
        "by_lane": {str(k): v for k, v in sorted(Counter(d["lane"] for d in decisions).items())},
        "matches": verdicts.count("ok"),
        "ambiguous": verdicts.count("~"),
        "mismatches": sum(1 for v in verdicts if v.startswith("MISMATCH")),
        "rerouted": sum(1 for v in verdicts if v.startswith("REROUTED")),
        "orders_finished": journal_orders["finished"],
        "orders_failed": journal_orders["failed"],
        "orders_not_finished": journal_orders["not_finished"],
        "latency_ms": {"p50": round(_percentile(latencies, 0.5), 2), "p99": round(_percentile(latencies, 0.99), 2),
                       "max": round(max(latencies, default=0.0), 2)},
        "wrong_physical_lane": sum(
            1 for d in decisions if line.final_lane.get(int(d.get("item_id") or -1), d["lane"]) != d["lane"]
        ),
        "controller_exit_code": exit_code,
        "controller_connection_states": watcher.connection_states,
        "elapsed_s": round(elapsed, 1),
    }


def _print_summary(s: dict) -> None:
    say("")
    say("demo summary")
    say(f"  units inducted       {s['units_inducted']}")
    say(f"  decisions            {s['decisions']}")
    say(f"  grades               {s['by_grade']}")
    say(f"  dispositions         {s['by_disposition']}")
    say(f"  lanes                {s['by_lane']}")
    say(f"  vs ground truth      {s['matches']} right lane, {s['mismatches']} wrong, "
        f"{s['ambiguous']} on a grade threshold"
        + (f", {s['rerouted']} to the reject lane on purpose (lane out of service or divert refused)"
           if s.get("rerouted") else ""))
    say(f"  units in a lane other than decided: {s['wrong_physical_lane']}")
    say(f"  robot cell orders    {s['orders_finished']} finished, {s['orders_failed']} failed, "
        f"{s['orders_not_finished']} not finished")
    lat = s["latency_ms"]
    say(f"  decision latency     p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms "
        "(scan photo-eye -> divert acknowledged)")
    say(f"  controller           exit code {s['controller_exit_code']}, "
        f"last connection state {(s['controller_connection_states'] or ['?'])[-1]}")
    say(f"  elapsed              {s['elapsed_s']} s")
