"""The per-unit pipeline: from the scan photo-eye to a durable, diverted, published decision.

For each unit the PLC reports at the scan point, in one task:

1. identify (scanner read matched to the unit), weigh (scale) and run the damage check on the
   triggered camera frame, all at once;
2. grade with the policy (pure);
3. commit the decision to the journal: on disk before anything moves;
4. command the diverter and read back the PLC's acknowledgement;
5. commit the outcome with the decision message and the cell order in the outbox; if the PLC did
   not accept the divert, the unit rides to the reject lane and the decision says so, so no robot
   is ever told to look for a unit in the wrong lane.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.alarms import Alarms
from edge.catalog import Catalog, CatalogItem
from edge.config import StationConfig
from edge.contract import Envelope, Topics, encode, pick_order, utc_timestamp
from edge.grading import DamageSummary, Observation, Verdict, grade_unit
from edge.identity import Identity, parse_identity
from edge.journal import Journal, OrderToSend, Publication
from edge.lanes import LaneRouter
from edge.policy import GradingPolicy
from edge.reads import ReadMatcher
from vision.evidence import EvidenceWriter

log = logging.getLogger("edge.pipeline")


class ScaleLike(Protocol):
    async def read_weight(self, stable_only: bool = True, deadline_s: float = 0.25) -> Any: ...


class CameraLike(Protocol):
    async def fetch(self, trigger_id: int) -> np.ndarray: ...


class DamageCheckerLike(Protocol):
    def check(self, frame_bgr: np.ndarray) -> Any: ...


class DivertLike(Protocol):
    async def divert(self, item_id: int, lane: int, timeout_s: float = 0.2) -> Any: ...


@dataclass(frozen=True)
class Arrival:
    item_id: int
    seen_at: float


@dataclass
class UnitFacts:
    """What the station learned about a unit, kept for the decision payload and the audit trail."""

    read: Any = None
    identity: Identity | None = None
    item: CatalogItem | None = None
    weight_g: float | None = None
    weight_problem: str | None = None
    damage: Any = None
    vision_problem: str | None = None
    # The camera frame (kept for the evidence image and the barcode fallback) and a flag the
    # fallback waits on: set once the frame is inspected or known to be missing.
    frame: Any = None
    inspected: asyncio.Event = field(default_factory=asyncio.Event)
    read_source: str = "scanner"
    # Milliseconds from the scan photo-eye to the end of each stage, to see where latency goes.
    timings_ms: dict[str, float] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self,
        *,
        config: StationConfig,
        policy: GradingPolicy,
        catalog: Catalog,
        journal: Journal,
        envelope: Envelope,
        topics: Topics,
        alarms: Alarms,
        reads: ReadMatcher,
        scale: ScaleLike,
        camera: CameraLike,
        checker: DamageCheckerLike,
        vision_executor: Executor,
        plc: DivertLike,
        scanner: Any = None,
    ) -> None:
        self.config = config
        # Only used to trigger reads when scanner.host_trigger is set.
        self.scanner = scanner
        self._trigger_lock = asyncio.Lock()
        self.policy = policy
        self.catalog = catalog
        self.journal = journal
        self.envelope = envelope
        self.topics = topics
        self.alarms = alarms
        self.reads = reads
        self.scale = scale
        self.camera = camera
        self.checker = checker
        self.vision_executor = vision_executor
        self.plc = plc
        self.lane_router: LaneRouter | None = None
        self.in_flight = 0
        self.latencies_ms: list[float] = []
        self.by_grade: Counter[str] = Counter()
        self.by_lane: Counter[int] = Counter()
        self.by_disposition: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        # Called with each finished decision body (metrics); must be quick and must not raise.
        self.decision_listeners: list[Callable[[dict[str, Any]], None]] = []
        # Barcode from the camera frame when the scanner has no read; evidence image per unit.
        self.frame_barcodes = _frame_barcode_reader(config)
        # Not SCHED_IDLE: the writer runs Python between its OpenCV calls, and a SCHED_IDLE thread
        # preempted while it holds the GIL on cores other processes keep busy left the event loop
        # waiting for it 1.4-1.8 s (heartbeats went stale, diverts were refused). At nice 10 that
        # wait stays under 0.2 s on saturated cores.
        self.evidence = (
            EvidenceWriter(config.journal.evidence_dir, idle_priority=False) if config.journal.evidence_dir else None
        )

    # -- observation -------------------------------------------------------------------------------

    async def _identify(self, arrival: Arrival, facts: UnitFacts) -> None:
        if self.config.scanner.host_trigger and self.scanner is not None:
            # One trigger at a time, in arrival order: the read that follows a trigger is that
            # unit's, whatever the photo-eye timing (see ReadMatcher.claim_triggered).
            async with self._trigger_lock:
                if self.reads.later_arrival_seen(arrival.seen_at):
                    # The next unit is already at the eye: a trigger now would read its label and
                    # give it to this one. A no-read (camera fallback, else quarantine) is safe.
                    self.errors["scanner_trigger:late"] += 1
                    read = None
                else:
                    triggered_at = time.monotonic()
                    try:
                        await self.scanner.trigger()
                    except Exception as exc:  # scanner gone: the claim below times out into a no-read
                        self.errors[f"scanner_trigger:{type(exc).__name__}"] += 1
                    read = await self.reads.claim_triggered(triggered_at)
        else:
            read = await self.reads.claim(arrival.seen_at)
        facts.read = read
        text = getattr(read, "text", None)
        symbology = getattr(read, "symbology", "")
        if text is None:
            code = await self._barcode_from_frame(facts)
            if code is None:
                return
            text, symbology, facts.read_source = code.text, code.symbology, "camera"
        identity = parse_identity(text, symbology, self.config.scanner.rma_pattern)
        facts.identity = identity
        facts.item = self.catalog.by_gtin(identity.gtin)

    async def _weigh(self, facts: UnitFacts) -> None:
        try:
            reading = await self.scale.read_weight(
                stable_only=True, deadline_s=self.config.scale.stable_deadline_s
            )
        except Exception as exc:  # every scale failure quarantines the unit, with the reason
            self.errors[f"scale:{type(exc).__name__}"] += 1
            facts.weight_problem = f"{type(exc).__name__}: {exc}"
            return
        facts.weight_g = float(reading.grams)

    async def _barcode_from_frame(self, facts: UnitFacts) -> Any:
        """The scanner had no read: decode the label in the camera frame (labels the damage check
        found first), off the event loop. None when there is no frame or nothing decodes."""
        if self.frame_barcodes is None:
            return None
        await facts.inspected.wait()
        if facts.frame is None:
            return None
        regions = getattr(facts.damage, "label_regions_px", ())
        loop = asyncio.get_running_loop()
        try:
            codes = await loop.run_in_executor(self.vision_executor, self.frame_barcodes.read, facts.frame, regions)
        except Exception as exc:  # a decoder failure is a no-read, never a crash
            self.errors[f"frame_barcode:{type(exc).__name__}"] += 1
            return None
        for key, count in getattr(self.frame_barcodes, "errors", {}).items():
            self.errors[f"frame_barcode:{key}"] = count  # a backend that lost what it decoded
        if not codes:
            self.errors["frame_barcode:none"] += 1
            return None
        self.errors["frame_barcode:read"] += 1
        return codes[0]

    async def _inspect(self, arrival: Arrival, facts: UnitFacts) -> None:
        try:
            await self._inspect_frame(arrival, facts)
        finally:
            facts.inspected.set()

    async def _inspect_frame(self, arrival: Arrival, facts: UnitFacts) -> None:
        try:
            frame = await self.camera.fetch(arrival.item_id)
        except Exception as exc:
            self.errors[f"camera:{type(exc).__name__}"] += 1
            facts.vision_problem = f"no frame: {type(exc).__name__}: {exc}"
            return
        facts.frame = frame
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(self.vision_executor, self.checker.check, frame)
        if report.error or not report.device_found:
            self.errors["vision:no_device" if not report.error else "vision:error"] += 1
            facts.vision_problem = report.error or "no device found in the frame"
            return
        facts.damage = report

    # -- decision ----------------------------------------------------------------------------------

    def _observation(self, facts: UnitFacts) -> Observation:
        damage = None
        if facts.damage is not None:
            damage = DamageSummary(
                scratch_lengths_mm=tuple(d.length_mm for d in facts.damage.defects if d.kind == "scratch"),
                crack_count=sum(1 for d in facts.damage.defects if d.kind == "crack"),
                damage_score=float(facts.damage.damage_score),
                dent_count=sum(1 for d in facts.damage.defects if d.kind in ("dent", "chip")),
                missing_part_count=len(facts.damage.missing_parts),
            )
        identity = facts.identity
        return Observation(
            barcode=identity.barcode if identity else None,
            gtin=identity.gtin if identity else None,
            identity_problems=identity.problems if identity else (),
            item=facts.item,
            weight_g=facts.weight_g,
            weight_problem=facts.weight_problem,
            damage=damage,
            vision_problem=facts.vision_problem,
        )

    def _decision_body(
        self, unit_id: str, decision_id: str, arrival: Arrival, facts: UnitFacts, verdict: Verdict, lane: int
    ) -> dict[str, Any]:
        lane_settings = self.config.lane(lane)
        identity = facts.identity
        item = facts.item
        damage = facts.damage
        return {
            "unit_id": unit_id,
            "decision_id": decision_id,
            "item_id": arrival.item_id,
            "identity": {
                "barcode": identity.barcode if identity else None,
                "symbology": identity.symbology if identity else None,
                "gtin": identity.gtin if identity else None,
                "serial": identity.serial if identity else None,
                "imei": identity.imei if identity else None,
                "rma": identity.rma if identity else None,
                "sku": item.sku if item else None,
                "model": item.model if item else None,
            },
            "weight_g": round(facts.weight_g, 1) if facts.weight_g is not None else None,
            "expected_weight_g": item.weight_g if item else None,
            "weight_tolerance_g": item.weight_tolerance_g if item else None,
            "vision": damage.to_dict() if damage is not None else {"error": facts.vision_problem},
            "grade": verdict.grade,
            "disposition": verdict.disposition,
            "r2_category": verdict.r2_category,
            "needs_sanitization": verdict.needs_sanitization,
            "lane": lane,
            "lane_name": lane_settings.name,
            "cell": lane_settings.cell,
            "reasons": list(verdict.reasons),
        }

    async def handle(self, arrival: Arrival) -> None:
        self.in_flight += 1
        limit = self.config.vision.max_units_in_flight
        # Each unit in flight holds its camera frame until it is graded: past the bound (vision
        # falling behind, a stalled journal) a unit is decided without one, so memory stays bounded.
        overload = f"overloaded: {self.in_flight - 1} units in flight" if self.in_flight > limit else None
        try:
            if overload is not None:
                self.errors["pipeline:overloaded"] += 1
            await self._handle(arrival, overload)
        except Exception:
            # The unit has no accepted divert, so the PLC sends it to the reject lane by itself.
            self.errors["pipeline:crash"] += 1
            log.exception("unit at PLC item %d failed; it rides to the reject lane", arrival.item_id)
            await self.alarms.event(
                "unit_failed", f"unit with PLC item id {arrival.item_id} could not be decided; reject lane"
            )
        finally:
            self.in_flight -= 1
        # After the decision (or its failure), so the alarm's journal write does not delay the unit's
        # read claim. Every unit that leaves checks the clearing, the overloaded one too: with a
        # stalled journal units finish first in first out, so the overloaded ones are often the last
        # and nobody after them would. Not on cancellation (stop): the alarm dies with the process.
        await self._update_overload_alarm(limit, overload)

    async def _update_overload_alarm(self, limit: int, overload: str | None) -> None:
        try:
            if overload is not None:
                await self.alarms.raise_(
                    "overloaded", f"more than {limit} units in flight ({overload}): further units go to the reject "
                    "lane without vision grading until the backlog is down", subject="pipeline", severity="critical",
                )
            alarm = self.alarms.active.get(("overloaded", "pipeline"))
            # Cleared with some margin below the bound, so a backlog hovering at it is one alarm.
            if alarm is None or self.in_flight > limit // 2:
                return
            await self.alarms.clear(
                "overloaded", subject="pipeline",
                message=f"backlog down to {self.in_flight} unit(s) in flight; {alarm.count} unit(s) went to "
                "the reject lane without vision grading meanwhile",
            )
        except Exception:
            # The unit itself is decided (or already failed); a journal failure here is the journal's
            # own alarm, not this unit's.
            self.errors["pipeline:alarm"] += 1
            log.exception("could not raise or clear the overloaded alarm")

    async def _handle(self, arrival: Arrival, overload: str | None = None) -> None:
        """Decide one unit; with `overload` (why) it gets no frame and goes to the reject lane."""
        unit_id = f"U{uuid.uuid4().hex[:16]}"
        decision_id = str(uuid.uuid4())
        facts = UnitFacts()
        stages = [
            _timed(self._identify(arrival, facts), "identify", arrival, facts),
            _timed(self._weigh(facts), "weigh", arrival, facts),
        ]
        if overload is None:
            stages.append(_timed(self._inspect(arrival, facts), "inspect", arrival, facts))
        else:
            # Identified and weighed all the same: its read must not become the next unit's.
            facts.vision_problem = overload
            facts.inspected.set()
        await asyncio.gather(*stages)
        if facts.damage is not None and facts.item is not None:
            # Imported here: vision.damage loads the Numba kernels, after the daemon set their cache.
            from vision.damage import compare_with_catalog

            # Only now is the unit's catalog outline known: a smaller one means a missing part.
            facts.damage = compare_with_catalog(facts.damage, (facts.item.length_mm, facts.item.width_mm))
        verdict = grade_unit(self._observation(facts), self.policy)
        intended_lane = self.config.lane_for(verdict.disposition).id
        if overload is not None:
            # Without a damage check the grade is unknown: reject/manual lane, whatever else was seen.
            verdict = dataclasses.replace(
                verdict, disposition="quarantine", grade=None,
                reasons=(f"{overload}: not graded by vision, reject lane", *verdict.reasons),
            )
            intended_lane = self.config.reject_lane
        overflow = None
        if self.lane_router is not None:
            # A lane whose cell is offline or full is never used: reject/manual lane instead, with an alarm.
            planned_lane = intended_lane
            verdict, intended_lane = await self.lane_router.route(verdict, intended_lane, decision_id)
            if intended_lane != planned_lane:
                overflow = verdict.reasons[-1]  # the router's reason: which lane, and why it was out of service
        facts.timings_ms["grade"] = _ms_since(arrival.seen_at)
        body = self._decision_body(unit_id, decision_id, arrival, facts, verdict, intended_lane)
        if self.evidence is not None and facts.frame is not None and facts.damage is not None:
            # Encoded and written on the evidence thread; the path goes into the journal now.
            evidence = self.evidence.submit(unit_id, facts.frame, facts.damage, verdict.grade,
                                            f"{unit_id} item {arrival.item_id} {verdict.disposition}")
            if evidence is not None:
                body["vision"]["evidence"] = str(evidence)
        audit = [
            ("arrived", {"item_id": arrival.item_id}),
            ("read", {"text": getattr(facts.read, "text", None), "aim": getattr(facts.read, "aim", None),
                      "source": facts.read_source, "barcode": facts.identity.barcode if facts.identity else None}),
            ("weighed", {"weight_g": facts.weight_g, "problem": facts.weight_problem}),
            ("inspected", body["vision"]),
            ("graded", {"grade": verdict.grade, "disposition": verdict.disposition, "reasons": body["reasons"]}),
        ]
        await self.journal.record_decision(unit_id, decision_id, arrival.item_id, body, audit)
        facts.timings_ms["journal"] = _ms_since(arrival.seen_at)

        divert = await self.plc.divert(arrival.item_id, intended_lane, timeout_s=self.config.plc.divert_timeout_s)
        status = getattr(divert, "status", "no_ack")
        latency_ms = (time.monotonic() - arrival.seen_at) * 1000.0
        state = "diverted"
        if status == "uncertain":
            # The divert request may have landed and its cancel was not confirmed: the unit is in
            # its lane or in the reject lane. No cell is told to pick it; a person must find it.
            state = "lane_unknown"
            candidates = sorted({intended_lane, self.config.reject_lane})
            body = {
                **body,
                "disposition": "quarantine",
                "lane": None,
                "lane_name": None,
                "cell": None,
                "reasons": [*body["reasons"], f"divert to lane {intended_lane} unconfirmed and not cancelled: "
                            f"unit is in one of lanes {candidates}; a person must find it"],
                "recovery": {"reason": "divert unconfirmed", "candidate_lanes": candidates,
                             "decided_at": utc_timestamp()},
            }
            await self.alarms.event(
                "lane_unknown", f"unit {unit_id} (PLC item {arrival.item_id}): divert to lane {intended_lane} "
                f"unconfirmed; find it in lane(s) {candidates}", subject=unit_id, severity="critical",
            )
        elif status != "accepted" and intended_lane != self.config.reject_lane:
            # The unit was not diverted, so it rides to the belt end: tell the truth about where it is.
            state = "divert_failed"
            reject = self.config.lane(self.config.reject_lane)
            if self.lane_router is not None:
                # Its place on the intended lane is free after all; the reject lane's cell gets the order.
                self.lane_router.guard.reroute(decision_id, reject.id)
            body = {
                **body,
                "disposition": "quarantine",
                "lane": reject.id,
                "lane_name": reject.name,
                "cell": reject.cell,
                "reasons": [*body["reasons"], f"divert to lane {intended_lane} not accepted ({status}): reject lane"],
            }
            await self.alarms.event(
                "divert_failed", f"unit {unit_id}: divert to lane {intended_lane} {status}; sent to reject lane",
                subject=f"lane-{intended_lane}",
            )
        elif status != "accepted":
            # Reject lane needs no divert: the belt end is the PLC's default.
            state = "diverted"
        body["divert"] = {"status": status, "intended_lane": intended_lane}
        if overflow is not None:
            body["divert"]["overflow"] = overflow
        body["latency_ms"] = round(latency_ms, 2)
        body["timings_ms"] = {**{k: round(v, 1) for k, v in facts.timings_ms.items()}, "divert": round(latency_ms, 1)}

        decision = self.envelope.build("decision", body)
        publications = [Publication(self.topics.decisions, encode(decision), qos=1)]
        order = None
        if body["cell"]:
            order_payload = self.envelope.build(
                "order",
                pick_order(
                    decision_id=decision_id,
                    unit_id=unit_id,
                    item_id=arrival.item_id,
                    lane=body["lane"],
                    disposition=body["disposition"],
                    grade=body["grade"],
                    sku=body["identity"]["sku"],
                    barcode=body["identity"]["barcode"],
                    needs_sanitization=body["needs_sanitization"],
                ),
            )
            order = OrderToSend(decision_id, unit_id, body["cell"], self.topics.cell_orders(body["cell"]),
                                encode(order_payload))
        await self.journal.record_outcome(
            unit_id, state, decision, publications, order,
            [("diverted", {"status": status, "lane": body["lane"], "latency_ms": body["latency_ms"]})],
        )
        self.latencies_ms.append(latency_ms)
        if len(self.latencies_ms) > 10_000:
            del self.latencies_ms[:5_000]
        self.by_grade[str(verdict.grade)] += 1
        self.by_lane[body["lane"]] += 1
        self.by_disposition[body["disposition"]] += 1
        for listener in self.decision_listeners:
            listener(body)
        log.info(
            "unit %s item=%d barcode=%s weight=%s grade=%s disposition=%s lane=%s latency=%.1fms",
            unit_id, arrival.item_id, body["identity"]["barcode"], body["weight_g"], verdict.grade,
            body["disposition"], body["lane"], latency_ms,
            extra={"unit_id": unit_id, "decision_id": decision_id, "item_id": arrival.item_id,
                   "grade": verdict.grade, "disposition": body["disposition"], "lane": body["lane"],
                   "latency_ms": round(latency_ms, 2)},
        )
        if verdict.disposition == "quarantine" and not facts.identity:
            await self.alarms.event("no_read", f"unit {unit_id} had no barcode read: quarantined")


def _frame_barcode_reader(config: StationConfig) -> Any:
    from vision.barcode import BarcodeBackendUnavailable, BarcodeReader

    backend = getattr(config.vision, "barcode_backend", "zxing")
    if backend == "off":
        return None
    try:
        return BarcodeReader(backend)
    except BarcodeBackendUnavailable as exc:
        log.warning("camera barcode fallback disabled: %s", exc)
        return None


def _ms_since(moment: float) -> float:
    return (time.monotonic() - moment) * 1000.0


async def _timed(stage: Any, name: str, arrival: Arrival, facts: UnitFacts) -> None:
    try:
        await stage
    finally:
        facts.timings_ms[name] = _ms_since(arrival.seen_at)
