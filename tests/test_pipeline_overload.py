"""More units in flight than vision.max_units_in_flight: the next one is decided without its frame.

Real journal, alarms, grading, damage check and vision thread. Vision falling behind is made
deterministic by keeping the one vision thread busy with a job that waits for the test (instead of
relying on the damage check being slow); the devices around are the stand-ins of
test_vision_pipeline (a camera handing over a rendered frame, a fixed scale, a PLC accepting every
divert, a scanner that read the label).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge.alarms import Alarms
from edge.catalog import Catalog
from edge.config import StationConfig, load_station
from edge.contract import Envelope, Topics
from edge.journal import Journal
from edge.pipeline import Arrival, Pipeline
from edge.policy import load_policy
from vision.damage import DamageChecker, warm_up

from .asyncapi_contract import problems_with
from .conftest import until
from .test_vision_pipeline import GTIN, ROOT, _Camera, _frame, _OneRead, _Plc, _Scale

LIMIT = 2


def _config(tmp_path: Path) -> StationConfig:
    config = load_station(ROOT / "config" / "station.sim.yaml")
    return config.model_copy(update={
        "journal": config.journal.model_copy(update={"path": tmp_path / "j.db"}),
        "vision": config.vision.model_copy(update={"max_units_in_flight": LIMIT}),
    })


def _pipeline(config: StationConfig, journal: Journal, pool: ThreadPoolExecutor, scale: object) -> Pipeline:
    topics = Topics(config.mqtt.topic_prefix, config.site, config.line)
    envelope = Envelope(config.controller_id)
    return Pipeline(
        config=config, policy=load_policy(config.grading_policy), catalog=Catalog.load(config.catalog),
        journal=journal, envelope=envelope, topics=topics, alarms=Alarms(journal, envelope, topics),
        reads=_OneRead(f"(01){GTIN}(21)PIPE0001"), scale=scale, camera=_Camera(_frame()),
        checker=DamageChecker(px_per_mm=3.0), vision_executor=pool, plc=_Plc(),
    )


def test_a_unit_beyond_the_bound_goes_to_the_reject_lane_with_reason_alarm_and_counter(tmp_path: Path) -> None:
    config = _config(tmp_path)
    topics = Topics(config.mqtt.topic_prefix, config.site, config.line)
    warm_up()
    vision_busy = threading.Event()

    async def run() -> tuple[dict[str, int], int]:
        with ThreadPoolExecutor(1, thread_name_prefix="vision") as pool:
            pool.submit(vision_busy.wait, 60)  # the vision thread is behind: frames queue up
            async with Journal(config.journal.path) as journal:
                pipeline = _pipeline(config, journal, pool, _Scale())
                now = asyncio.get_running_loop().time()
                waiting = [asyncio.create_task(pipeline.handle(Arrival(n, now))) for n in (1, 2)]
                await until(lambda: pipeline.in_flight == LIMIT, what="two units waiting for vision")
                # Decided while vision is still held up: it does not wait for a frame to be graded.
                await pipeline.handle(Arrival(3, now))
                assert not any(task.done() for task in waiting)
                vision_busy.set()
                await asyncio.gather(*waiting)
                in_flight_after = pipeline.in_flight
                return dict(pipeline.errors), in_flight_after

    errors, in_flight_after = asyncio.run(run())
    assert errors.get("pipeline:overloaded") == 1 and errors.get("pipeline:crash", 0) == 0
    assert in_flight_after == 0
    db = sqlite3.connect(config.journal.path)
    decisions = {item: json.loads(body) for item, body in db.execute("SELECT item_id, decision FROM units")}
    outbox = db.execute("SELECT topic, payload FROM outbox ORDER BY seq").fetchall()
    db.close()
    assert set(decisions) == {1, 2, 3}  # none lost
    overloaded = decisions[3]
    assert overloaded["lane"] == config.reject_lane and overloaded["disposition"] == "quarantine"
    assert overloaded["reasons"][0] == "overloaded: 2 units in flight: not graded by vision, reject lane"
    assert overloaded["grade"] is None and overloaded["identity"]["gtin"] == GTIN  # identified all the same
    for item in (1, 2):  # the units before it were graded as usual
        assert decisions[item]["grade"] == "B" and decisions[item]["lane"] != config.reject_lane
        assert not any("overloaded" in reason for reason in decisions[item]["reasons"])
    alarms = [json.loads(payload) for topic, payload in outbox if topic == topics.alarms]
    for topic, payload in outbox:
        assert problems_with(topic, payload) == []
    assert [(a["state"], a["code"]) for a in alarms] == [("raised", "overloaded"), ("cleared", "overloaded")]
    assert alarms[0]["severity"] == "critical"
    assert "1 unit(s) went to the reject lane" in alarms[1]["message"]


class _ScaleHeldForThirdUnit(_Scale):
    """The third unit's weighing waits for the test: it is still in flight after the two before it."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def read_weight(self, stable_only: bool = True, deadline_s: float = 0.25) -> object:
        self.calls += 1
        if self.calls == 3:
            await self.release.wait()
        return await super().read_weight(stable_only, deadline_s)


