import numpy as np
import pytest
import torch

from flow_rag_vla_ros.core import flow_matching as fm


def test_euler_exact_for_constant_velocity():
    noise = torch.randn(3, 8, 4)
    c = torch.randn(3, 8, 4)
    out = fm.euler_integrate(lambda x, t: c, noise, steps=7)
    torch.testing.assert_close(out, noise - c)


def test_heun_exact_for_velocity_affine_in_t():
    a, b = np.random.default_rng(0).standard_normal((2, 8, 4))
    noise = np.zeros((8, 4))
    out = fm.heun_integrate(lambda x, t: a + b * t, noise, steps=3)
    # x(0) = x(1) - integral_0^1 (a + b t) dt = -(a + b / 2)
    np.testing.assert_allclose(out, -(a + b / 2), atol=1e-12)


def test_euler_is_not_exact_for_time_varying_field():
    b = np.ones((2, 2))
    out = fm.euler_integrate(lambda x, t: b * t, np.zeros((2, 2)), steps=4)
    assert not np.allclose(out, -b / 2)


def test_interpolation_endpoints_and_target_velocity():
    a, n = torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    torch.testing.assert_close(fm.interpolate(a, n, torch.ones(2, 1, 1)), n)
    torch.testing.assert_close(fm.interpolate(a, n, torch.zeros(2, 1, 1)), a)
    t = torch.full((2, 1, 1), 0.3)
    eps = 1e-3
    fd = (fm.interpolate(a, n, t + eps) - fm.interpolate(a, n, t)) / eps
    torch.testing.assert_close(fd, fm.target_velocity(a, n), atol=1e-3, rtol=1e-3)


def test_flow_integration_recovers_actions_from_true_velocity():
    actions, noise = torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    out = fm.integrate(lambda x, t: fm.target_velocity(actions, noise), noise, 10, 'heun')
    torch.testing.assert_close(out, actions)


@pytest.mark.parametrize('dist', ['beta', 'uniform'])
def test_sample_time_range(dist):
    t = fm.sample_time(10000, dist, generator=torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() <= 1.0
    if dist == 'beta':  # Beta(1.5, 1) has mean 0.6
        assert abs(float(t.mean()) - 0.6) < 0.02


def test_bad_arguments():
    with pytest.raises(ValueError):
        fm.time_grid(0)
    with pytest.raises(ValueError):
        fm.integrate(lambda x, t: x, np.zeros(2), 2, 'rk4')
    with pytest.raises(ValueError):
        fm.sample_time(4, 'normal')
