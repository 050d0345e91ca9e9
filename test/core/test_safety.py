import numpy as np
import pytest

from flow_rag_vla_ros.core.safety import SafetyFilter, chunk_problem

LOW, HIGH, DELTA = [-1.0] * 4, [1.0] * 4, [0.5, 0.5, 0.5, 2.0]


def test_clamps_to_bounds():
    f = SafetyFilter(LOW, HIGH, [10.0] * 4)
    np.testing.assert_array_equal(f.apply([3.0, -2.0, 0.2, 1.5]), [1.0, -1.0, 0.2, 1.0])


def test_rate_limit_starts_from_the_initial_hold_and_follows_each_command():
    f = SafetyFilter(LOW, HIGH, DELTA, gripper_hold_value=-1.0)
    np.testing.assert_allclose(f.apply([1.0, -1.0, 0.1, 1.0]), [0.5, -0.5, 0.1, 1.0])
    np.testing.assert_allclose(f.apply([1.0, -1.0, 0.1, 1.0]), [1.0, -1.0, 0.1, 1.0])
    np.testing.assert_allclose(f.apply([-1.0, 1.0, 0.1, -1.0]), [0.5, -0.5, 0.1, -1.0])


def test_non_finite_action_is_refused_and_leaves_the_reference_unchanged():
    f = SafetyFilter(LOW, HIGH, DELTA)
    f.apply([0.4, 0.0, 0.0, 0.5])
    for bad in ([np.nan, 0, 0, 0], [0, np.inf, 0, 0], [0, 0, -np.inf, 0], [0, 0, 0]):
        assert f.apply(bad) is None
    np.testing.assert_allclose(f.last, [0.4, 0.0, 0.0, 0.5])


def test_hold_is_zero_motion_with_the_gripper_unchanged():
    f = SafetyFilter(LOW, HIGH, DELTA, gripper_hold_value=0.25)
    np.testing.assert_array_equal(f.hold(), [0.0, 0.0, 0.0, 0.25])  # before any command
    f.apply([0.5, 0.5, -0.5, 1.0])
    np.testing.assert_array_equal(f.hold(), [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(f.apply([1.0, 1.0, 1.0, 1.0]), [0.5, 0.5, 0.5, 1.0])  # resume from hold: limited


def test_chunk_problem_names_what_is_wrong():
    good = np.zeros((8, 4))
    assert chunk_problem(good) == ''
    nan = good.copy()
    nan[3, 1] = np.nan
    assert 'step 3 dim 1' in chunk_problem(nan)
    inf = good.copy()
    inf[0, 0] = np.inf
    assert 'non-finite' in chunk_problem(inf)
    assert 'shape' in chunk_problem(np.zeros((8, 3)))
    assert 'shape' in chunk_problem(np.zeros((0, 4)))
    assert chunk_problem(None) != '' and chunk_problem([['a'] * 4]) != ''


@pytest.mark.parametrize('low, high, delta, grip', [
    ([-1.0] * 3, HIGH, DELTA, 0.0),                # wrong length
    ([0.1, -1, -1, -1], HIGH, DELTA, 0.0),         # zero motion outside the bounds
    (LOW, HIGH, [0.5, 0.5, 0.0, 2.0], 0.0),        # non-positive rate limit
    (LOW, HIGH, DELTA, 2.0),                       # hold gripper outside its bounds
    (LOW, [1, 1, np.nan, 1], DELTA, 0.0),          # non-finite bound
])
def test_invalid_settings_raise(low, high, delta, grip):
    with pytest.raises(ValueError):
        SafetyFilter(low, high, delta, grip)
