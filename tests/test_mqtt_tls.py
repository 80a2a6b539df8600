"""The controller's broker link against mosquitto with TLS, client certificates, passwords and an ACL.

Secrets come from a $CREDENTIALS_DIRECTORY laid out the way systemd's LoadCredential= lays it out.
The ACL is the one `edge broker-acl` generates for the station, so these tests prove it is enough
for the controller's traffic and keeps it on its own line's topics.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from edge.acl import mosquitto_acl
from edge.config import MqttSettings, load_station
from edge.contract import Topics
from edge.journal import Journal, Publication
from edge.mqtt import MqttLink
from edge.secrets import SecretError, client_tls_context, mqtt_tls_factory, read_secret, resolve_secret

from .conftest import CONFIG
from .tls_broker import Pki, TlsMosquitto, make_pki

STATION = load_station(CONFIG / "station.example.yaml")
TOPICS = Topics(STATION.mqtt.topic_prefix, STATION.site, STATION.line)
PASSWORDS = {"edge-01": "s3cret-edge", "observer": "watch-it", "cell-a": "cell-pass"}
OBSERVER_ACL = "\n# technicians and test tools\nuser observer\ntopic readwrite returns/#\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[TlsMosquitto]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    server = TlsMosquitto(workdir, pki, PASSWORDS, mosquitto_acl(STATION, "edge-01") + OBSERVER_ACL)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def credentials(tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What systemd builds from LoadCredential=edge:/etc/edge/credentials: edge_<file>, mode 0400."""
    folder = tmp_path / "credentials"
    folder.mkdir(mode=0o700)
    files = {"edge_mqtt-password": PASSWORDS["edge-01"] + "\n", "edge_client.key": pki.key("edge-01").read_text()}
    for name, text in files.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    return folder


def _settings(broker: TlsMosquitto, pki: Pki, **tls: object) -> MqttSettings:
    return MqttSettings.model_validate({
        "url": broker.url, "username": "edge-01", "password_file": "credential:mqtt-password",
        "tls": {"ca_file": str(pki.ca), "cert_file": str(pki.cert("edge-01")), "key_file": "credential:client.key",
                **tls},
    })


def _client(broker: TlsMosquitto, pki: Pki, user: str, **kw: object) -> aiomqtt.Client:
    context = client_tls_context(pki.ca, pki.cert(user), pki.key(user))
    return aiomqtt.Client(broker.host, broker.port, username=user, password=PASSWORDS[user], tls_context=context,
                          identifier=f"{user}-test", timeout=5.0, **kw)


async def _noop(topic: str, payload: bytes) -> None:
    return None


def _link(broker: TlsMosquitto, settings: MqttSettings, journal: Journal, **kw) -> MqttLink:
    return MqttLink(host=settings.host, port=settings.port, client_id="edge-01", topics=TOPICS, journal=journal,
                    on_message=kw.pop("on_message", _noop), username=settings.username,
                    password_file=settings.password_file, tls_factory=mqtt_tls_factory(settings),
                    reconnect_max_s=0.5, **kw)


