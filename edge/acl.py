"""The mosquitto ACL a station needs: the controller may use only its own line's topics.

Generated from the station file and the MQTT contract (docs/mqtt.md), so it cannot drift from what
the controller actually publishes and subscribes to. `edge broker-acl --config FILE` prints it.
"""

from __future__ import annotations

from edge.config import StationConfig
from edge.contract import Topics


def controller_topics(config: StationConfig) -> tuple[list[str], list[str]]:
    """(topics the controller publishes, topic filters it subscribes to)."""
    topics = Topics(config.mqtt.topic_prefix, config.site, config.line)
    root = topics.root
    writes = [
        topics.connection,  # also the Will, which the broker checks against the same ACL
        topics.status,
        f"{root}/devices/+/telemetry",
        topics.decisions,
        topics.alarms,
        *(topics.cell_orders(cell.id) for cell in config.cells),
    ]
    # The controller subscribes with a wildcard over the cells; mosquitto checks the filter itself.
    reads = [f"{root}/cells/+/state", f"{root}/cells/+/connection"]
    return writes, reads


def mosquitto_acl(config: StationConfig, username: str | None = None, *, cells: bool = True) -> str:
    """ACL file text: one block for the controller's broker user, and one per robot cell (user = cell id)."""
    user = username or config.mqtt.username or config.controller_id
    writes, reads = controller_topics(config)
    topics = Topics(config.mqtt.topic_prefix, config.site, config.line)
    lines = [f"# controller {config.controller_id}: line {topics.root}", f"user {user}"]
    lines += [f"topic write {topic}" for topic in writes]
    lines += [f"topic read {topic}" for topic in reads]
    if cells:
        for cell in config.cells:
            lines += [
                "",
                f"# robot cell {cell.id}",
                f"user {cell.id}",
                f"topic read {topics.cell_orders(cell.id)}",
                f"topic write {topics.cell_state(cell.id)}",
                f"topic write {topics.cell_connection(cell.id)}",
                f"topic read {topics.connection}",
            ]
    return "\n".join(lines) + "\n"


__all__ = ["controller_topics", "mosquitto_acl"]
