"""Config dataclass <-> ROS parameters: one dataclass per component is its node's parameter schema."""
from __future__ import annotations

import dataclasses
import typing
from typing import TypeVar

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node

from flow_rag_vla_ros.core.config import from_dict

T = TypeVar('T')

# Empty list defaults carry no type for rclpy: take it from the annotation.
_ARRAY_TYPES = {float: ParameterType.PARAMETER_DOUBLE_ARRAY, int: ParameterType.PARAMETER_INTEGER_ARRAY,
                str: ParameterType.PARAMETER_STRING_ARRAY, bool: ParameterType.PARAMETER_BOOL_ARRAY}


def declare_config(node: Node, cls: type[T]) -> T:
    """Declare every field of `cls` as a parameter (with its description) and build a validated instance."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    values = {}
    for field in dataclasses.fields(cls):
        default = getattr(defaults, field.name)
        if isinstance(default, tuple):
            default = list(default)
        descriptor = ParameterDescriptor(description=field.metadata.get('description', ''))
        if isinstance(default, list) and not default:
            (item_type,) = typing.get_args(hints[field.name])[:1] or (str,)
            descriptor.type = _ARRAY_TYPES.get(item_type, ParameterType.PARAMETER_STRING_ARRAY)
            node.declare_parameter(field.name, descriptor.type, descriptor)
            value = node.get_parameter(field.name).value
            values[field.name] = list(value) if value is not None else []
            continue
        values[field.name] = node.declare_parameter(field.name, default, descriptor).value
    return from_dict(cls, values)
