"""Scenarios change the physics / camera as documented, only in their region, and never leak."""
import numpy as np
import pytest

from flow_rag_vla_ros.sim import scenarios
from flow_rag_vla_ros.sim.panda_env import OBJECT_FRICTION, OBJECT_MASS, PandaEnv, SimConfig


def seed_where(env, inside: bool) -> int:
    return next(s for s in range(100) if env.reset(seed=s) is not None and env.scenario.in_region(env) == inside)


def dynamics(env):
    mass, friction = env.client.getDynamicsInfo(env.ids['object'], -1)[:2]
    return mass, friction


def test_list_and_unknown():
    assert {'slippery_zone', 'heavy_cube', 'shifted_camera', 'external_push'} <= set(scenarios.list_scenarios())
    with pytest.raises(ValueError):
        SimConfig(task='push', scenario='no_such_thing')


def test_slippery_zone_lowers_friction_in_region_only():
    env = PandaEnv(SimConfig(task='push', render=False, scenario='slippery_zone'))
    env.reset(seed=seed_where(env, True))
    assert env.object_start[1] > 0 and dynamics(env)[1] == pytest.approx(scenarios.SLIPPERY_FRICTION)
    env.reset(seed=seed_where(env, False))
    assert dynamics(env)[1] == pytest.approx(OBJECT_FRICTION)


def test_heavy_cube_mass_and_no_leak_into_plain_episodes():
    env = PandaEnv(SimConfig(task='pick_and_place', render=False, scenario='heavy_cube'))
    env.reset(seed=seed_where(env, True))
    assert dynamics(env)[0] == pytest.approx(OBJECT_MASS * scenarios.HEAVY_FACTOR)
    env.scenario = None  # scenario switched off: the next reset restores the default cube
    env.reset(seed=0)
    assert dynamics(env) == pytest.approx((OBJECT_MASS, OBJECT_FRICTION))


def test_shifted_camera_changes_the_frame_not_the_state():
    plain = PandaEnv(SimConfig(task='push', image_size=48))
    shifted = PandaEnv(SimConfig(task='push', image_size=48, scenario='shifted_camera'))
    a, b = plain.reset(seed=5), shifted.reset(seed=5)
    np.testing.assert_array_equal(a.proprio, b.proprio)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 5


def test_external_push_knocks_the_cube_once():
    env = PandaEnv(SimConfig(task='push', render=False, scenario='external_push'))
    env.reset(seed=seed_where(env, True))
    rng = np.random.default_rng(0)
    state = env.privileged_state()
    env.client.resetBaseVelocity(env.ids['object'], [0.6, 0, 0])  # the cube starts moving: > 2 cm next step
    _, info = env.step(np.zeros(4, np.float32))
    assert env.scenario.pushed and env.external_force is not None
    _, info = env.step(np.zeros(4, np.float32))
    assert info.state['object_vel'][1] > 0.3 and env.external_force is None  # knocked along +y
    state = info.state
    scenarios.apply_scenario(env, 'external_push', rng, state)  # already pushed this episode: no second push
    assert env.external_force is None


def test_apply_scenario_hook_on_a_plain_env():
    env = PandaEnv(SimConfig(task='push', render=False))
    env.reset(seed=seed_where_plain(env))
    scenarios.apply_scenario(env, 'slippery_zone', np.random.default_rng(0))
    assert dynamics(env)[1] == pytest.approx(scenarios.SLIPPERY_FRICTION)


def seed_where_plain(env) -> int:
    return next(s for s in range(100) if env.reset(seed=s) is not None and env.object_start[1] > 0)
