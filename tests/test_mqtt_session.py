"""MQTT 5 persistent session against a real mosquitto, and the 3.1.1 fallback for the embedded broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt

from edge.broker import EmbeddedBroker
from edge.contract import Topics
from edge.journal import Journal, Publication
from edge.mqtt import MqttLink
from edge.mqtt_session import SessionNegotiator

TOPICS = Topics("returns/v1", "site", "line")


def _link(host: str, port: int, journal: Journal, received: list[bytes], **kw) -> MqttLink:
    async def on_message(topic: str, payload: bytes) -> None:
        received.append(payload)

    return MqttLink(host=host, port=port, client_id="edge-session-test", topics=TOPICS, journal=journal,
                    on_message=on_message, subscriptions=[f"{TOPICS.root}/cells/+/state"], reconnect_max_s=0.5,
                    **kw)


async def _wait(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_mqtt5_session_keeps_cell_answers_sent_while_the_controller_was_away(mosquitto, tmp_path: Path) -> None:
    received: list[bytes] = []
    async with Journal(tmp_path / "j.db") as journal:
        link = _link(mosquitto.host, mosquitto.port, journal, received, session_expiry_s=600)
        async with link:
            await asyncio.wait_for(link.connected.wait(), 10)
            assert link.session.protocol_name == "5"
        # The controller is away; a cell answers meanwhile (QoS 1).
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="cell-x") as cell:
            await cell.publish(TOPICS.cell_state("cell-a"), json.dumps({"decision_id": "d1", "state": "FINISHED"}),
                               qos=1)
        link = _link(mosquitto.host, mosquitto.port, journal, received, session_expiry_s=600)
        async with link:
            await _wait(lambda: bool(received))
        assert json.loads(received[0])["decision_id"] == "d1"


async def test_session_expiry_zero_means_no_queued_messages(mosquitto, tmp_path: Path) -> None:
    received: list[bytes] = []
    async with Journal(tmp_path / "j.db") as journal:
        async with _link(mosquitto.host, mosquitto.port, journal, received, session_expiry_s=0) as link:
            await asyncio.wait_for(link.connected.wait(), 10)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="cell-y") as cell:
            await cell.publish(TOPICS.cell_state("cell-a"), json.dumps({"decision_id": "d2", "state": "FINISHED"}),
                               qos=1)
        async with _link(mosquitto.host, mosquitto.port, journal, received, session_expiry_s=0) as link:
            await asyncio.wait_for(link.connected.wait(), 10)
            await asyncio.sleep(0.5)
        assert received == []  # proves the previous test's message came from the kept session


async def test_falls_back_to_mqtt311_on_a_broker_without_mqtt5(tmp_path: Path) -> None:
    async with EmbeddedBroker() as broker, Journal(tmp_path / "j.db") as journal:
        await journal.enqueue([Publication(TOPICS.decisions, b'{"n": 1}')])
        async with _link(broker.host, broker.port, journal, []) as link:
            await asyncio.wait_for(link.connected.wait(), 15)
            assert link.session.protocol_name == "3.1.1"
            await _wait(lambda: link.counters["published"] >= 1)


def test_negotiator_keeps_the_version_that_worked() -> None:
    auto = SessionNegotiator("auto", 60)
    assert auto.client_options()["clean_start"] is False
    assert auto.client_options()["properties"].SessionExpiryInterval == 60
    assert auto.on_connect_failed() is True and auto.protocol_name == "3.1.1"
    assert auto.client_options()["clean_session"] is False
    assert auto.on_connect_failed() is False and auto.protocol_name == "5"  # both failed: broker down
    auto.on_connected()
    assert auto.on_connect_failed() is False and auto.protocol_name == "5"
    fixed = SessionNegotiator("3.1.1")
    assert fixed.on_connect_failed() is False and fixed.protocol_name == "3.1.1"
