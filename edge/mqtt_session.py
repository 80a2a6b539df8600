"""Which MQTT protocol version to speak, and how to keep a persistent session with it.

MQTT 5 is preferred: clean start false plus a session expiry interval, so the broker keeps our
subscriptions and queues the robot cells' QoS 1 state messages while we are away, for a bounded
time. Brokers that only speak MQTT 3.1.1 (the embedded demo broker) refuse an MQTT 5 CONNECT; in
`auto` mode the link then falls back to 3.1.1 with clean session false. The version that first
connects is kept for the life of the process, so a broker outage later does not flip versions.
"""

from __future__ import annotations

from typing import Any, Literal

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ProtocolMode = Literal["auto", "5", "3.1.1"]


class SessionNegotiator:
    def __init__(self, mode: ProtocolMode = "auto", session_expiry_s: int = 3600) -> None:
        self.mode = mode
        self.session_expiry_s = session_expiry_s
        self._v5 = mode != "3.1.1"
        self._locked = mode != "auto"

    @property
    def protocol_name(self) -> str:
        return "5" if self._v5 else "3.1.1"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiomqtt.Client for the next connection attempt."""
        if not self._v5:
            return {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry_s
        return {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False, "properties": properties}

    def on_connected(self) -> None:
        self._locked = True

    def on_connect_failed(self) -> bool:
        """A CONNECT failed before the session came up; True: retry at once with the other version."""
        if self._locked:
            return False
        self._v5 = not self._v5
        # Going back from 3.1.1 to 5 means both failed: the broker is down, so back off as usual.
        return not self._v5
