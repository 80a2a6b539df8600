"""MqttLink against a real mosquitto: Will, outbox drain, broker restart."""

import asyncio
import json
from functools import partial
from pathlib import Path

import aiomqtt

from edge.contract import Envelope, Topics
from edge.journal import Journal, Publication
from edge.mqtt import MqttLink

TOPICS = Topics("returns/v1", "site", "line")


async def _collect(host: str, port: int, topic: str, count: int, timeout: float = 10.0,
                   subscribed: asyncio.Event | None = None) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(topic, qos=1)
        if subscribed is not None:
            subscribed.set()
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                got.append((str(message.topic), bytes(message.payload)))
                if len(got) >= count:
                    break
    return got


async def _subscribed(host: str, port: int, topic: str, count: int) -> asyncio.Task[list[tuple[str, bytes]]]:
    """A collector already subscribed: messages that are not retained reach only subscribers."""
    ready = asyncio.Event()
    task = asyncio.create_task(_collect(host, port, topic, count, subscribed=ready))
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait([task, ready_wait], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    ready_wait.cancel()
    if task.done():
        task.result()  # raises what went wrong
    assert ready.is_set(), "the collector did not subscribe"
    return task


async def _noop(topic: str, payload: bytes) -> None:
    return None


def _link(mosquitto, journal: Journal, **kw) -> MqttLink:
    return MqttLink(host=mosquitto.host, port=mosquitto.port, client_id="edge-test", topics=TOPICS,
                    journal=journal, on_message=kw.pop("on_message", _noop), reconnect_max_s=0.5, **kw)


async def test_online_offline_and_outbox(mosquitto, tmp_path: Path) -> None:
    async with Journal(tmp_path / "j.db") as journal:
        await journal.enqueue([Publication(TOPICS.decisions, json.dumps({"n": n}).encode()) for n in range(5)])
        # Subscribed before the link connects: it publishes the outbox as soon as it is up.
        collector = await _subscribed(mosquitto.host, mosquitto.port, TOPICS.decisions, 5)
        link = _link(mosquitto, journal)
        async with link:
            got = await collector
            assert [json.loads(p)["n"] for _, p in got] == [0, 1, 2, 3, 4]
            for _ in range(50):
                if not await journal.unsent():
                    break
                await asyncio.sleep(0.05)
            assert await journal.unsent() == []
            retained = await _collect(mosquitto.host, mosquitto.port, TOPICS.connection, 1)
            assert retained[0][1] == b"ONLINE"
        retained = await _collect(mosquitto.host, mosquitto.port, TOPICS.connection, 1)
        assert retained[0][1] == b"OFFLINE"


async def test_outbox_waits_through_a_broker_outage(mosquitto, tmp_path: Path) -> None:
    received: list[str] = []

    async def on_message(topic: str, payload: bytes) -> None:
        received.append(payload.decode())

    async with Journal(tmp_path / "j.db") as journal:
        link = _link(mosquitto, journal, on_message=on_message, subscriptions=[f"{TOPICS.root}/cells/+/state"])
        async with link:
            await asyncio.wait_for(link.connected.wait(), 10)
            mosquitto.stop()
            for _ in range(100):
                if not link.connected.is_set():
                    break
                await asyncio.sleep(0.05)
            assert not link.connected.is_set()
            # Status and telemetry are not kept through an outage: not even built, so they take no seq.
            envelope = Envelope("edge-test")
            assert not await link.publish_now(TOPICS.status, partial(envelope.build, "status", {}), qos=1)
            assert envelope.take_seq() == 1
            await journal.enqueue([Publication(TOPICS.decisions, b'{"during": "outage"}')])
            await asyncio.sleep(0.3)
            assert len(await journal.unsent()) == 1
            mosquitto.start()
            await asyncio.wait_for(link.connected.wait(), 15)
            for _ in range(100):
                if not await journal.unsent():
                    break
                await asyncio.sleep(0.05)
            assert await journal.unsent() == []
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
                await client.publish(TOPICS.cell_state("cell-a"), b"hello", qos=1)
            for _ in range(100):
                if received:
                    break
                await asyncio.sleep(0.05)
            assert received == ["hello"]