async def _wait(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_controller_traffic_over_tls_with_credentials_and_acl(broker, pki, credentials, tmp_path) -> None:
    settings = _settings(broker, pki)
    assert settings.port == broker.port
    inbound: list[tuple[str, bytes]] = []

    async def on_message(topic: str, payload: bytes) -> None:
        inbound.append((topic, payload))

    seen: list[tuple[str, bytes]] = []
    async with _client(broker, pki, "observer") as observer, Journal(tmp_path / "j.db") as journal:
        await observer.subscribe(f"{TOPICS.root}/#", qos=1)

        async def watch() -> None:
            async for message in observer.messages:
                seen.append((str(message.topic), bytes(message.payload)))

        watcher = asyncio.create_task(watch())
        await journal.enqueue([
            Publication(TOPICS.decisions, json.dumps({"n": 1}).encode()),
            Publication(TOPICS.cell_orders("cell-a"), json.dumps({"n": 2}).encode()),
        ])
        link = _link(broker, settings, journal, on_message=on_message,
                     subscriptions=[f"{TOPICS.root}/cells/+/state", f"{TOPICS.root}/cells/+/connection"])
        async with link:
            await asyncio.wait_for(link.connected.wait(), 15)
            await _wait(lambda: {t for t, _ in seen} >= {TOPICS.connection, TOPICS.decisions,
                                                         TOPICS.cell_orders("cell-a")})
            assert link.counters["secret_errors"] == 0
            assert await link.publish_now(TOPICS.status, lambda: {"ok": True}, qos=1, retain=True)
            await _wait(lambda: any(t == TOPICS.status for t, _ in seen))
            # a robot cell answers; the controller's subscription lets it through
            async with _client(broker, pki, "cell-a") as cell:
                await cell.publish(TOPICS.cell_state("cell-a"), b'{"decision_id": "d", "state": "ACCEPTED"}', qos=1)
            await _wait(lambda: inbound)
            assert inbound[0][0] == TOPICS.cell_state("cell-a")
        await _wait(lambda: (TOPICS.connection, b"OFFLINE") in seen)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_acl_keeps_the_controller_on_its_own_topics(broker, pki) -> None:
    other_line = Topics(STATION.mqtt.topic_prefix, STATION.site, "returns-2")
    forbidden = [other_line.decisions, other_line.cell_orders("cell-a"), f"{TOPICS.root}/cells/cell-a/state",
                 "returns/v1/elsewhere", "$SYS/broker/x"]
    seen: list[str] = []
    async with _client(broker, pki, "observer") as observer:
        await observer.subscribe("returns/#", qos=1)

        async def watch() -> None:
            async for message in observer.messages:
                seen.append(str(message.topic))

        watcher = asyncio.create_task(watch())
        async with _client(broker, pki, "edge-01") as controller:
            for topic in forbidden:
                await controller.publish(topic, b"x", qos=1)
            await controller.publish(TOPICS.alarms, b"allowed", qos=1)
            # MQTT 3.1.1 brokers drop a denied publish silently; the denied ones went first, so once the
            # allowed one arrived they would have too.
            await _wait(lambda: TOPICS.alarms in seen)
            await asyncio.sleep(0.3)
            assert [t for t in seen if t != TOPICS.alarms] == []
            watcher.cancel()
            # nor may it read another line's traffic, even through a wide subscription
            await controller.subscribe("returns/#", qos=1)
            await observer.publish(other_line.cell_state("cell-a"), b"other line", qos=1)
            await observer.publish(TOPICS.cell_state("cell-a"), b"own line", qos=1)
            got = []
            async with asyncio.timeout(10):
                async for message in controller.messages:
                    got.append((str(message.topic), bytes(message.payload)))
                    if message.payload == b"own line":
                        break
            assert got == [(TOPICS.cell_state("cell-a"), b"own line")]
        watcher.cancel()


@pytest.mark.parametrize("case", ["wrong_password", "no_client_cert", "untrusted_broker"])
async def test_refused_connections_are_counted_and_retried(broker, pki, credentials, tmp_path, case) -> None:
    if case == "wrong_password":
        (credentials / "edge_mqtt-password").chmod(0o600)
        (credentials / "edge_mqtt-password").write_text("not-the-password")
        settings = _settings(broker, pki)
    elif case == "no_client_cert":
        settings = _settings(broker, pki, cert_file=None, key_file=None)
    else:
        settings = _settings(broker, pki, ca_file=str(pki.folder / "rogue-ca.crt"))
    async with Journal(tmp_path / "j.db") as journal:
        link = _link(broker, settings, journal)
        async with link:
            await _wait(lambda: link.last_error is not None)
            await asyncio.sleep(1.0)
            assert not link.connected.is_set()
            assert link.counters["connects"] == 0
            assert link._runner is not None and not link._runner.done()  # still retrying, not crashed
    expected = {"wrong_password": "authori", "untrusted_broker": "certificate verify failed"}.get(case)
    if expected:
        assert expected in link.last_error.lower(), link.last_error


async def test_a_missing_or_world_readable_secret_is_counted_not_fatal(broker, pki, credentials, tmp_path) -> None:
    (credentials / "edge_mqtt-password").chmod(0o644)
    settings = _settings(broker, pki)
    async with Journal(tmp_path / "j.db") as journal:
        link = _link(broker, settings, journal)
        async with link:
            await _wait(lambda: link.counters["secret_errors"] >= 2)
            assert "readable by every user" in (link.last_error or "")
            # ops fix the file: the link comes up without a restart
            (credentials / "edge_mqtt-password").chmod(0o400)
            await asyncio.wait_for(link.connected.wait(), 15)


def test_secret_references(tmp_path: Path) -> None:
    folder = tmp_path / "creds"
    folder.mkdir()
    (folder / "plain").write_text("one\n")
    (folder / "edge_prefixed").write_text("two\r\n")
    for name in ("plain", "edge_prefixed"):
        (folder / name).chmod(0o600)
    env = {"CREDENTIALS_DIRECTORY": str(folder)}
    assert read_secret("credential:plain", env) == "one"
    assert read_secret("credential:prefixed", env) == "two"
    assert read_secret(folder / "plain", env) == "one"
    assert resolve_secret("credential:prefixed", env) == folder / "edge_prefixed"
    with pytest.raises(SecretError, match="CREDENTIALS_DIRECTORY is not set"):
        read_secret("credential:plain", {})
    with pytest.raises(SecretError, match="no credential 'absent'"):
        read_secret("credential:absent", env)
    with pytest.raises(SecretError, match="does not exist"):
        read_secret(tmp_path / "nope", env)
    (folder / "empty").write_text("\n")
    (folder / "empty").chmod(0o600)
    with pytest.raises(SecretError, match="empty"):
        read_secret("credential:empty", env)
    with pytest.raises(SecretError, match="could not be loaded"):
        client_tls_context(folder / "plain", None, None)


def test_tls_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="mqtts"):
        MqttSettings.model_validate({"url": "mqtt://h:1883", "tls": {}})
    with pytest.raises(ValueError, match="go together"):
        MqttSettings.model_validate({"url": "mqtts://h", "tls": {"cert_file": "/c"}})
    settings = MqttSettings.model_validate({"url": "mqtts://broker.example"})
    assert settings.port == 8883 and settings.tls_enabled
    factory = mqtt_tls_factory(settings)
    assert factory is not None and isinstance(factory(), ssl.SSLContext)  # system CAs
    assert mqtt_tls_factory(MqttSettings()) is None


def test_generated_acl_covers_every_topic_the_contract_gives_the_controller() -> None:
    acl = mosquitto_acl(STATION)
    block = acl.split("\n\n")[0]
    assert f"user {STATION.controller_id}" in block
    for topic in (TOPICS.connection, TOPICS.status, TOPICS.decisions, TOPICS.alarms,
                  *(TOPICS.cell_orders(c.id) for c in STATION.cells)):
        assert f"topic write {topic}\n" in block
    assert "#" not in block.replace("# controller", "")
    assert os.linesep in acl