def test_the_overloaded_alarm_clears_when_the_overloaded_unit_is_the_last_to_finish(tmp_path: Path) -> None:
    """A stalled line drains first in first out, so the unit that raised the alarm leaves last:
    nobody after it would clear the alarm, so it checks the backlog itself."""
    config = _config(tmp_path)
    topics = Topics(config.mqtt.topic_prefix, config.site, config.line)
    warm_up()
    vision_busy = threading.Event()

    async def run() -> tuple[int, set[tuple[str, str]], dict[str, int]]:
        with ThreadPoolExecutor(1, thread_name_prefix="vision") as pool:
            pool.submit(vision_busy.wait, 60)
            async with Journal(config.journal.path) as journal:
                scale = _ScaleHeldForThirdUnit()
                pipeline = _pipeline(config, journal, pool, scale)
                now = asyncio.get_running_loop().time()
                waiting = [asyncio.create_task(pipeline.handle(Arrival(n, now))) for n in (1, 2)]
                await until(lambda: pipeline.in_flight == LIMIT, what="two units waiting for vision")
                overloaded = asyncio.create_task(pipeline.handle(Arrival(3, now)))
                await until(lambda: scale.calls == 3, what="the third unit weighing")
                vision_busy.set()
                await asyncio.gather(*waiting)
                assert not overloaded.done()
                scale.release.set()
                await overloaded
                return pipeline.in_flight, set(pipeline.alarms.active), dict(pipeline.errors)

    in_flight, active, errors = asyncio.run(run())
    assert errors.get("pipeline:overloaded") == 1 and errors.get("pipeline:crash", 0) == 0
    assert in_flight == 0 and active == set()
    db = sqlite3.connect(config.journal.path)
    outbox = db.execute("SELECT topic, payload FROM outbox ORDER BY seq").fetchall()
    db.close()
    alarms = [json.loads(payload) for topic, payload in outbox if topic == topics.alarms]
    assert [(a["state"], a["code"]) for a in alarms] == [("raised", "overloaded"), ("cleared", "overloaded")]
    assert "backlog down to 0 unit(s) in flight" in alarms[1]["message"]


def test_a_journal_refusing_the_overloaded_alarm_does_not_fail_the_decided_unit(tmp_path: Path) -> None:
    """The overloaded unit is decided before its alarm is written: the alarm's failure is counted as
    pipeline:alarm, like a failure to clear it, not as a unit that could not be decided."""
    config = _config(tmp_path)
    topics = Topics(config.mqtt.topic_prefix, config.site, config.line)
    warm_up()
    vision_busy = threading.Event()

    async def run() -> dict[str, int]:
        with ThreadPoolExecutor(1, thread_name_prefix="vision") as pool:
            pool.submit(vision_busy.wait, 60)
            async with Journal(config.journal.path) as journal:
                # Only on this connection: every alarm message is refused, nothing else.
                await journal.transact(lambda db: db.execute(
                    f"CREATE TEMP TRIGGER no_alarms BEFORE INSERT ON outbox WHEN NEW.topic = '{topics.alarms}' "
                    "BEGIN SELECT RAISE(ABORT, 'alarm refused'); END"
                ))
                pipeline = _pipeline(config, journal, pool, _Scale())
                now = asyncio.get_running_loop().time()
                waiting = [asyncio.create_task(pipeline.handle(Arrival(n, now))) for n in (1, 2)]
                await until(lambda: pipeline.in_flight == LIMIT, what="two units waiting for vision")
                await pipeline.handle(Arrival(3, now))
                vision_busy.set()
                await asyncio.gather(*waiting)
                return dict(pipeline.errors)

    errors = asyncio.run(run())
    assert errors.get("pipeline:overloaded") == 1 and errors.get("pipeline:crash", 0) == 0
    assert errors.get("pipeline:alarm", 0) >= 1
    db = sqlite3.connect(config.journal.path)
    decided = {item for (item,) in db.execute("SELECT item_id FROM units")}
    db.close()
    assert decided == {1, 2, 3}
