"""PandaEnv: layout of observations, red target, determinism and each ground-truth failure event."""
import numpy as np
import pytest

from flow_rag_vla_ros.core.spec import INSTRUCTIONS
from flow_rag_vla_ros.sim.panda_env import PandaEnv, SimConfig


def run_until_done(env, actions):
    """Apply actions (callable of state or fixed array) until the episode ends; return the last StepInfo."""
    state = env.privileged_state()
    while True:
        action = actions(state) if callable(actions) else actions
        _, info = env.step(action)
        state = info.state
        if info.done:
            return info


@pytest.fixture(scope='module')
def pick_env():
    env = PandaEnv(SimConfig(task='pick_and_place', render=False))
    yield env
    env.close()


def test_observation_layout_and_dtypes():
    env = PandaEnv(SimConfig(task='push', image_size=64, cameras=['scene', 'side']))
    obs = env.reset(seed=3)
    assert obs.image.shape == (64, 128, 3) and obs.image.dtype == np.uint8
    assert obs.proprio.shape == (7,) and obs.proprio.dtype == np.float32
    assert obs.instruction == INSTRUCTIONS['push'] and obs.step == 0
    assert obs.proprio[6] == 0.0  # blocked gripper: finger width 0
    np.testing.assert_allclose(obs.proprio[:3], env.privileged_state()['ee_pos'], atol=1e-6)
    obs, info = env.step(np.array([0.5, 0, 0, 1], np.float32))
    assert obs.step == 1 and not info.done and info.event == '' and info.failure_type == ''
    assert obs.proprio[3] > 0  # moving +x
    env.close()


def test_pick_and_place_proprio_has_finger_width(pick_env):
    obs = pick_env.reset(seed=0)
    for _ in range(3):
        obs, _ = pick_env.step(np.array([0, 0, 0, 1], np.float32))
    assert obs.proprio[6] > 0.03


def test_target_is_rendered_red():
    env = PandaEnv(SimConfig(task='push'))
    image = env.reset(seed=1).image.astype(int)
    red = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)
    green = (image[..., 1] > 150) & (image[..., 0] < 80) & (image[..., 2] < 80)
    assert red.sum() >= 10 and green.sum() >= 10  # the ghost target and the cube look different
    env.close()


def test_same_seed_same_frame_and_trajectory():
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 4)).astype(np.float32)

    def rollout():
        env = PandaEnv(SimConfig(task='pick_and_place', image_size=48))
        first = env.reset(seed=42).image
        proprio = [env.step(a)[0].proprio for a in actions]
        env.close()
        return first, np.stack(proprio)

    (f1, p1), (f2, p2) = rollout(), rollout()
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(p1, p2)


def test_reset_without_seed_follows_config_seed():
    a, b = (PandaEnv(SimConfig(task='reach', render=False, seed=7)) for _ in range(2))
    a.reset(), b.reset()
    first = a.episode_seed
    a.reset()
    assert first == b.episode_seed and a.episode_seed != first


@pytest.mark.parametrize('situations, seeds', [(0, [5, 6, 7, 8, 9]), (2, [5, 6, 5, 6, 5]), (1, [5] * 5)])
def test_episode_seed_cycles_through_the_situations(situations, seeds):
    config = SimConfig(seed=5, situations=situations)
    assert [config.episode_seed(i) for i in range(5)] == seeds


def test_negative_situations_are_rejected():
    with pytest.raises(ValueError, match='situations'):
        SimConfig(situations=-1)


def test_actions_are_clipped():
    env = PandaEnv(SimConfig(task='reach', render=False))
    env.reset(seed=0)
    big, _ = env.step(np.array([10, 0, 0, 0], np.float32))
    env.reset(seed=0)
    one, _ = env.step(np.array([1, 0, 0, 0], np.float32))
    np.testing.assert_allclose(big.proprio, one.proprio, atol=1e-6)


def test_timeout_and_max_steps_override():
    env = PandaEnv(SimConfig(task='push', render=False, max_steps=5))
    env.reset(seed=0)
    info = run_until_done(env, np.zeros(4, np.float32))  # holding still never succeeds
    assert (info.event, info.failure_type, env.steps, info.success) == ('timeout', 'timeout', 5, False)


