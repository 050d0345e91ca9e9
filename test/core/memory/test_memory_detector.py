"""Failure rules (each triggered by constructed signals) and the learned failure head."""
import numpy as np
import pytest

from flow_rag_vla_ros.core.memory.detector import (FailureDetector, FailureHead, FailureSignals,
                                                   classify_failure)

GOAL = (0.1, 0.1, 0.1)


def sig(step=1, ee=(0.0, 0.0, 0.1), obj=(0.0, 0.0, 0.02), task='pick_and_place', **kw) -> FailureSignals:
    return FailureSignals(ee_pos=ee, goal_pos=kw.pop('goal', GOAL), object_pos=obj, step=step, task=task, **kw)


def test_success_and_normal_progress_are_not_failures():
    assert classify_failure(sig(obj=GOAL, table_force=500.0, step=50)) is None
    assert classify_failure([sig(step=i) for i in range(1, 10)]) is None


def test_collision_needs_sustained_table_pressure_or_object_off_table():
    grazing = [sig(step=i, table_force=10.0) for i in range(1, 10)]
    assert classify_failure(grazing) is None
    pressing = [sig(step=1, table_force=300.0), sig(step=2, table_force=300.0), sig(step=3, table_force=300.0)]
    assert classify_failure(pressing[:2]) is None and classify_failure(pressing) == 'collision'
    assert classify_failure(sig(obj=(0.0, 0.5, 0.02))) == 'collision'       # off the table's y extent
    assert classify_failure(sig(obj=(0.0, 0.0, -0.05), task='push')) == 'collision'  # fell off


def test_drop_after_lift_while_grasped():
    lifted = sig(step=1, ee=(0, 0, 0.08), obj=(0, 0, 0.08), finger_width=0.04,
                 left_finger_contact=True, right_finger_contact=True)
    falling = sig(step=2, ee=(0, 0, 0.1), obj=(0, 0, 0.05), finger_width=0.04)
    landed = sig(step=3, ee=(0, 0, 0.1), obj=(0.01, 0, 0.021), finger_width=0.04)
    assert classify_failure([lifted, falling]) is None
    assert classify_failure([lifted, falling, landed]) == 'drop'
    assert classify_failure([falling, landed]) is None  # never lifted while grasped


def test_grasp_failure_closing_on_air_and_slipping():
    open_near = sig(step=1, ee=(0.01, 0, 0.03), finger_width=0.07)
    closed_on_air = sig(step=2, ee=(0.01, 0, 0.03), finger_width=0.005)
    assert classify_failure([open_near, closed_on_air]) == 'grasp_failure'
    far_open = sig(step=1, ee=(0.1, 0, 0.03), finger_width=0.07)
    assert classify_failure([far_open, sig(step=2, ee=(0.01, 0, 0.03), finger_width=0.005)]) is None
    holding = sig(step=1, ee=(0, 0, 0.02), finger_width=0.04, left_finger_contact=True, right_finger_contact=True)
    rose_alone = sig(step=2, ee=(0, 0, 0.08), finger_width=0.04)
    assert classify_failure([holding, rose_alone]) == 'grasp_failure'


def test_push_overshoot_is_misalignment():
    start, goal = (0.0, -0.1, 0.02), (0.0, 0.0, 0.02)
    kw = dict(task='push', goal=goal, object_start=start)
    assert classify_failure(sig(obj=(0.0, 0.06, 0.02), **kw)) is None
    assert classify_failure(sig(obj=(0.0, 0.15, 0.02), **kw)) == 'misalignment'


def test_end_of_episode_misalignment_versus_timeout():
    assert classify_failure(sig(step=49, obj=(0.1, 0.1, 0.03), goal=(0.1, 0.1, 0.1))) is None
    assert classify_failure(sig(step=50, obj=(0.1, 0.1, 0.03), goal=(0.1, 0.1, 0.1))) == 'misalignment'
    assert classify_failure(sig(step=50, obj=(0.0, 0.0, 0.02))) == 'timeout'
    reach = FailureSignals(ee_pos=(0.0, 0.0, 0.0), goal_pos=GOAL, step=50, task='reach')
    assert classify_failure(reach) == 'timeout'


def test_from_state_matches_the_sim_state_layout():
    state = {'ee_pos': np.array([0, 0, 0.1]), 'goal_pos': np.array(GOAL), 'object_pos': np.array([0, 0, 0.02]),
             'object_start': np.zeros(3), 'finger_width': 0.07, 'left_finger_contact': False,
             'right_finger_contact': False, 'table_force': 0.0, 'step': 4}
    s = FailureSignals.from_state(state, 'pick_and_place')
    assert s.step == 4 and s.finger_width == 0.07 and s.object_pos is not None
    assert FailureSignals.from_state(state, 'reach').object_pos is None
    detector = FailureDetector()
    assert detector.update(s) is None and detector.armed is False  # ee 8 cm above the cube: not near


def _pairs(n, dim, rng):
    before = rng.standard_normal((n, dim)).astype(np.float32)
    y = rng.integers(0, 2, n)
    drift = np.zeros(dim, np.float32)
    drift[:4] = 1.5  # failures move the state along a direction, successes barely move
    after = before + 0.2 * rng.standard_normal((n, dim)).astype(np.float32) + y[:, None] * drift
    return before, after, y


def test_failure_head_learns_a_separable_problem_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    head = FailureHead(dim=32).fit(*_pairs(600, 32, rng))
    b, a, y = _pairs(300, 32, rng)
    pr = head.precision_recall(b, a, y)
    assert pr['precision'] > 0.9 and pr['recall'] > 0.9 and pr['n'] == 300
    head.save(tmp_path)
    loaded = FailureHead.load(tmp_path)
    assert np.allclose(loaded.predict_proba(b, a), head.predict_proba(b, a), atol=1e-6)
    with pytest.raises(ValueError):
        head.fit(b, a, np.full(300, 2))
