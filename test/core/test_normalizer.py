import numpy as np
import pytest
import torch

from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig
from flow_rag_vla_ros.core.modeling_flow_policy import FlowPolicy
from flow_rag_vla_ros.core.normalizer import MIN_STD, NormalizerStats, normalize, unnormalize


def test_stats_and_round_trip():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 8, 4))
    x[..., 3] = 0.0  # a constant dimension (blocked gripper)
    s = NormalizerStats.from_data(x)
    assert np.allclose(s.mean[:3], 3.0, atol=0.1) and np.allclose(s.std[:3], 2.0, atol=0.1)
    assert s.std[3] == MIN_STD
    m, sd = np.array(s.mean), np.array(s.std)
    np.testing.assert_allclose(unnormalize(normalize(x, m, sd), m, sd), x, atol=1e-12)
    assert np.allclose(normalize(x, m, sd)[..., 3], 0.0)


def test_invalid_stats():
    with pytest.raises(ValueError):
        NormalizerStats([0.0, 1.0], [1.0])
    with pytest.raises(ValueError):
        NormalizerStats([0.0], [0.0])


def test_policy_buffers_hold_stats():
    c = FlowPolicyConfig(backbone='small_cnn', image_size=32, d_model=32, n_heads=2, n_layers=1)
    p = FlowPolicy(c)
    prop, act = NormalizerStats([1.0] * 7, [2.0] * 7), NormalizerStats([0.5] * 4, [0.25] * 4)
    p.set_normalizer(prop, act)
    assert torch.allclose(p.proprio_std, torch.full((7,), 2.0)) and torch.allclose(p.action_mean, torch.full((4,), 0.5))
    assert p.normalizer_stats()['action'] == act
    assert {'proprio_mean', 'proprio_std', 'action_mean', 'action_std'} <= set(p.state_dict())
    with pytest.raises(ValueError):
        p.set_normalizer(NormalizerStats.identity(6), act)
