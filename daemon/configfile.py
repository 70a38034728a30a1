"""YAML files whose values remember where they were written, for errors that name the line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Location = tuple[int, int]
PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedYaml:
    """A parsed YAML document plus the (line, column) of every key and item."""

    path: Path
    data: Any
    positions: dict[PathKey, Location]

    def where(self, loc: Sequence[str | int]) -> str:
        """Return `file:line:column` for the deepest known prefix of a key path."""
        key: PathKey = tuple(loc)
        while key and key not in self.positions:
            key = key[:-1]
        line, column = self.positions.get(key, (1, 1))
        return f"{self.path}:{line}:{column}"


def _mark(node: yaml.Node) -> Location:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _build(
    node: yaml.Node, path: PathKey, positions: dict[PathKey, Location], loader: yaml.SafeLoader
) -> Any:
    positions.setdefault(path, _mark(node))
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                raise ConfigError(f"line {_mark(key_node)[0]}: keys must be text, not {key!r}")
            if key in result:
                raise ConfigError(f"line {_mark(key_node)[0]}: duplicate key {key!r}")
            positions[(*path, key)] = _mark(key_node)
            result[key] = _build(value_node, (*path, key), positions, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), positions, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml(path: Path, text: str | None = None) -> LoadedYaml:
    """Parse a YAML file safely, raising ConfigError with file:line:column on syntax errors."""
    try:
        source = path.read_text(encoding="utf-8") if text is None else text
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from exc
    positions: dict[PathKey, Location] = {}
    try:
        data = {} if node is None else _build(node, (), positions, yaml.SafeLoader(""))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from exc
    return LoadedYaml(path=path, data=data, positions=positions)


def validate(loaded: LoadedYaml, model: type[M]) -> M:
    """Validate a loaded document into `model`; errors list every problem with file:line:col."""
    try:
        return model.model_validate(loaded.data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            key = ".".join(str(part) for part in loc) or "(top level)"
            lines.append(f"{loaded.where(loc)}: {key}: {error['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
