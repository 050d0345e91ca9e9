"""Config dataclass <-> ROS parameters: one dataclass per component is its node's parameter schema."""
from __future__ import annotations

import dataclasses
import typing
from typing import TypeVar

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from flow_rag_vla_ros.core.config import from_dict

T = TypeVar('T')

# Empty list defaults carry no type for rclpy: take it from the annotation.
_ARRAY_TYPES = {float: Parameter.Type.DOUBLE_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                str: Parameter.Type.STRING_ARRAY, bool: Parameter.Type.BOOL_ARRAY}


def declare_config(node: Node, cls: type[T]) -> T:
    """Declare every field of `cls` as a parameter (with its description) and build a validated instance."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    values = {}
    for field in dataclasses.fields(cls):
        default = getattr(defaults, field.name)
        if isinstance(default, tuple):
            default = list(default)
        # YAML writes 25 for 25.0: float fields accept integers (coerced by from_dict), nothing else
        descriptor = ParameterDescriptor(description=field.metadata.get('description', ''),
                                         dynamic_typing=hints[field.name] is float)
        if isinstance(default, list) and not default:
            (item_type,) = typing.get_args(hints[field.name])[:1] or (str,)
            node.declare_parameter(field.name, _ARRAY_TYPES.get(item_type, Parameter.Type.STRING_ARRAY), descriptor)
            try:
                values[field.name] = list(node.get_parameter(field.name).value)
            except ParameterUninitializedException:  # declared by type only and not set: the empty default
                values[field.name] = []
            continue
        value = node.declare_parameter(field.name, default, descriptor).value
        if hints[field.name] is float and not isinstance(value, (int, float)):
            raise ValueError(f'{cls.__name__}.{field.name} must be a number, got {value!r}')
        values[field.name] = value
    return from_dict(cls, values)
