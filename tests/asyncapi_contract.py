"""Checks MQTT messages against docs/asyncapi.yaml (the machine-readable contract).

Used by the end-to-end and fault tests: every message seen on returns/v1/# during a run must match
the channel its topic belongs to and that channel's payload schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

ASYNCAPI = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"


@dataclass(frozen=True)
class Channel:
    name: str
    pattern: re.Pattern[str]
    message: str
    content_type: str
    validator: Draft7Validator


@cache
def load_channels(path: Path = ASYNCAPI) -> tuple[Channel, ...]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    components = document["components"]
    channels = []
    for name, channel in document["channels"].items():
        operation = channel.get("subscribe") or channel.get("publish")
        ref = operation["message"]["$ref"]
        message_name = ref.rsplit("/", 1)[-1]
        message = components["messages"][message_name]
        level = "[A-Za-z0-9_.:-]{1,64}"
        regex = "^" + re.sub(r"\\\{[a-z]+\\\}", level, re.escape(name)) + "$"
        # The payload schema is resolved against the whole document, so its $refs work.
        schema = {"$ref": message["payload"]["$ref"], "components": components}
        Draft7Validator.check_schema(schema)
        channels.append(Channel(name, re.compile(regex), message_name, message.get("contentType", "application/json"),
                                Draft7Validator(schema)))
    return tuple(channels)


def problems_with(topic: str, payload: bytes) -> list[str]:
    """Every way one message breaks the contract; empty when it conforms."""
    matches = [c for c in load_channels() if c.pattern.match(topic)]
    if len(matches) != 1:
        return [f"{topic}: matches {len(matches)} channels of the contract"]
    channel = matches[0]
    try:
        text = payload.decode("utf-8")
        value: Any = text if channel.content_type == "text/plain" else json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{topic}: not {channel.content_type}: {exc}"]
    return [
        f"{topic} ({channel.message}): {'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in channel.validator.iter_errors(value)
    ]


def assert_all_conform(messages: list[tuple[str, bytes, bool]] | list[tuple[str, bytes]]) -> int:
    """Raise AssertionError listing the first violations; returns how many messages were checked."""
    found: list[str] = []
    for entry in messages:
        found.extend(problems_with(entry[0], entry[1]))
    assert not found, f"{len(found)} contract violation(s):\n" + "\n".join(found[:20])
    return len(messages)
