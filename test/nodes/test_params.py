from dataclasses import dataclass

import pytest
import rclpy
from rclpy.parameter import Parameter

from flow_rag_vla_ros.core.config import load_node_parameters, param, require
from flow_rag_vla_ros.launcher import merged_params_file, parse_overrides
from flow_rag_vla_ros.nodes.params import declare_config


@dataclass
class DemoConfig:
    gain: float = param(0.5, 'a gain')
    name: str = param('x', 'a name')
    bounds: list[float] = param([-1.0, 1.0], 'bounds')
    tags: list[str] = param([], 'tags (empty list default)')

    def __post_init__(self):
        require(self.gain >= 0, 'gain must be >= 0')


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def test_declare_config_declares_descriptions_and_overrides(context):
    node = rclpy.create_node('demo', context=context,
                             parameter_overrides=[Parameter('gain', value=2)])
    cfg = declare_config(node, DemoConfig)
    assert cfg.gain == 2.0 and isinstance(cfg.gain, float)
    assert cfg.bounds == [-1.0, 1.0] and cfg.tags == []
    assert node.describe_parameter('gain').description == 'a gain'
    node.destroy_node()


def test_invalid_value_is_a_clear_error(context):
    node = rclpy.create_node('demo2', context=context, parameter_overrides=[Parameter('gain', value=-1.0)])
    with pytest.raises(ValueError, match='gain must be'):
        declare_config(node, DemoConfig)
    node.destroy_node()


def test_params_file_overrides_merge(tmp_path):
    base = tmp_path / 'base.yaml'
    base.write_text('sim:\n  ros__parameters:\n    task: reach\n    seed: 1\n')
    out = merged_params_file(base, parse_overrides(['sim.seed=5', 'flow_policy.backend=torch']), str(tmp_path))
    assert load_node_parameters(out, 'sim') == {'task': 'reach', 'seed': 5}
    assert load_node_parameters(out, 'flow_policy') == {'backend': 'torch'}
    with pytest.raises(ValueError):
        parse_overrides(['no_node_here'])
