"""The controller's MQTT connection: Will, reconnects, the outbox drain and inbound messages.

`MqttLink` is an async context manager. Its background loop runs in one named task group and keeps
the connection up with capped exponential backoff and jitter. While connected it drains the
journal's outbox in order at QoS 1 and marks rows sent only after PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt

from edge.contract import Topics, encode
from edge.journal import Journal, OutboxMessage
from edge.mqtt_session import ProtocolMode, SessionNegotiator
from edge.secrets import SecretError, read_secret

log = logging.getLogger("edge.mqtt")

InboundHandler = Callable[[str, bytes], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]
TlsFactory = Callable[[], ssl.SSLContext]

OUTBOX_BATCH = 32


class MqttLink:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        topics: Topics,
        journal: Journal,
        on_message: InboundHandler,
        on_connect: ConnectHandler | None = None,
        subscriptions: list[str] | None = None,
        username: str | None = None,
        password_file: str | Path | None = None,
        tls_factory: TlsFactory | None = None,
        keepalive_s: int = 15,
        reconnect_max_s: float = 10.0,
        protocol: ProtocolMode = "auto",
        session_expiry_s: int = 3600,
    ) -> None:
        self.session = SessionNegotiator(protocol, session_expiry_s)
        self.host = host
        self.port = port
        self.client_id = client_id
        self.topics = topics
        self.journal = journal
        self.on_message = on_message
        self.on_connect = on_connect
        self.subscriptions = subscriptions or []
        self.username = username
        self.password_file = password_file
        # Built again on every connect, so a renewed certificate or key is picked up without a restart.
        self.tls_factory = tls_factory
        self.keepalive_s = keepalive_s
        self.reconnect_max_s = reconnect_max_s
        self.connected = asyncio.Event()
        self.counters = {"connects": 0, "disconnects": 0, "published": 0, "publish_errors": 0, "received": 0,
                         "secret_errors": 0}
        self.last_error: str | None = None
        self._client: aiomqtt.Client | None = None
        self._stopping = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        # Cleared by close_inbound when a stop is under way; the lock is held while a message is handled.
        self._inbound_open = True
        self._handling = asyncio.Lock()

    @property
    def state(self) -> str:
        return "online" if self.connected.is_set() else "offline"

    async def __aenter__(self) -> MqttLink:
        self._runner = asyncio.create_task(self._run(), name="mqtt-link")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self, final_state: str = "OFFLINE") -> None:
        """Publish the clean OFFLINE, disconnect (no Will) and end the background loop."""
        if self._runner is None:
            return
        self._stopping.set()
        client = self._client
        if client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(self.topics.connection, final_state, qos=1, retain=True, timeout=2.0)
                log.info("published %s on %s", final_state, self.topics.connection)
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        self._runner = None

    async def close_inbound(self) -> None:
        """Hand no more inbound messages to on_message and wait for the one being handled, so what a
        stop still has to send (alarms raised by those handlers) is all in the outbox. A message
        received after this is dropped, as on any disconnect: cells repeat their state for re-sent orders."""
        self._inbound_open = False
        async with self._handling:
            pass

    async def publish_now(
        self, topic: str, build: Callable[[], dict], qos: int = 0, retain: bool = False
    ) -> bool:
        """Best-effort publish for status and telemetry; False when not connected. `build` makes the
        message only once the link is up, so nothing that is never sent takes a `seq` (a gap in seq
        then means a message was lost, not that the broker was away)."""
        client = self._client
        if client is None or not self.connected.is_set():
            return False
        try:
            await client.publish(topic, encode(build()), qos=qos, retain=retain, timeout=2.0)
        except (aiomqtt.MqttError, TimeoutError):
            self.counters["publish_errors"] += 1
            return False
        self.counters["published"] += 1
        return True

    def _password(self) -> str | None:
        if self.password_file is None:
            return None
        return read_secret(self.password_file)

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            will = aiomqtt.Will(self.topics.connection, "CONNECTIONBROKEN", qos=1, retain=True)
            try:
                password = self._password()
                tls_context = self.tls_factory() if self.tls_factory is not None else None
            except SecretError as exc:
                # A missing or unsafe secret may be fixed while we wait; keep retrying, loudly.
                self.counters["secret_errors"] += 1
                self.last_error = str(exc)
                log.error("mqtt credentials unusable: %s", exc)
                attempt += 1
                await asyncio.sleep(min(self.reconnect_max_s, 0.2 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0))
                continue
            client = aiomqtt.Client(
                self.host,
                self.port,
                identifier=self.client_id,
                username=self.username,
                password=password,
                will=will,
                keepalive=self.keepalive_s,
                timeout=5.0,
                tls_context=tls_context,
                tls_insecure=(not tls_context.check_hostname) if tls_context is not None else None,
                **self.session.client_options(),
            )
            # The outbox publishes a whole batch at once on purpose (order kept, PUBACKs overlap);
            # aiomqtt would log a warning for every call above its default of 10 in flight.
            client.pending_calls_threshold = OUTBOX_BATCH + 16
            session_up = retry_now = False
            try:
                async with client:
                    session_up = True
                    self.session.on_connected()
                    self._client = client
                    attempt = 0
                    self.counters["connects"] += 1
                    await client.publish(self.topics.connection, "ONLINE", qos=1, retain=True)
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    self.connected.set()
                    log.info("connected to %s://%s:%d as %s (MQTT %s)", "mqtts" if tls_context else "mqtt",
                             self.host, self.port, self.client_id, self.session.protocol_name)
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._receive(client), name="mqtt-receive")
                        group.create_task(self._drain_outbox(client), name="mqtt-outbox")
                        if self.on_connect is not None:
                            group.create_task(self.on_connect(), name="mqtt-on-connect")
            except* aiomqtt.MqttError as group_error:
                self.last_error = str(group_error.exceptions[0])
                retry_now = not session_up and self.session.on_connect_failed()
                log.warning("mqtt connection lost or refused: %s", group_error.exceptions[0])
            except* Exception as group_error:
                # Anything else (the journal failing under the outbox, a client bug) must not end
                # the link for good: count it, drop the connection and come back like after a loss.
                self.counters["internal_errors"] = self.counters.get("internal_errors", 0) + 1
                self.last_error = repr(group_error.exceptions[0])
                log.error("mqtt link failed, reconnecting: %r", group_error.exceptions[0],
                          exc_info=group_error.exceptions[0])
            finally:
                if self.connected.is_set():
                    self.counters["disconnects"] += 1
                self.connected.clear()
                self._client = None
            if retry_now:
                log.info("no session with MQTT %s; trying MQTT %s at once",
                         "3.1.1" if self.session.protocol_name == "5" else "5", self.session.protocol_name)
                continue
            attempt += 1
            delay = min(self.reconnect_max_s, 0.2 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)
            log.info("reconnecting to the broker in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.counters["received"] += 1
            if not self._inbound_open:
                self.counters["dropped_at_stop"] = self.counters.get("dropped_at_stop", 0) + 1
                continue
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            async with self._handling:
                try:
                    await self.on_message(str(message.topic), bytes(payload))
                except Exception:  # a bad message must never take the connection down
                    log.exception("handler failed for a message on %s", message.topic)

    async def _drain_outbox(self, client: aiomqtt.Client) -> None:
        batch: list[OutboxMessage] | None = None
        while True:
            if batch is None:
                self.journal.outbox_changed.clear()
                batch = await self.journal.unsent(OUTBOX_BATCH)
            if not batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.journal.outbox_changed.wait(), timeout=1.0)
                batch = None
                continue
            # paho sends in call order, so publishing a batch concurrently keeps the order while
            # overlapping the PUBACK round trips.
            results = await asyncio.gather(
                *(client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, timeout=10.0) for m in batch),
                return_exceptions=True,
            )
            acknowledged = []
            for message, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    self.counters["publish_errors"] += 1
                    break  # keep the order: everything after a failure is sent again later
                acknowledged.append(message.seq)
            if len(acknowledged) < len(batch):
                if acknowledged:
                    await self.journal.mark_sent(acknowledged)
                    self.counters["published"] += len(acknowledged)
                error = next(r for r in results if isinstance(r, BaseException))
                raise aiomqtt.MqttError(f"publish failed: {error}") from error
            # Cleared before the read that follows the update: a message enqueued meanwhile is
            # either in the next batch or sets the event again, never missed.
            self.journal.outbox_changed.clear()
            batch = await self.journal.mark_sent_and_fetch(acknowledged, OUTBOX_BATCH)
            self.counters["published"] += len(acknowledged)
