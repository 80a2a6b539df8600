"""Prometheus metrics endpoint: the figures of controller/status, for scraping.

Per-unit figures (units graded by grade and lane, decision latency) are observed as each decision
is made. Everything else (queue depths, device states, errors by kind, uptime) is a snapshot the
daemon refreshes from its status loop; the HTTP thread only reads that snapshot, so a scrape never
touches state the event loop is changing.

The endpoint is off unless `metrics.listen` is set, and should stay on a local or management
address: it is unauthenticated, like every Prometheus exporter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("edge.metrics")

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
DEVICE_STATES = ("online", "connecting", "offline")


class MetricsError(Exception):
    """The metrics endpoint could not start."""


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self._snapshot: dict[str, Any] = {}
        self._lock = threading.Lock()

    def set(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        with self._lock:
            snap = self._snapshot
        if not snap:
            return
        info = InfoMetricFamily("edge_controller", "Controller identity and version.")
        info.add_metric([], {"controller": str(snap.get("controller", "")), "version": str(snap.get("version", ""))})
        yield info
        uptime = GaugeMetricFamily("edge_uptime_seconds", "Seconds since the daemon started.")
        uptime.add_metric([], float(snap.get("uptime_s", 0.0)))
        yield uptime
        in_flight = GaugeMetricFamily("edge_units_in_flight", "Units between the scan photo-eye and their decision.")
        in_flight.add_metric([], float(snap.get("in_flight", 0)))
        yield in_flight
        queues = GaugeMetricFamily("edge_queue_depth", "Depth of the daemon's queues.", labels=["queue"])
        for name, depth in sorted(snap.get("queues", {}).items()):
            queues.add_metric([str(name)], float(depth))
        yield queues
        up = GaugeMetricFamily("edge_device_up", "1 while the device link is online.", labels=["device"])
        state = GaugeMetricFamily("edge_device_state", "1 for the device's current link state.",
                                  labels=["device", "state"])
        for device, current in sorted(snap.get("devices", {}).items()):
            up.add_metric([device], 1.0 if current == "online" else 0.0)
            for candidate in (*DEVICE_STATES, *(() if current in DEVICE_STATES else (str(current),))):
                state.add_metric([device, candidate], 1.0 if candidate == current else 0.0)
        yield up
        yield state
        errors = CounterMetricFamily("edge_errors", "Errors by kind (device, vision, pipeline, broker, inbound).",
                                     labels=["kind"])
        for kind, count in sorted(snap.get("errors", {}).items()):
            errors.add_metric([kind], float(count))
        yield errors
        alarms = GaugeMetricFamily("edge_alarms_active", "Alarms raised and not yet cleared.")
        alarms.add_metric([], float(snap.get("alarms_active", 0)))
        yield alarms


class Metrics:
    """The daemon's metrics. `observe_decision` per unit, `update` from the status loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.units = Counter("edge_units_graded", "Units decided, by grade and lane.", ["grade", "lane"],
                             registry=self.registry)
        self.latency = Histogram("edge_decision_latency_seconds",
                                 "Scan photo-eye to diverter command and order queued.", buckets=LATENCY_BUCKETS_S,
                                 registry=self.registry)
        self._snapshot = _SnapshotCollector()
        self.registry.register(self._snapshot)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def observe_decision(self, body: Mapping[str, Any]) -> None:
        grade = body.get("grade")
        self.units.labels(grade="none" if grade is None else str(grade), lane=str(body.get("lane"))).inc()
        latency_ms = body.get("latency_ms")
        if isinstance(latency_ms, int | float):
            self.latency.observe(latency_ms / 1000.0)

    def update(self, status: Mapping[str, Any], extra_errors: Mapping[str, int] | None = None) -> None:
        """Take the figures of a controller/status body (plus device and broker error counters)."""
        devices = {k: v for k, v in status.get("devices", {}).items() if isinstance(v, str)}
        errors = {str(k): int(v) for k, v in status.get("errors", {}).items()}
        for kind, count in (extra_errors or {}).items():
            errors[kind] = errors.get(kind, 0) + int(count)
        units = status.get("units", {})
        self._snapshot.set({
            "controller": status.get("controller", ""), "version": status.get("version", ""),
            "uptime_s": status.get("uptime_s", 0.0), "in_flight": units.get("in_flight", 0),
            "queues": dict(status.get("queues", {})), "devices": devices, "errors": errors,
            "alarms_active": status.get("alarms_active", 0),
        })

    def start(self, host: str, port: int) -> tuple[str, int]:
        """Serve /metrics on host:port (port 0: any free port). Returns the bound address."""
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self.address = (host, int(self._server.server_address[1]))
        log.info("metrics on http://%s:%d/metrics", *self.address)
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def error_counters(parts: Mapping[str, Any], inbound: Mapping[str, int] | None = None) -> dict[str, int]:
    """Error counters kept outside the pipeline (devices, broker, inbound messages) as `source:kind`."""
    found: dict[str, int] = {}
    for device in ("scanner", "scale"):
        for kind, count in (getattr(parts.get(device), "errors", None) or {}).items():
            found[f"{device}:{kind}"] = int(count)
    plc_counters = getattr(parts.get("plc"), "counters", None) or {}
    for kind in ("read_errors", "exceptions", "timeouts", "malformed", "missed_arrivals", "write_errors",
                 "divert_no_ack"):
        if kind in plc_counters:
            found[f"plc:{kind}"] = int(plc_counters[kind])
    bus = getattr(parts.get("plc"), "bus", None)  # Modbus RTU: the serial bus the PLC is on
    if bus is not None:
        found["plc:line_noise"] = int(bus.noise)
    mqtt_counters = getattr(parts.get("mqtt"), "counters", None) or {}
    for kind in ("publish_errors", "secret_errors", "disconnects"):
        if kind in mqtt_counters:
            found[f"mqtt:{kind}"] = int(mqtt_counters[kind])
    for kind in ("bad_messages", "unknown"):
        if inbound and kind in inbound:
            found[f"inbound:{kind}"] = int(inbound[kind])
    read_counters = getattr(parts.get("reads"), "counters", None) or {}
    for kind in ("unmatched_events", "units_without_event"):
        if kind in read_counters:
            found[f"reads:{kind}"] = int(read_counters[kind])
    return found


__all__ = ["Metrics", "MetricsError", "error_counters"]