def test_misalignment_when_ending_near_goal():
    env = PandaEnv(SimConfig(task='reach', render=False, max_steps=12))
    seed = next(k for k in range(50) if env.reset(seed=k) and env.privileged_state()['goal_distance'] > 0.12)
    env.reset(seed=seed)
    start = env.privileged_state()
    away = (start['ee_pos'] - start['goal_pos']) / start['goal_distance']
    park = start['goal_pos'] + 0.07 * away  # within 2x the threshold, approached from outside it
    info = run_until_done(env, lambda state: _move(state, park, 0, gain=0.5))
    assert (info.event, info.failure_type) == ('failure', 'misalignment')
    assert 0.05 < info.state['goal_distance'] < 0.1


def test_collision_when_pressing_into_table():
    env = PandaEnv(SimConfig(task='push', render=False))
    env.reset(seed=0)
    info = run_until_done(env, np.array([0, 0, -1, 0], np.float32))
    assert (info.event, info.failure_type) == ('failure', 'collision')
    assert info.state['table_force'] > 50 and env.steps < 10


def _move(state, target, gripper, gain=1.0):
    return np.append(np.clip(gain * (target - state['ee_pos']) / 0.05, -1, 1), gripper).astype(np.float32)


def test_grasp_failure_when_closing_on_air(pick_env):
    pick_env.reset(seed=0)

    def close_beside(state):  # open above the cube, close on air
        obj = state['object_pos']
        target = obj + np.array([0.0, 0.0, 0.036])  # fingertips just above the cube's top face
        at = np.linalg.norm(state['ee_pos'] - target) < 0.01 and state['finger_width'] > 0.05
        if at or getattr(close_beside, 'closing', False):
            close_beside.closing = True
            return _move(state, state['ee_pos'], -1)
        return _move(state, target, 1)
    info = run_until_done(pick_env, close_beside)
    assert info.failure_type == 'grasp_failure'


def test_drop_when_opening_mid_air(pick_env):
    from flow_rag_vla_ros.sim.experts import make_expert
    pick_env.reset(seed=0)
    expert = make_expert('pick_and_place', np.random.default_rng(0))

    def lift_then_open(state):
        if state['object_pos'][2] > 0.06:
            return np.array([0, 0, 0, 1], np.float32)
        a = expert.act(state)
        if state['left_finger_contact'] and state['right_finger_contact'] and expert.closing_steps >= 3:
            a[:3] = [0, 0, 1]  # straight up, away from the goal
        return a
    info = run_until_done(pick_env, lift_then_open)
    assert (info.event, info.failure_type) == ('failure', 'drop')


def test_creating_an_env_prints_nothing_on_stdout(capfd):
    """PyBullet's connect() printf()s its options; CLIs print results tables and JSON on the same stdout."""
    print('before', flush=True)
    env = PandaEnv(SimConfig(task='reach', render=False))
    print('after', flush=True)
    env.close()
    assert capfd.readouterr().out.split() == ['before', 'after']


def _physics_state(env) -> np.ndarray:
    c, panda, cube = env.client, env.ids['panda'], env.ids['object']
    joints = [v for j in range(c.getNumJoints(panda)) for v in c.getJointState(panda, j)[:2]]
    pose, vel = c.getBasePositionAndOrientation(cube), c.getBaseVelocity(cube)
    return np.array([*joints, *pose[0], *pose[1], *vel[0], *vel[1]])


@pytest.mark.parametrize('task', ['push', 'pick_and_place'])
def test_lookahead_predicts_the_expert_and_restores_the_state(task):
    from flow_rag_vla_ros.sim.experts import ExpertConfig, make_expert
    expert = make_expert(task, np.random.default_rng(0), ExpertConfig(action_noise=0.0, offset_m=0.0,
                                                                     gain_range=(1.0, 1.0)))
    wander = np.random.default_rng(3).uniform(-1, 1, (6, 4)).astype(np.float32)  # somewhere off the expert's path
    envs = {}
    for peek in (False, True):
        env = envs[peek] = PandaEnv(SimConfig(task=task, render=False))
        env.reset(seed=11)
        for a in wander:
            env.step(a)
    before = (envs[True].steps, envs[True].proprio().copy(), _physics_state(envs[True]))
    chunk = envs[True].lookahead(expert.act, 5)  # (5, 4)
    assert chunk.shape == (5, 4) and envs[True].steps == before[0]
    np.testing.assert_array_equal(envs[True].proprio(), before[1])
    np.testing.assert_array_equal(_physics_state(envs[True]), before[2])
    actions, state = [], envs[False].privileged_state()
    for _ in range(5):  # what the expert really does from this state in the run without the lookahead
        actions.append(expert.act(state))
        state = envs[False].step(actions[-1])[1].state
    np.testing.assert_array_equal(chunk, np.stack(actions))
    for env in envs.values():
        env.close()
