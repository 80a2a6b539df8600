"""The controller daemon: wires devices, pipeline, journal and MQTT together and runs them.

Start-up order matters: the Numba kernels are warmed first (READY means the first unit is graded
at full speed), then the journal opens, then devices and the broker connection come up. A stop
request ends induction, lets the units in flight finish (or fall to the reject lane), flushes the
outbox, publishes OFFLINE and closes the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from edge import __version__
from edge.alarms import Alarms
from edge.catalog import Catalog
from edge.config import StationConfig
from edge.contract import Envelope, Topics, utc_timestamp
from edge.departures import departures_loop
from edge.inbound import CellInbound
from edge.journal import Journal, read_meta, write_meta
from edge.lanes import LaneGuard, LaneRouter, load_capacity, save_capacity
from edge.metrics import Metrics, MetricsError, error_counters
from edge.mqtt import MqttLink
from edge.pipeline import Arrival, Pipeline
from edge.policy import GradingPolicy
from edge.reads import ReadMatcher
from edge.recovery import (
    MISSED_REASON,
    MissedArrivals,
    announce_unseen_units,
    decide_passed_units,
    recover_undiverted,
    report_unaccounted,
)
from edge.retention import JournalConversion, retention_loop
from edge.secrets import mqtt_tls_factory
from edge.sequence import SeqReservation
from edge.watchdog import sampler, watchdog_interval_s, watchdog_loop

log = logging.getLogger("edge.daemon")


def sd_notify(message: str) -> None:
    """Tell systemd about our state (Type=notify); a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Controller:
    def __init__(self, config: StationConfig, policy: GradingPolicy, catalog: Catalog) -> None:
        self.config = config
        self.policy = policy
        self.catalog = catalog
        self.topics = Topics(config.mqtt.topic_prefix, config.site, config.line)
        self.started_at = time.monotonic()
        self.stop_requested = asyncio.Event()
        self.inducting = True
        self._unit_tasks: set[asyncio.Task[None]] = set()
        self.loop_failures: Counter[str] = Counter()
        # PLC item ids that passed the scan point unreported (link down): decided by _decide_missed.
        self.missed = MissedArrivals()
        self._missed_ids: list[int] = []

    def request_stop(self) -> None:
        if not self.stop_requested.is_set():
            log.info("stop requested: no new units will be inducted")
            self.stop_requested.set()

    async def run(self) -> None:
        if self.config.vision.cache_dir is not None:
            os.environ.setdefault("NUMBA_CACHE_DIR", str(self.config.vision.cache_dir))
        # Imported here so NUMBA_CACHE_DIR is set before Numba reads it.
        from drivers.camera import HttpTriggerCamera
        from drivers.scales import open_scale
        from drivers.scanner import SerialScanner
        from plc.factory import build_links as build_plc_links
        from vision.compiler_pages import release_compiler_pages
        from vision.damage import DamageChecker, warm_up

        began = time.monotonic()
        log.info("warming up the vision kernels")
        await asyncio.to_thread(warm_up)
        log.info("vision kernels ready in %.2f s", time.monotonic() - began)
        released_kb = release_compiler_pages()  # LLVM's code is not run again once the kernels are loaded
        if released_kb is not None:
            log.info("unmapped %.0f MB of LLVM code pages (they stay in the page cache)", released_kb / 1024)

        cfg = self.config
        vision_executor = ThreadPoolExecutor(max_workers=cfg.vision.workers, thread_name_prefix="vision")
        async with contextlib.AsyncExitStack() as stack:
            journal = await stack.enter_async_context(Journal(cfg.journal.path))
            stack.callback(log.info, "journal closed: %s", cfg.journal.path)
            self._seq = await SeqReservation.start(journal, cfg.controller_id)
            envelope = self._seq.envelope
            alarms = Alarms(journal, envelope, self.topics)
            # Alarms a restart cannot see again (order_unanswered) carry on where the last run left them.
            await alarms.restore()
            await self._clear_alarms_of_removed_cells(alarms)
            # Before any new unit: decisions the last run left without a divert ack (see edge/recovery.py).
            recovered = await recover_undiverted(journal, envelope, self.topics, alarms, cfg.reject_lane)
            if recovered:
                log.warning("recovered %d unit(s) decided before a crash: lane unknown, alarm raised", recovered)
            scanner = await stack.enter_async_context(
                SerialScanner(
                    cfg.scanner.port, baudrate=cfg.scanner.baudrate, bytesize=cfg.scanner.bytesize,
                    parity=cfg.scanner.parity, stopbits=cfg.scanner.stopbits, suffix=cfg.scanner.suffix,
                    max_line=cfg.scanner.max_line, no_read_messages=cfg.scanner.no_read_messages,
                    intercharacter_timeout_s=cfg.scanner.intercharacter_timeout_s,
                    banner_patterns=cfg.scanner.banner_patterns,
                    aim_required=cfg.scanner.aim_required, min_length=cfg.scanner.min_length,
                    duplicate_window_s=cfg.scanner.duplicate_window_s, trigger_window_s=cfg.scanner.read_after_s,
                )
            )
            scale = await stack.enter_async_context(open_scale(cfg.scale))
            # One pool for all PLC devices, so the ones on one RS-485 port share its bus.
            plc_links = build_plc_links({"plc": cfg.plc, **cfg.plc_devices})
            plc = await stack.enter_async_context(plc_links.pop("plc"))
            plc_devices = {name: await stack.enter_async_context(link) for name, link in plc_links.items()}
            try:
                # Announcing ONLINE before diverts are armed would send the first units to reject.
                # A PLC that is not there yet must not keep the controller from starting, though.
                await plc.wait_armed(3.0)
            except TimeoutError:
                log.warning("PLC diverts not armed yet (%s); starting anyway", plc.safety_state)
            if plc.state == "online":
                # Units that slipped past while no controller ran rode to the reject lane: say so.
                # Only up to the first value seen: later ids are live arrivals, decided as usual.
                await self._announce_unseen(plc, journal, envelope, alarms)
            camera = HttpTriggerCamera(cfg.camera.url, timeout_s=cfg.camera.timeout_s)
            checker = DamageChecker(
                px_per_mm=cfg.vision.px_per_mm, camera_homography=cfg.vision.camera_homography,
                **cfg.vision.ridge_rules(),
            )
            reads: ReadMatcher[Any] = ReadMatcher(
                cfg.scanner.read_before_s, cfg.scanner.read_after_s,
                arrival_lag_s=cfg.plc.poll_period_s * 2 + 0.01,
            )
            pipeline = Pipeline(
                config=cfg, policy=self.policy, catalog=self.catalog, journal=journal, envelope=envelope,
                topics=self.topics, alarms=alarms, reads=reads, scale=scale, camera=camera, checker=checker,
                scanner=scanner,
                vision_executor=vision_executor, plc=plc,
            )
            guard = LaneGuard(cfg)
            restored = guard.restore(*await journal.transact(load_capacity))
            if restored:
                log.info("lane capacity carried over from the last run for lane(s) %s",
                         ", ".join(f"{lane} ({guard.free[lane]} free)" for lane in restored))
            self.lanes = LaneRouter(guard, alarms)
            pipeline.lane_router = self.lanes
            self._inbound = CellInbound(self.topics, journal, alarms, self.lanes)
            self.metrics = Metrics()
            pipeline.decision_listeners.append(self.metrics.observe_decision)
            if cfg.metrics.address is not None:
                try:
                    self.metrics.start(*cfg.metrics.address)
                    stack.callback(self.metrics.stop)
                except MetricsError as exc:
                    # Grading matters more than its dashboard: run on, say so loudly.
                    log.error("%s; running without a metrics endpoint", exc)
            mqtt = MqttLink(
                host=cfg.mqtt.host, port=cfg.mqtt.port, client_id=cfg.mqtt.client_id or cfg.controller_id,
                topics=self.topics, journal=journal, on_message=self._inbound,
                on_connect=self._on_connect(journal),
                subscriptions=[f"{self.topics.root}/cells/+/state", f"{self.topics.root}/cells/+/connection"],
                username=cfg.mqtt.username, password_file=cfg.mqtt.password_file,
                tls_factory=mqtt_tls_factory(cfg.mqtt),
                keepalive_s=cfg.mqtt.keepalive_s, reconnect_max_s=cfg.mqtt.reconnect_max_s,
                protocol=cfg.mqtt.protocol, session_expiry_s=cfg.mqtt.session_expiry_s,
            )
            await stack.enter_async_context(mqtt)
            self._mqtt_started_at = time.monotonic()
            stack.callback(vision_executor.shutdown, wait=True)
            if pipeline.evidence is not None:
                stack.callback(pipeline.evidence.close)  # queued evidence images are written before the journal closes
            self._parts = {
                "journal": journal, "alarms": alarms, "scanner": scanner, "scale": scale, "plc": plc,
                "plc_devices": plc_devices,
                "pipeline": pipeline, "mqtt": mqtt, "reads": reads, "envelope": envelope,
            }
            log.info("READY: controller %s on %s (version %s)", cfg.controller_id, self.topics.root, __version__)
            sd_notify("READY=1")
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._supervised("scanner-feed", lambda: self._feed_scanner(scanner, reads)),
                                      name="scanner-feed")
                    group.create_task(self._supervised("induction", lambda: self._induct(plc, pipeline)),
                                      name="induction")
                    group.create_task(self._supervised("status", self._status_loop), name="status")
                    group.create_task(self._supervised("order-resend", lambda: self._resend_orders(journal)),
                                      name="order-resend")
                    group.create_task(self._supervised("missed-units", lambda: self._decide_missed(plc)),
                                      name="missed-units")
                    # Converting an old journal file holds every decision: only while none is in flight.
                    conversion = JournalConversion(
                        busy=lambda: pipeline.in_flight > 0 or not plc.arrivals.empty(),
                        budget_s=cfg.journal.convert_budget_s,
                    )
                    group.create_task(
                        retention_loop(journal, retention_days=cfg.journal.retention_days,
                                       max_units=cfg.journal.max_units, interval_s=cfg.journal.prune_interval_s,
                                       evidence_dir=cfg.journal.evidence_dir, conversion=conversion),
                        name="journal-retention",
                    )
                    group.create_task(self._supervised("device-watch", lambda: self._watch_devices(alarms)),
                                      name="device-watch")
                    group.create_task(
                        self._supervised("departures", lambda: departures_loop(
                            plc, journal, alarms, lanes=cfg, orders=self.lanes.guard)),
                        name="departures",
                    )
                    watchdog_s = watchdog_interval_s()
                    if watchdog_s is not None:
                        group.create_task(
                            watchdog_loop(sampler(plc, pipeline), sd_notify, interval_s=watchdog_s), name="watchdog"
                        )
                    await self.stop_requested.wait()
                    raise _Stop
            except* _Stop:
                pass
            await self._shut_down(journal, mqtt)

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop; an unexpected error is logged, counted and alarmed, and the loop
        starts again, so one bad moment (a full disk, a bug) never takes the whole daemon down."""
        while True:
            try:
                await loop()
                return
            except Exception as exc:
                self.loop_failures[name] += 1
                log.exception("background loop %s failed; restarting it in 1 s", name)
                with contextlib.suppress(Exception):
                    await self._parts["alarms"].event(
                        "internal_error", f"{name} failed: {type(exc).__name__}: {exc}", severity="critical"
                    )
                await asyncio.sleep(1.0)

    async def _shut_down(self, journal: Journal, mqtt: MqttLink) -> None:
        sd_notify("STOPPING=1")
        if self._unit_tasks:
            log.info("waiting for %d unit(s) in flight", len(self._unit_tasks))
            await asyncio.wait(self._unit_tasks, timeout=5.0)
        if self._unit_tasks:
            # Still undecided after the grace period: with no accepted divert they ride to the
            # reject lane (the PLC's default); those already journalled are recovered at next start.
            log.warning("cancelling %d unit(s) still in flight", len(self._unit_tasks))
            for task in self._unit_tasks:
                task.cancel()
            await asyncio.gather(*self._unit_tasks, return_exceptions=True)
        await drain_before_stop(journal, mqtt, self.config.mqtt.stop_drain_s)
        await self._save_lane_capacity()
        await self._publish_status("stopping")
        await mqtt.stop("OFFLINE")

    async def _save_lane_capacity(self) -> None:
        guard = self.lanes.guard
        if guard.unsaved:
            guard.unsaved = False
            reports = guard.reports()
            await self._parts["journal"].transact(lambda db: save_capacity(db, reports))

    async def _clear_alarms_of_removed_cells(self, alarms: Alarms) -> None:
        """A restored order_unanswered of a cell no longer configured would never clear."""
        cells = {cell.id for cell in self.config.cells}
        for code, subject in list(alarms.active):
            if code == "order_unanswered" and subject not in cells:
                await alarms.clear(code, subject=subject, message=f"cell {subject} is no longer configured; the "
                                   "units of its expired orders are `expired` in the journal")

    async def _feed_scanner(self, scanner: Any, reads: ReadMatcher[Any]) -> None:
        mqtt: MqttLink = self._parts["mqtt"]
        envelope: Envelope = self._parts["envelope"]
        while True:
            event = await scanner.events.get()
            await reads.add(event)
            text = getattr(event, "text", None)
            await mqtt.publish_now(
                self.topics.telemetry("scanner"),
                partial(envelope.build, "telemetry", {
                    "device": "scanner", "kind": "read" if text is not None else "no_read",
                    "text": text, "aim": getattr(event, "aim", None),
                    "symbology": getattr(event, "symbology", None),
                }),
                qos=0, retain=True,
            )

    async def _induct(self, plc: Any, pipeline: Pipeline) -> None:
        while not self.stop_requested.is_set():
            arrival = await plc.arrivals.get()
            # Accounted before any await: _decide_missed relies on it once the queue is empty.
            missed = self.missed.on_arrival(arrival.item_id, plc.tracker.resyncs)
            if missed:
                # Units passed unseen just before this one: reads from before its edge may be theirs.
                self._missed_ids += missed
                # This unit's own read may come up to one poll lag before its edge was noticed.
                self._drop_missed_reads(pipeline.reads, arrival.seen_at - pipeline.reads.arrival_lag_s, missed)
            if self.stop_requested.is_set():
                break
            await pipeline.reads.note_arrival(arrival.seen_at)
            task = asyncio.create_task(pipeline.handle(Arrival(arrival.item_id, arrival.seen_at)),
                                       name=f"unit-{arrival.item_id}")
            self._unit_tasks.add(task)
            task.add_done_callback(self._unit_tasks.discard)

    async def _announce_unseen(self, plc: Any, journal: Journal, envelope: Envelope, alarms: Alarms) -> None:
        """Decide the units that passed while no controller ran (up to the PLC's first scan id) and
        anchor the missed-units frontier there, so later ids count as live arrivals."""
        self.missed.frontier = plc.tracker.baseline
        await announce_unseen_units(journal, envelope, self.topics, alarms, self.config, plc.tracker.baseline,
                                    time.time())

    @staticmethod
    def _drop_missed_reads(reads: ReadMatcher[Any], before: float, missed: list[int]) -> None:
        """A missed unit's scanner read must not become the identity of the next unit reported."""
        dropped = reads.discard_before(before)
        if dropped:
            log.warning("dropped %d scanner read(s) of the %d unit(s) that passed unseen (PLC items %d..%d)",
                        dropped, len(missed), missed[0], missed[-1])

    async def _decide_missed(self, plc: Any) -> None:
        """Units the PLC link skipped (scanned while the link was down) rode to the reject lane with
        no divert: give each its reject-lane decision and order, as at start-up."""
        parts = self._parts
        # The link never reports a jump beyond this as arrivals (it resyncs): neither do we.
        self.missed.max_gap = getattr(plc.tracker, "max_jump", self.missed.max_gap)
        unbelievable = 0
        while True:
            await asyncio.sleep(0.1)
            if self.missed.frontier is None and plc.tracker.baseline is not None and not self._missed_ids:
                # The PLC was not reachable at start: units that passed while no controller ran are
                # announced once its counter is first seen (anchored first, so arrivals count on).
                await self._announce_unseen(plc, parts["journal"], parts["envelope"], parts["alarms"])
            if plc.arrivals.empty():
                missed = self.missed.on_sample(plc.tracker.last, plc.tracker.resyncs)
                if missed:
                    self._missed_ids += missed
                    # They passed before the latest poll; no unit reported after them has claimed yet.
                    self._drop_missed_reads(parts["reads"], getattr(plc, "last_poll_at", None) or time.monotonic(),
                                            missed)
            # Jumps too large to announce unit by unit: one critical alarm and journal record each,
            # taken off the tracker's queue only once reported (a loop restart loses none).
            jumps = plc.tracker.unreported_jumps
            while jumps:
                await report_unaccounted(parts["journal"], parts["alarms"], *jumps[0], limit=plc.tracker.max_jump)
                jumps.popleft()
            if self.missed.unbelievable != unbelievable and self.missed.last_unbelievable is not None:
                unbelievable = self.missed.unbelievable
                await report_unaccounted(parts["journal"], parts["alarms"], *self.missed.last_unbelievable,
                                         limit=self.missed.max_gap)
            if self._missed_ids:
                ids = list(self._missed_ids)
                # Dropped only once decided: after a failure the loop restarts and retries them (ids
                # decided before the failure are skipped as already known).
                await decide_passed_units(parts["journal"], parts["envelope"], self.topics, parts["alarms"],
                                          self.config, ids, MISSED_REASON)
                del self._missed_ids[:len(ids)]

    def _on_connect(self, journal: Journal):
        async def resend_after_reconnect() -> None:
            count = await journal.requeue_unanswered_orders({}, default_s=0.0)
            if count:
                log.info("re-sent %d unanswered order(s) or cancellation(s) after connecting", count)
        return resend_after_reconnect

    async def _resend_orders(self, journal: Journal) -> None:
        timeouts = {cell.id: cell.order_timeout_s for cell in self.config.cells}
        expiries = {cell.id: cell.order_expiry_s for cell in self.config.cells}
        mqtt: MqttLink = self._parts["mqtt"]
        alarms: Alarms = self._parts["alarms"]
        # After a (re)connect the cells' answers held back by the outage arrive first, and the
        # re-sends go out: no expiry until they have had three order timeouts.
        settle_s = 3 * max([*timeouts.values(), 5.0])
        connected_at: float | None = None
        while True:
            await asyncio.sleep(1.0)
            if not mqtt.connected.is_set():
                connected_at = None
                continue  # re-sends wait for the broker; every open order is re-sent on reconnect
            if connected_at is None:
                connected_at = time.monotonic()
            # Only while connected: a broker outage is its own alarm, and cells could not answer
            # meanwhile. An order never sent yet is not due (journal.orders_due_to_expire). Each
            # expiry is journalled with its cell's alarm, one per cell until that cell answers.
            if time.monotonic() - connected_at >= settle_s:
                await alarms.expire_unanswered(expiries, default_s=900.0)
            count = await journal.requeue_unanswered_orders(timeouts, default_s=5.0)
            if count:
                log.info("re-sent %d unanswered order(s) or cancellation(s)", count)

    async def _watch_devices(self, alarms: Alarms) -> None:
        last: dict[str, Any] = {}
        garbage = GarbageWatch()
        mqtt: MqttLink = self._parts["mqtt"]
        broker = BrokerWatch(self._parts["journal"], alarms, f"{self.config.mqtt.host}:{self.config.mqtt.port}",
                             started_at=self._mqtt_started_at)
        while True:
            for name, kind in (("scanner", "garbage"), ("scale", "parse")):
                counters = getattr(self._parts[name], "errors", None)
                if counters is not None:
                    await garbage.check(alarms, name, counters[kind], time.monotonic())
            await self._watch_plc_garbage(alarms, garbage)
            devices = {name: self._parts[name] for name in ("scanner", "scale", "plc")}
            for name, device in {**devices, **self._parts.get("plc_devices", {})}.items():
                state = getattr(device, "state", "unknown")
                if state == last.get(name):
                    continue
                last[name] = state
                if state == "online":
                    await alarms.clear("device_lost", subject=name, message=f"{name} is back")
                elif name in last and state != "connecting":
                    await alarms.raise_("device_lost", f"{name} is {state}", subject=name, severity="critical")
            await self._watch_plc_failsafe(alarms, last)
            await broker.check(mqtt.state, mqtt.last_error)
            await asyncio.sleep(0.2)

    async def _watch_plc_garbage(self, alarms: Alarms, garbage: GarbageWatch) -> None:
        """Replies that make no sense, per PLC device; noise on an RS-485 bus, per bus (its name)."""
        buses: dict[int, Any] = {}
        for name, link in {"plc": self._parts["plc"], **self._parts.get("plc_devices", {})}.items():
            counters = getattr(link, "counters", None) or {}
            await garbage.check(alarms, name, counters.get("malformed", 0), time.monotonic(),
                                what="reply(ies)", hint="check the register map and the PLC program (docs/plc.md)")
            bus = getattr(link, "bus", None)
            if bus is not None:
                buses[id(bus)] = bus
        for bus in buses.values():
            await garbage.check(
                alarms, bus.name, bus.noise, time.monotonic(), what="noise burst(s) or garbled reply(ies)",
                hint="check termination, biasing, shielding, a second master on the line and timeout_s",
            )

    async def _watch_plc_failsafe(self, alarms: Alarms, last: dict[str, Any]) -> None:
        # Not armed means every unit goes to the reject lane; a line that never armed after start
        # (PLC program not answering the heartbeat) is as loud as one that dropped out.
        safety = getattr(self._parts["plc"], "safety_state", "armed")
        if safety == last.get("plc_safety"):
            return
        never_armed = "plc_safety_armed_once" not in last
        if safety != "armed" and never_armed and time.monotonic() - self.started_at < 5.0:
            return
        last["plc_safety"] = safety
        if safety == "armed":
            last["plc_safety_armed_once"] = "yes"
            await alarms.clear("plc_failsafe", subject="plc", message="diverts armed again")
        else:
            await alarms.raise_(
                "plc_failsafe", f"diverts disarmed ({safety}): units go to the reject lane",
                subject="plc", severity="critical",
            )

    def status(self, lifecycle: str = "running") -> dict[str, Any]:
        pipeline: Pipeline = self._parts["pipeline"]
        plc = self._parts["plc"]
        latencies = pipeline.latencies_ms[-2000:]
        p50 = _percentile(latencies, 0.5)
        p99 = _percentile(latencies, 0.99)
        return {
            "lifecycle": lifecycle,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "devices": {
                "scanner": self._parts["scanner"].state,
                "scale": self._parts["scale"].state,
                "plc": plc.state,
                "plc_heartbeat_ok": getattr(plc, "plc_heartbeat_ok", None),
                "mqtt": self._parts["mqtt"].state,
            },
            "units": {
                "in_flight": pipeline.in_flight,
                "graded": sum(pipeline.by_grade.values()),
                "by_grade": dict(pipeline.by_grade),
                "by_disposition": dict(pipeline.by_disposition),
                "by_lane": {str(k): v for k, v in pipeline.by_lane.items()},
            },
            "latency_ms": {"p50": round(p50, 2) if p50 else None, "p99": round(p99, 2) if p99 else None},
            "errors": {**dict(pipeline.errors), **error_counters(self._parts, self._inbound.counters),
                       **{f"loop:{k}": v for k, v in self.loop_failures.items()},
                       **(pipeline.evidence.error_counters() if pipeline.evidence is not None else {})},
            "reads": dict(self._parts["reads"].counters),
            "inbound": dict(self._inbound.counters),
            "alarms_active": len(self._parts["alarms"].active),
            "as_of": utc_timestamp(),
        }

    async def _publish_status(self, lifecycle: str = "running") -> None:
        journal: Journal = self._parts["journal"]
        status = self.status(lifecycle)
        status["queues"] = {**await journal.depths(), "evidence": self._evidence_backlog()}
        envelope: Envelope = self._parts["envelope"]
        await self._parts["mqtt"].publish_now(
            self.topics.status, partial(envelope.build, "status", status), qos=1, retain=True
        )

    def _evidence_backlog(self) -> int:
        """Evidence images queued and not yet written (bounded; past the bound they are dropped and counted)."""
        evidence = self._parts["pipeline"].evidence
        return evidence.pending if evidence is not None else 0

    async def _update_metrics(self) -> None:
        status = self.status()
        depths = await self._parts["journal"].depths()
        status["queues"] = {
            "outbox": depths["outbox"], "open_orders": depths["open_orders"],
            "open_cancellations": depths["open_cancellations"], "in_flight": status["units"]["in_flight"],
            "plc_arrivals": self._parts["plc"].arrivals.qsize(),
            "scanner_events": self._parts["scanner"].events.qsize(), "evidence": self._evidence_backlog(),
        }
        status["controller"] = self.config.controller_id
        self.metrics.update(status)

    async def _status_loop(self) -> None:
        plc = self._parts["plc"]
        envelope: Envelope = self._parts["envelope"]
        mqtt: MqttLink = self._parts["mqtt"]
        next_status = 0.0
        while True:
            now = time.monotonic()
            if now >= next_status:
                await self._publish_status()
                next_status = now + self.config.mqtt.status_interval_s
            await self._seq.top_up()
            await self._save_lane_capacity()
            signals = dict(getattr(plc, "signals", {}) or {})
            await mqtt.publish_now(
                self.topics.telemetry("plc"),
                partial(envelope.build, "telemetry", {"device": "plc", "state": plc.state, "signals": signals}),
                qos=0, retain=True,
            )
            await self._publish_device_telemetry(envelope, mqtt)
            await self._update_metrics()
            await asyncio.sleep(1.0)

    async def _publish_device_telemetry(self, envelope: Envelope, mqtt: MqttLink) -> None:
        """Scale and camera figures for technicians (the scanner publishes on every read)."""
        scale = self._parts["scale"]
        reading = getattr(scale, "last_reading", None)
        await mqtt.publish_now(
            self.topics.telemetry("scale"),
            partial(envelope.build, "telemetry", {
                "device": "scale", "protocol": self.config.scale.protocol, "state": scale.state,
                "weight_g": round(reading.grams, 1) if reading is not None else None,
                "stable": reading.stable if reading is not None else None,
                "errors": dict(getattr(scale, "errors", {})),
            }),
            qos=0, retain=True,
        )
        pipeline: Pipeline = self._parts["pipeline"]
        await mqtt.publish_now(
            self.topics.telemetry("camera"),
            partial(envelope.build, "telemetry", {
                "device": "camera", "url": self.config.camera.url,
                "frames_graded": sum(pipeline.by_grade.values()),
                "errors": {k: v for k, v in pipeline.errors.items() if k.startswith(("camera:", "vision:"))},
            }),
            qos=0, retain=True,
        )


class _Stop(Exception):
    """Ends the daemon's task group when a stop was requested."""


async def drain_before_stop(journal: Journal, mqtt: MqttLink, bound_s: float) -> int:
    """Give the outbox up to `bound_s` to send what is queued before the connection closes, waiting
    for a connection still coming up (a stop just after READY, an alarm raised at start-up); returns
    how many messages are left, which are sent after the next start.

    Inbound messages are handled meanwhile (a cell's answer still counts) until the outbox is empty
    once; then inbound handling is closed and what its last handlers queued is sent too."""
    deadline = time.monotonic() + bound_s
    inbound_closed = False
    while True:
        left = (await journal.depths())["outbox"]
        if left == 0 and not inbound_closed:
            inbound_closed = True
            # Bounded too: a handler stuck on something is left behind like any message at a disconnect.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(mqtt.close_inbound(), timeout=max(0.0, deadline - time.monotonic()))
            continue
        if left == 0:
            return 0
        if time.monotonic() >= deadline:
            log.warning("stopping with %d message(s) still in the outbox (broker %s): they are sent after the next "
                        "start", left, mqtt.state)
            return left
        await asyncio.sleep(0.02)


class BrokerWatch:
    """Turns the MQTT link's state into one critical `device_lost` alarm (subject `mqtt`) per outage.

    It cannot reach anyone while the broker is away: it waits in the outbox with the decisions, so
    a technician sees it raised, then the backlog, then its clearing, in order. An outage still on
    when the controller stopped is kept in the journal (`meta`), so the run after it publishes the
    clearing the last one owed. After a start the link has `start_grace_s` to connect."""

    META_KEY = "broker_lost_since"

    def __init__(self, journal: Journal, alarms: Alarms, where: str, *, started_at: float,
                 start_grace_s: float = 10.0) -> None:
        self.journal = journal
        self.alarms = alarms
        self.where = where
        self.started_at = started_at
        self.start_grace_s = start_grace_s
        self.state: str | None = None
        self.lost_at: float | None = None  # time.monotonic() when the outage began
        self._journal_read = False

    async def check(self, state: str, last_error: str | None) -> None:
        if not self._journal_read:
            self._journal_read = True
            since = await self.journal.transact(lambda db: read_meta(db, self.META_KEY))
            if since is not None:
                with contextlib.suppress(ValueError):
                    self.lost_at = time.monotonic() - max(0.0, time.time() - float(since))
                    self.alarms.adopt("device_lost", "MQTT broker unreachable", subject="mqtt", severity="critical")
        if state == self.state:
            return
        if state != "online" and self.state is None and time.monotonic() - self.started_at < self.start_grace_s:
            return  # still connecting after start
        previous, self.state = self.state, state
        if state == "online":
            if self.lost_at is not None:
                lasted_s = time.monotonic() - self.lost_at
                self.lost_at = None
                await self.journal.transact(lambda db: write_meta(db, self.META_KEY, None))
                await self.alarms.clear(
                    "device_lost", subject="mqtt",
                    message=f"MQTT broker {self.where} reachable again after {lasted_s:.0f} s; what was decided "
                    "meanwhile is being sent now",
                )
            return
        if self.lost_at is not None:
            return  # the outage the last run saw is still on: its alarm stands
        self.lost_at = time.monotonic()
        lost_wall = repr(time.time())
        await self.journal.transact(lambda db: write_meta(db, self.META_KEY, lost_wall))
        since = "since start" if previous is None else f"since {utc_timestamp()}"
        await self.alarms.raise_(
            "device_lost",
            f"MQTT broker {self.where} unreachable {since} ({last_error or 'no connection'}): units are still "
            "graded and sorted; decisions, orders and alarms wait in the journal until it is back",
            subject="mqtt", severity="critical",
        )


class GarbageWatch:
    """Turns a device's garbage counter into one alarm: raised while bytes that are no valid frame or
    read keep arriving (wrong baud rate, noise, a half-seated cable), cleared after a quiet spell."""

    def __init__(self, quiet_s: float = 5.0) -> None:
        self.quiet_s = quiet_s
        self._count: dict[str, int] = {}
        self._last_at: dict[str, float] = {}

    async def check(self, alarms: Alarms, device: str, count: int, now: float, what: str = "line(s)/frame(s)",
                    hint: str = "check baud rate, parity and cabling") -> None:
        previous = self._count.get(device, 0)
        self._count[device] = count
        if count > previous:
            first = device not in self._last_at
            self._last_at[device] = now
            await alarms.raise_(
                "device_garbage",
                f"{device} sent {count - previous} {what} that are not valid data "
                f"({count} so far): {hint}",
                subject=device,
            )
            if first:
                log.warning("%s: garbage on the line, see alarm device_garbage", device)
        elif device in self._last_at and now - self._last_at[device] >= self.quiet_s:
            del self._last_at[device]
            await alarms.clear("device_garbage", subject=device, message=f"{device} sends valid data again")
