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


def default_format(env: dict[str, str] | None = None) -> LogFormat:
    value = (os.environ if env is None else env).get("EDGE_LOG_FORMAT", "text")
    return "json" if value == "json" else "text"


def setup_logging(verbose: bool = False, fmt: LogFormat = "text", static: dict[str, Any] | None = None) -> None:
    """Everything to stdout (journald picks it up under systemd; containers collect it as is)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(static) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)


__all__ = ["JsonFormatter", "default_format", "setup_logging"]
