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
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from edge.broker import EmbeddedBroker
from edge.contract import Topics
from simulator.line import SimulatedLine
from simulator.scenario import load_scenario


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
            self.cell_final[str(body.get("decision_id"))] = body["state"]

    def _truth_for(self, decision: dict[str, Any]):
        return self.line.units_by_item.get(int(decision.get("item_id") or -1))

    def verdict(self, decision: dict[str, Any]) -> str:
        truth = self._truth_for(decision)
        if truth is None:
            return "?"
        if truth.ambiguous:
            return "~"  # on a grade threshold: either lane is defensible
        return "ok" if decision["lane"] == truth.expected_lane else f"MISMATCH (expected lane {truth.expected_lane})"

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
        while time.monotonic() < deadline and (
            len(watcher.decisions) < units or len(watcher.cell_final) < len(watcher.decisions)
        ):
            await asyncio.sleep(0.1)
        say("demo: all units off the belt; stopping the controller (SIGTERM)")
        daemon.send_signal(signal.SIGTERM)
        try:
            exit_code = await asyncio.wait_for(daemon.wait(), timeout=20)
        except TimeoutError:
            daemon.kill()
            exit_code = await daemon.wait()
        await asyncio.sleep(0.3)
        summary = _summary(watcher, line, units, exit_code, time.monotonic() - began)
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


def _summary(watcher: DecisionWatcher, line: SimulatedLine, units: int, exit_code: int, elapsed: float) -> dict:
    decisions = watcher.decisions
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
        "orders_finished": sum(1 for s in watcher.cell_final.values() if s == "FINISHED"),
        "orders_failed": sum(1 for s in watcher.cell_final.values() if s == "FAILED"),
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
        f"{s['ambiguous']} on a grade threshold")
    say(f"  units in a lane other than decided: {s['wrong_physical_lane']}")
    say(f"  robot cell orders    {s['orders_finished']} finished, {s['orders_failed']} failed")
    lat = s["latency_ms"]
    say(f"  decision latency     p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms "
        "(scan photo-eye -> divert acknowledged)")
    say(f"  controller           exit code {s['controller_exit_code']}, "
        f"last connection state {(s['controller_connection_states'] or ['?'])[-1]}")
    say(f"  elapsed              {s['elapsed_s']} s")
