"""Log output: readable text for people, or one JSON object per line for journald and log shippers.

JSON lines carry the record's context fields (unit_id, decision_id, item_id, grade, lane, ...), given
with `extra=` at the call site, so one unit can be followed through the logs by its id.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY_LOGGERS = ("pymodbus", "amqtt", "transitions", "numba")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ExpectedBacklogFilter(logging.Filter):
    """Demotes aiomqtt's "There are N pending publish calls." to DEBUG.

    aiomqtt warns, on its `mqtt` logger and with no word of which client, whenever a client has more
    than `pending_calls_threshold` (10 by default) calls waiting for the broker's answer. Our clients
    wait for PUBACKs in bulk on purpose: the controller publishes a whole outbox batch at once (its
    threshold is raised to match, edge/mqtt.py), and after a broker outage every QoS 1 message held
    back meanwhile goes out together, e.g. the robot cells' answers in `edge sim` and `edge demo`. That
    backlog is expected, and it is already counted where it matters (the controller's outbox depth in
    its status and metrics), so a line per publish (bare in `edge demo`, which had no handler) only
    alarms whoever reads the output. Raising the threshold would need every client (the simulator's
    too), so the record is demoted here instead: shown, through our formatter, only if the `mqtt`
    logger is set to DEBUG (aiomqtt sets it to WARNING on import).
    """

    MESSAGE = "There are %d pending publish calls."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        # Handlers see the record whatever its level: drop it here unless DEBUG is on.
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_expected_backlog(logger_name: str = "mqtt") -> None:
    """Install `ExpectedBacklogFilter` on aiomqtt's logger (once)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, ExpectedBacklogFilter) for f in logger.filters):
        logger.addFilter(ExpectedBacklogFilter())


def default_format(env: dict[str, str] | None = None) -> LogFormat:
    value = (os.environ if env is None else env).get("EDGE_LOG_FORMAT", "text")
    return "json" if value == "json" else "text"


def setup_logging(
    verbose: bool = False, fmt: LogFormat = "text", static: dict[str, Any] | None = None, level: int | None = None,
) -> None:
    """Everything to stdout (journald picks it up under systemd; containers collect it as is), from
    INFO (DEBUG with `verbose`, or `level`)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(static) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level is not None else logging.DEBUG if verbose else logging.INFO)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    quiet_expected_backlog()


__all__ = ["ExpectedBacklogFilter", "JsonFormatter", "default_format", "quiet_expected_backlog", "setup_logging"]
