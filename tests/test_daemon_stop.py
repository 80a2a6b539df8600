"""A stop right after READY still delivers what start-up put in the outbox.

Real mosquitto, real MqttLink, real journal and alarms: the steps Controller._shut_down takes before
it closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import paho.mqtt.client as paho

from edge.alarms import Alarms
from edge.contract import Envelope, Topics
from edge.daemon import drain_before_stop
from edge.journal import Journal
from edge.mqtt import MqttLink

from .conftest import Mosquitto, free_port, until

TOPICS = Topics("returns/v1", "s", "l")


class _Subscriber:
    """A technician watching the alarms topic."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: list[dict] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="alarm-watch")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPICS.alarms, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append(json.loads(m.payload))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _noop(topic: str, payload: bytes) -> None:
    return None


def _link(journal: Journal, port: int) -> MqttLink:
    return MqttLink(host="127.0.0.1", port=port, client_id="edge-t", topics=TOPICS, journal=journal,
                    on_message=_noop, reconnect_max_s=0.5)


def test_an_alarm_raised_at_start_up_is_delivered_by_a_stop_right_after_ready(
    mosquitto: Mosquitto, tmp_path: Path,
) -> None:
    watcher = _Subscriber(mosquitto)
    assert watcher.subscribed.wait(10)

    async def run() -> tuple[bool, int]:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), TOPICS)
            # Raised before READY (e.g. by start-up recovery), while the broker connection is not up yet.
            await alarms.raise_("device_lost", "scale is lost", subject="scale", severity="critical")
            async with _link(journal, mosquitto.port) as mqtt:
                # READY, then the stop request at once: the connection is still coming up.
                connected_at_stop = mqtt.connected.is_set()
                left = await drain_before_stop(journal, mqtt, 10.0)
            return connected_at_stop, left

    try:
        connected_at_stop, left = asyncio.run(run())
        asyncio.run(until(lambda: watcher.messages, timeout_s=10, what="the alarm at the subscriber"))
    finally:
        watcher.stop()
    assert not connected_at_stop  # the case this is about: nothing was connected when the stop came
    assert left == 0
    assert [(m["state"], m["code"], m["subject"]) for m in watcher.messages] == [("raised", "device_lost", "scale")]
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0] == 0


def test_with_no_broker_the_stop_waits_only_its_bound_and_keeps_the_message(tmp_path: Path) -> None:
    async def run() -> int:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), TOPICS)
            await alarms.raise_("device_lost", "scale is lost", subject="scale", severity="critical")
            async with _link(journal, free_port()) as mqtt:  # nothing listens there
                return await drain_before_stop(journal, mqtt, 0.3)

    assert asyncio.run(run()) == 1
    db = sqlite3.connect(tmp_path / "j.db")
    # Still queued: sent after the next start.
    assert db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0] == 1


def test_an_alarm_raised_by_an_inbound_message_during_the_stop_is_sent_before_the_connection_closes(
    mosquitto: Mosquitto, tmp_path: Path,
) -> None:
    watcher = _Subscriber(mosquitto)
    assert watcher.subscribed.wait(10)
    cell_topic = f"{TOPICS.root}/cells/cell-a/connection"
    retained = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cell-a")
    retained.connect(mosquitto.host, mosquitto.port)
    retained.loop_start()
    retained.publish(cell_topic, "OFFLINE", qos=1, retain=True).wait_for_publish(10)
    retained.loop_stop()
    retained.disconnect()

    async def run() -> tuple[int, bool]:
        async with Journal(tmp_path / "j.db") as journal:
            alarms = Alarms(journal, Envelope("edge-t"), TOPICS)
            handler_started, release = asyncio.Event(), asyncio.Event()

            async def on_message(topic: str, payload: bytes) -> None:
                # What the daemon's inbound handler does with a cell that is OFFLINE, held up until
                # the stop is waiting for it.
                handler_started.set()
                await release.wait()
                await alarms.raise_("cell_offline", f"robot cell cell-a is {payload.decode()}", subject="cell-a")

            await alarms.raise_("device_lost", "scale is lost", subject="scale", severity="critical")
            link = MqttLink(host="127.0.0.1", port=mosquitto.port, client_id="edge-t", topics=TOPICS,
                            journal=journal, on_message=on_message, subscriptions=[cell_topic])
            async with link as mqtt:
                drain = asyncio.create_task(drain_before_stop(journal, mqtt, 10.0))
                await until(lambda: handler_started.is_set() and watcher.messages, timeout_s=10,
                            what="the first alarm sent and the inbound message being handled")
                waited_for_handler = not drain.done()
                release.set()
                left = await drain
            return left, waited_for_handler

    try:
        left, waited_for_handler = asyncio.run(run())
        asyncio.run(until(lambda: len(watcher.messages) == 2, timeout_s=10, what="both alarms at the subscriber"))
    finally:
        watcher.stop()
    assert waited_for_handler and left == 0
    sent = [(m["code"], m["subject"]) for m in watcher.messages]
    assert sent == [("device_lost", "scale"), ("cell_offline", "cell-a")]
