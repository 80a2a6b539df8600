"""A simulated pick-and-pack robot cell, written from the MQTT contract alone.

It announces itself on cells/{cell}/connection (retained, with a Will), takes orders from
cells/{cell}/orders and answers on cells/{cell}/state: ACCEPTED, then FINISHED once the unit is in
its lane, or FAILED with a reason. An order whose decision_id it has already handled is not done
again; the cell repeats its last answer so a controller that missed it can complete the decision.
An order cancellation (`action` `cancel`, same decision_id) stops an order the cell has not
finished (or marks one it never had, so that a late copy is not worked on) and is answered FAILED
with reason "cancelled"; for an order already finished or failed the cell repeats that answer.
Every copy of a cancellation gets its answer: the controller re-sends it until one arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from edge.contract import ContractError, Topics, encode, parse_order, utc_timestamp

log = logging.getLogger("simulator.cell")

LaneOf = Callable[[int], int | None]


# The FAILED reason a cell answers a cancellation with when it had not finished the order.
CANCELLED_REASON = "cancelled"


@dataclass
class HandledOrder:
    decision_id: str
    unit_id: str
    item_id: int | None
    lane: int
    state: str = "ACCEPTED"
    reason: str | None = None
    received: int = 1


@dataclass
class CellRecord:
    handled: dict[str, HandledOrder] = field(default_factory=dict)
    bad_orders: int = 0
    # Cancellations that stopped an order (or came before it), ones that came for an order already
    # finished, and further copies of a cancellation already carried out (each answered again).
    cancelled: list[str] = field(default_factory=list)
    cancels_ignored: int = 0
    cancels_repeated: int = 0

    @property
    def duplicates(self) -> int:
        return sum(order.received - 1 for order in self.handled.values())


class SimulatedRobotCell:
    def __init__(
        self,
        cell_id: str,
        lanes: set[int],
        topics: Topics,
        host: str,
        port: int,
        lane_of_item: LaneOf,
        accept_after_s: float = 0.05,
        finish_after_s: float = 0.4,
        lane_capacity: int = 40,
        unit_wait_s: float = 5.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        answer_twice: bool = False,
        offline_after_orders: int | None = None,
        offline_for_s: float = 0.0,
        clean_session: bool = False,
    ) -> None:
        # clean_session: the broker keeps nothing for this cell while it is away (QoS 1 orders
        # published meanwhile are lost to it); only the controller's re-sends reach it afterwards.
        self.clean_session = clean_session
        self.answer_twice = answer_twice
        self.offline_after_orders = offline_after_orders
        self.offline_for_s = offline_for_s
        self.went_offline = False
        self.cell_id = cell_id
        self.lanes = lanes
        self.topics = topics
        self.host = host
        self.port = port
        self.lane_of_item = lane_of_item
        self.accept_after_s = accept_after_s
        self.finish_after_s = finish_after_s
        self.lane_capacity = lane_capacity
        self.unit_wait_s = unit_wait_s
        self.on_event = on_event
        self.record = CellRecord()
        self.online = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[None]] = set()
        self._jobs: dict[str, asyncio.Task[None]] = {}

    async def __aenter__(self) -> SimulatedRobotCell:
        self._task = asyncio.create_task(self._run(), name=f"cell-{self.cell_id}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.topics.cell_connection(self.cell_id), "OFFLINE", qos=1, retain=True)
        for task in [*self._work, *([self._task] if self._task else [])]:
            task.cancel()
        for task in [*self._work, *([self._task] if self._task else [])]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            will = aiomqtt.Will(self.topics.cell_connection(self.cell_id), "CONNECTIONBROKEN", qos=1, retain=True)
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=f"sim-{self.cell_id}",
                    will=will,
                    clean_session=self.clean_session,
                    keepalive=10,
                ) as client:
                    self._client = client
                    await client.subscribe(self.topics.cell_orders(self.cell_id), qos=1)
                    await client.publish(self.topics.cell_connection(self.cell_id), "ONLINE", qos=1, retain=True)
                    self.online.set()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
                        self._on_order(bytes(payload))
                        if self._time_to_go_offline():
                            break
                    if self.went_offline:
                        # Maintenance: say so (retained), leave; the broker queues orders meanwhile.
                        await client.publish(self.topics.cell_connection(self.cell_id), "OFFLINE", qos=1, retain=True)
                        self._emit_note("OFFLINE")
            except aiomqtt.MqttError as exc:
                log.info("cell %s lost the broker (%s); reconnecting", self.cell_id, exc)
            finally:
                self._client = None
                self.online.clear()
            if self.went_offline and self.offline_for_s:
                await asyncio.sleep(self.offline_for_s)
                self.offline_for_s = 0.0
                self._emit_note("ONLINE")
                continue
            await asyncio.sleep(0.5)

    def _time_to_go_offline(self) -> bool:
        if self.went_offline or self.offline_after_orders is None:
            return False
        if len(self.record.handled) >= self.offline_after_orders:
            self.went_offline = True
        return self.went_offline

    def _emit_note(self, connection: str) -> None:
        if self.on_event is not None:
            self.on_event({"cell": self.cell_id, "connection": connection})

    def _on_order(self, payload: bytes) -> None:
        try:
            order = parse_order(payload)
        except ContractError:
            self.record.bad_orders += 1
            return
        decision_id = order.decision_id
        known = self.record.handled.get(decision_id)
        if order.action == "cancel":
            self._cancel(order.decision_id, known, order.unit_id, order.item_id, order.lane)
            return
        if known is not None:
            known.received += 1
            self._spawn(self._answer(known))  # repeat the last answer, do not handle it again
            return
        handled = HandledOrder(decision_id, str(order.unit_id), order.item_id, order.lane)
        self.record.handled[decision_id] = handled
        job = self._jobs[decision_id] = self._spawn(self._work_on(handled))
        job.add_done_callback(lambda _: self._jobs.pop(decision_id, None))

    def _cancel(
        self, decision_id: str, known: HandledOrder | None, unit_id: str | None, item_id: int | None, lane: int
    ) -> None:
        if known is not None and known.state in ("FINISHED", "FAILED", "CANCELLED"):
            # Finished (or cancelled) already: nothing to stop; the answer tells the controller so.
            if known.state == "CANCELLED":
                self.record.cancels_repeated += 1
            else:
                self.record.cancels_ignored += 1
            self._spawn(self._answer(known))
            return
        job = self._jobs.pop(decision_id, None)
        if job is not None:
            job.cancel()
        if known is None:
            # The order itself never came (or is still on its way): remember the cancel so that a
            # late copy of it is not worked on.
            known = HandledOrder(decision_id, str(unit_id), item_id, lane)
            self.record.handled[decision_id] = known
        known.state, known.reason = "CANCELLED", CANCELLED_REASON
        self.record.cancelled.append(decision_id)
        self._spawn(self._answer(known))
        self._emit(known)

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return task

    async def _answer(self, order: HandledOrder) -> None:
        client = self._client
        if client is None:
            return
        body = {
            "schema": "returns/v1/cell-state",
            "timestamp": utc_timestamp(),
            "cell": self.cell_id,
            "decision_id": order.decision_id,
            # The contract has no CANCELLED state: a cancelled order is FAILED, reason "cancelled".
            "state": "FAILED" if order.state == "CANCELLED" else order.state,
            "lane_capacity": self.lane_capacity,
        }
        if order.reason:
            body["reason"] = order.reason
        with contextlib.suppress(aiomqtt.MqttError):
            for _ in range(2 if self.answer_twice else 1):
                await client.publish(self.topics.cell_state(self.cell_id), encode(body), qos=1)

    async def _work_on(self, order: HandledOrder) -> None:
        await asyncio.sleep(self.accept_after_s)
        if order.lane not in self.lanes:
            order.state, order.reason = "FAILED", f"lane {order.lane} is not served by {self.cell_id}"
            await self._answer(order)
            self._emit(order)
            return
        await self._answer(order)
        # A real cell waits for the unit to come down its lane before it picks it.
        physical = None
        waited = 0.0
        while order.item_id is not None and waited < self.unit_wait_s:
            physical = self.lane_of_item(int(order.item_id))
            if physical is not None:
                break
            await asyncio.sleep(0.05)
            waited += 0.05
        await asyncio.sleep(self.finish_after_s)
        if order.item_id is not None and physical != order.lane:
            order.state = "FAILED"
            order.reason = f"unit not found in lane {order.lane} (it went to lane {physical})"
        else:
            order.state = "FINISHED"
        await self._answer(order)
        self._emit(order)

    def _emit(self, order: HandledOrder) -> None:
        if self.on_event is not None:
            self.on_event(
                {
                    "cell": self.cell_id,
                    "decision_id": order.decision_id,
                    "unit_id": order.unit_id,
                    "item_id": order.item_id,
                    "lane": order.lane,
                    "state": order.state,
                    "reason": order.reason,
                }
            )
