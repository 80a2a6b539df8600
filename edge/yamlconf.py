"""YAML loading that remembers where every value came from.

Configuration errors must name the file, the line and the field, so the loader keeps a map from
each key path to its line. `${VAR}` and `${VAR:-default}` in string values are replaced from the
environment, so one config file can serve a gateway and a test run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

KeyPath = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file is missing, unreadable, not YAML, or fails validation."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class LoadedYaml:
    path: Path
    data: Any
    lines: dict[KeyPath, int]

    def line_of(self, loc: KeyPath) -> int | None:
        """The line of the deepest known key on `loc` (1-based)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None


def _expand_env(value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV_PATTERN.sub(replace, value)


def _index_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _index_lines(item, (*path, index), lines)


def _expand_tree(data: Any, path: KeyPath, problems: list[str], source: Path, lines: dict) -> Any:
    if isinstance(data, str):
        try:
            return _expand_env(data)
        except KeyError as missing:
            line = lines.get(path, "?")
            problems.append(
                f"{source}:{line}: {'.'.join(map(str, path))}: environment variable {missing} is not set"
            )
            return data
    if isinstance(data, dict):
        return {k: _expand_tree(v, (*path, k), problems, source, lines) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_tree(v, (*path, i), problems, source, lines) for i, v in enumerate(data)]
    return data


def load_yaml(path: Path | str) -> LoadedYaml:
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"{source}: cannot read: {exc}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else str(source)
        raise ConfigError(source, [f"{where}: not valid YAML: {exc}"]) from exc
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    problems: list[str] = []
    data = _expand_tree(data if data is not None else {}, (), problems, source, lines)
    if problems:
        raise ConfigError(source, problems)
    return LoadedYaml(source, data, lines)


def validate(
    model: type[ModelT], loaded: LoadedYaml, context: Mapping[str, Any] | None = None
) -> ModelT:
    """Validate `loaded.data` against `model`; errors carry file, line and dotted field name."""
    try:
        return model.model_validate(loaded.data, context=dict(context or {}))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = loaded.line_of(loc)
            field = ".".join(str(part) for part in loc) or "(top level)"
            where = f"{loaded.path}:{line}" if line else str(loaded.path)
            problems.append(f"{where}: {field}: {error['msg']}")
        raise ConfigError(loaded.path, problems) from exc
