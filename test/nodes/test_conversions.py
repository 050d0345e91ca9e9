import numpy as np
import pytest
from sensor_msgs.msg import JointState

from flow_rag_vla_ros.nodes import conversions as cv


def test_image_round_trip_keeps_pixels_and_stamp():
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    msg = cv.array_to_image(image, 1_700_000_000_123_456_789, 'scene_camera')
    assert cv.stamp_to_ns(msg.header.stamp) == 1_700_000_000_123_456_789
    np.testing.assert_array_equal(cv.image_to_array(msg, (96, 96)), image)


@pytest.mark.parametrize('mutate, match', [
    (lambda m: setattr(m, 'encoding', 'bgr8'), 'encoding'),
    (lambda m: setattr(m, 'data', b''), 'empty'),
    (lambda m: setattr(m, 'data', bytes(m.data)[:-3]), 'bytes'),
])
def test_bad_images_raise_clear_errors(mutate, match):
    msg = cv.array_to_image(np.zeros((8, 8, 3), np.uint8), 1, 'cam')
    mutate(msg)
    with pytest.raises(ValueError, match=match):
        cv.image_to_array(msg)


def test_wrong_image_size_is_rejected():
    msg = cv.array_to_image(np.zeros((64, 64, 3), np.uint8), 1, 'cam')
    with pytest.raises(ValueError, match='expected 96x96'):
        cv.image_to_array(msg, (96, 96))


def test_proprio_round_trip_and_any_name_order():
    proprio = np.arange(7, dtype=np.float32) / 10
    msg = cv.proprio_to_msg(proprio, 5)
    np.testing.assert_allclose(cv.msg_to_proprio(msg), proprio, rtol=1e-6)
    order = [3, 0, 2, 1]
    shuffled = JointState(name=[msg.name[i] for i in order], position=[msg.position[i] for i in order],
                          velocity=[msg.velocity[i] for i in order])
    np.testing.assert_allclose(cv.msg_to_proprio(shuffled), proprio, rtol=1e-6)


@pytest.mark.parametrize('bad', [
    JointState(name=['ee_x', 'ee_y'], position=[0.0, 0.0]),
    JointState(name=['ee_x', 'ee_y', 'ee_z', 'finger_width'], position=[0.0, float('nan'), 0.0, 0.0]),
    JointState(name=['ee_x', 'ee_y', 'ee_z', 'finger_width'], position=[0.0, 0.0, 0.0]),
])
def test_bad_joint_states_raise(bad):
    with pytest.raises(ValueError):
        cv.msg_to_proprio(bad)


def test_chunk_round_trip_and_first_point_after_start():
    chunk = np.random.default_rng(1).uniform(-1, 1, (8, 4)).astype(np.float32)
    msg = cv.chunk_to_msg(chunk, 42, 'cam')
    assert msg.points[0].time_from_start.nanosec > 0
    assert msg.points[1].time_from_start.nanosec == 80_000_000
    np.testing.assert_allclose(cv.msg_to_chunk(msg), chunk, rtol=1e-6)


def test_features_round_trip_and_nan_rejected():
    tokens = np.random.default_rng(2).standard_normal((36, 112)).astype(np.float32)
    msg = cv.features_to_msg(tokens, 7, 'cam')
    assert (msg.height, msg.width, msg.encoding) == (36, 112, '32FC1')
    np.testing.assert_array_equal(cv.msg_to_features(msg), tokens)
    tokens[3, 4] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        cv.msg_to_features(cv.features_to_msg(tokens, 7, 'cam'))


def test_correction_round_trip_is_exact():
    chunk = np.random.default_rng(3).uniform(-1, 1, (8, 4)).astype(np.float32)
    c = cv.CorrectionMsg(123, chunk, 0.85, 'misalignment', 0.93, 17, 'stored')
    back = cv.msg_to_correction(cv.correction_to_msg(c, 'cam'))
    np.testing.assert_array_equal(back.chunk, chunk)
    assert (back.source_stamp_ns, back.failure_type, back.case_id, back.source) == (123, 'misalignment', 17, 'stored')
    assert back.confidence == pytest.approx(0.85)
    assert back.is_alarm
    all_clear = cv.msg_to_correction(cv.correction_to_msg(cv.CorrectionMsg(123, chunk, 0.0, '', 0.0, -1), 'cam'))
    assert not all_clear.is_alarm and all_clear.failure_type == ''


def test_command_rejects_nan():
    msg = cv.command_to_msg(np.zeros(4), 1, 'cam')
    msg.velocity[2] = float('inf')
    with pytest.raises(ValueError, match='NaN or inf'):
        cv.msg_to_command(msg)


def test_episode_events_picks_episode_statuses_only():
    msg = cv.diagnostic(5, 'cam', cv.EPISODE_STATUS, 'failure', {'failure_type': 'drop', 'episode': 2})
    msg.status += cv.diagnostic(5, 'cam', 'rag_correction', 'drop', {}).status
    msg.status += cv.diagnostic(5, 'cam', cv.EPISODE_STATUS, 'start', {'episode': 3}).status
    assert cv.episode_events(msg) == [('failure', {'failure_type': 'drop', 'episode': '2'}),
                                      ('start', {'episode': '3'})]
