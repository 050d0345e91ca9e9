"""Dataclass configs that double as ROS parameter schemas.

Every component has one dataclass. Fields carry a description (`param(...)`), which the node layer turns
into a ROS ParameterDescriptor; `from_dict` builds a validated instance from YAML / parameter values.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar('T')


def param(default: Any, description: str, **kwargs) -> Any:
    """A dataclass field with a human description (becomes the ROS parameter description)."""
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value),
                                 metadata={'description': description, **kwargs})
    return dataclasses.field(default=default, metadata={'description': description, **kwargs})


def describe(cls) -> dict[str, str]:
    """Field name -> description, for every field of a config dataclass."""
    return {f.name: f.metadata.get('description', '') for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        items = [_coerce(v, item_type) for v in value]
        return tuple(items) if origin is tuple else items
    return value


def from_dict(cls: type[T], values: dict[str, Any] | None, *, strict: bool = True) -> T:
    """Build `cls` from a mapping, coercing ints to floats and lists to tuples where annotated.

    Unknown keys raise (a typo in a YAML file should not be silently ignored) unless strict=False.
    Validation lives in each dataclass's __post_init__.
    """
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown and strict:
        raise ValueError(f'{cls.__name__}: unknown parameter(s) {unknown}; known: {sorted(names)}')
    kwargs = {k: _coerce(v, hints[k]) for k, v in values.items() if k in names}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def load_node_parameters(yaml_path: str | Path, node_name: str) -> dict[str, Any]:
    """The `ros__parameters` of one node from a standard ROS 2 params file (also read by `ros2 launch`)."""
    with open(yaml_path) as f:
        doc = yaml.safe_load(f) or {}
    for key in (node_name, '/' + node_name, '/**'):
        section = doc.get(key)
        if section and 'ros__parameters' in section:
            return dict(section['ros__parameters'])
    return {}


def require(condition: bool, message: str) -> None:
    """Validation helper for __post_init__: raise ValueError with a clear message."""
    if not condition:
        raise ValueError(message)
