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
import logging
import time
import uuid
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.alarms import Alarms
from edge.catalog import Catalog, CatalogItem
from edge.config import StationConfig
from edge.contract import Envelope, Topics, encode
from edge.grading import DamageSummary, Observation, Verdict, grade_unit
from edge.identity import Identity, parse_identity
from edge.journal import Journal, OrderToSend, Publication
from edge.policy import GradingPolicy
from edge.reads import ReadMatcher

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
    ) -> None:
        self.config = config
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
        self.in_flight = 0
        self.latencies_ms: list[float] = []
        self.by_grade: Counter[str] = Counter()
        self.by_lane: Counter[int] = Counter()
        self.by_disposition: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    # -- observation -------------------------------------------------------------------------------

    async def _identify(self, arrival: Arrival, facts: UnitFacts) -> None:
        read = await self.reads.claim(arrival.seen_at)
        facts.read = read
        text = getattr(read, "text", None)
        if text is None:
            return
        identity = parse_identity(text, getattr(read, "symbology", ""), self.config.scanner.rma_pattern)
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

    async def _inspect(self, arrival: Arrival, facts: UnitFacts) -> None:
        try:
            frame = await self.camera.fetch(arrival.item_id)
        except Exception as exc:
            self.errors[f"camera:{type(exc).__name__}"] += 1
            facts.vision_problem = f"no frame: {type(exc).__name__}: {exc}"
            return
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
        try:
            await self._handle(arrival)
        except Exception:
            # The unit has no accepted divert, so the PLC sends it to the reject lane by itself.
            self.errors["pipeline:crash"] += 1
            log.exception("unit at PLC item %d failed; it rides to the reject lane", arrival.item_id)
            await self.alarms.event(
                "unit_failed", f"unit with PLC item id {arrival.item_id} could not be decided; reject lane"
            )
        finally:
            self.in_flight -= 1

    async def _handle(self, arrival: Arrival) -> None:
        unit_id = f"U{uuid.uuid4().hex[:16]}"
        decision_id = str(uuid.uuid4())
        facts = UnitFacts()
        await asyncio.gather(self._identify(arrival, facts), self._weigh(facts), self._inspect(arrival, facts))
        verdict = grade_unit(self._observation(facts), self.policy)
        intended_lane = self.config.lane_for(verdict.disposition).id
        body = self._decision_body(unit_id, decision_id, arrival, facts, verdict, intended_lane)
        audit = [
            ("arrived", {"item_id": arrival.item_id}),
            ("read", {"text": getattr(facts.read, "text", None), "aim": getattr(facts.read, "aim", None)}),
            ("weighed", {"weight_g": facts.weight_g, "problem": facts.weight_problem}),
            ("inspected", body["vision"]),
            ("graded", {"grade": verdict.grade, "disposition": verdict.disposition, "reasons": body["reasons"]}),
        ]
        await self.journal.record_decision(unit_id, decision_id, arrival.item_id, body, audit)

        divert = await self.plc.divert(arrival.item_id, intended_lane, timeout_s=self.config.plc.divert_timeout_s)
        status = getattr(divert, "status", "no_ack")
        latency_ms = (time.monotonic() - arrival.seen_at) * 1000.0
        state = "diverted"
        if status != "accepted" and intended_lane != self.config.reject_lane:
            # The unit was not diverted, so it rides to the belt end: tell the truth about where it is.
            state = "divert_failed"
            reject = self.config.lane(self.config.reject_lane)
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
        body["latency_ms"] = round(latency_ms, 2)

        decision = self.envelope.build("decision", body)
        publications = [Publication(self.topics.decisions, encode(decision), qos=1)]
        order = None
        if body["cell"]:
            order_payload = self.envelope.build(
                "order",
                {
                    "decision_id": decision_id,
                    "unit_id": unit_id,
                    "item_id": arrival.item_id,
                    "lane": body["lane"],
                    "disposition": body["disposition"],
                    "grade": body["grade"],
                    "sku": body["identity"]["sku"],
                    "barcode": body["identity"]["barcode"],
                    "needs_sanitization": body["needs_sanitization"],
                },
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
        log.info(
            "unit %s item=%d barcode=%s weight=%s grade=%s disposition=%s lane=%d latency=%.1fms",
            unit_id, arrival.item_id, body["identity"]["barcode"], body["weight_g"], verdict.grade,
            body["disposition"], body["lane"], latency_ms,
        )
        if verdict.disposition == "quarantine" and not facts.identity:
            await self.alarms.event("no_read", f"unit {unit_id} had no barcode read: quarantined")
