"""The recorder writes every stack message (raw CDR) to a rosbag2 that independent readers open."""
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from bag_helpers import T0, DT, camera_info, chunk_for, event, frame_image, proprio, wait_until
from diagnostic_msgs.msg import DiagnosticArray
from mcap_ros2.reader import read_ros2_messages
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from flow_rag_vla_ros.bag.reader import BagReader
from flow_rag_vla_ros.bag.recorder import RecorderConfig, recording
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.conversions import (array_to_image, chunk_to_msg, command_to_msg, diagnostic,
                                                image_to_array, msg_to_chunk, msg_to_command, msg_to_proprio,
                                                proprio_to_msg, stamp_to_ns)

pytestmark = pytest.mark.ros
N = 25
TOPICS = ['/camera/image_raw', '/camera/camera_info', '/robot/ee_state', '/task/instruction', '/task/events',
          '/vla/action_chunk', '/robot/command', '/vla/latency']


class Publisher:
    """Publishes a synthetic stream on the stack topics with the stack's QoS (own context)."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = n = rclpy.create_node('synthetic_stack', context=self.context)
        self.pubs = {'/camera/image_raw': n.create_publisher(Image, '/camera/image_raw', qos.SENSOR),
                     '/camera/camera_info': n.create_publisher(CameraInfo, '/camera/camera_info', qos.SENSOR),
                     '/robot/ee_state': n.create_publisher(JointState, '/robot/ee_state', qos.SENSOR),
                     '/task/instruction': n.create_publisher(String, '/task/instruction', qos.LATCHED),
                     '/task/events': n.create_publisher(DiagnosticArray, '/task/events', qos.EVENTS),
                     '/vla/action_chunk': n.create_publisher(JointTrajectory, '/vla/action_chunk', qos.RELIABLE),
                     '/robot/command': n.create_publisher(JointState, '/robot/command', qos.RELIABLE),
                     '/vla/latency': n.create_publisher(DiagnosticArray, '/vla/latency', qos.EVENTS)}

    def wait_matched(self):
        assert wait_until(lambda: all(p.get_subscription_count() > 0 for p in self.pubs.values()), 10.0)

    def stream(self):
        import time
        self.pubs['/task/events'].publish(event(T0, 'start', 0, seed=0))
        for i in range(N):
            stamp = T0 + i * DT
            self.pubs['/robot/ee_state'].publish(proprio_to_msg(proprio(i), stamp))
            self.pubs['/camera/camera_info'].publish(camera_info(stamp))
            self.pubs['/camera/image_raw'].publish(array_to_image(frame_image(i), stamp, 'scene_camera'))
            self.pubs['/vla/action_chunk'].publish(chunk_to_msg(chunk_for(np.full(4, i / N, np.float32)), stamp, 'c'))
            self.pubs['/robot/command'].publish(command_to_msg(np.full(4, -i / N), stamp, 'c'))
            self.pubs['/vla/latency'].publish(diagnostic(stamp, '', 'latency/chunk', 'chunk', {'stage_ms': i}))
            time.sleep(0.005)

    def close(self):
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def expected_counts():
    return {'/camera/image_raw': N, '/camera/camera_info': N, '/robot/ee_state': N, '/task/instruction': 1,
            '/task/events': 1, '/vla/action_chunk': N, '/robot/command': N, '/vla/latency': N}


def record(path, storage):
    pub = Publisher()
    try:
        # published before the recorder exists: the latched subscription must still get it
        pub.pubs['/task/instruction'].publish(String(data='reach the red target'))
        with recording(path, TOPICS, storage) as recorder:
            pub.wait_matched()
            assert wait_until(lambda: all(recorder.publisher_counts().values()), 10.0)
            pub.stream()
            assert wait_until(lambda: recorder.counts == expected_counts(), 10.0), recorder.counts
    finally:
        pub.close()


def check_messages(by_topic):
    """by_topic: topic -> list of (log_time_ns, message object with the rclpy field names)."""
    assert {t: len(v) for t, v in by_topic.items()} == expected_counts()
    assert by_topic['/task/instruction'][0][1].data == 'reach the red target'
    for topic in ('/camera/image_raw', '/camera/camera_info', '/robot/ee_state', '/vla/action_chunk',
                  '/robot/command', '/vla/latency'):
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in by_topic[topic]]
        assert stamps == [T0 + i * DT for i in range(N)], topic
    for i, (_, m) in enumerate(by_topic['/camera/image_raw']):
        assert (m.height, m.width, m.encoding) == (16, 16, 'rgb8')
        assert bytes(m.data) == frame_image(i).tobytes()
    for i, (_, m) in enumerate(by_topic['/robot/ee_state']):
        np.testing.assert_allclose(list(m.position), proprio(i)[[0, 1, 2, 6]], rtol=1e-6)
    for i, (_, m) in enumerate(by_topic['/vla/action_chunk']):
        assert len(m.points) == 8 and list(m.joint_names) == ['ee_dx', 'ee_dy', 'ee_dz', 'gripper']
        np.testing.assert_allclose([p.positions for p in m.points], chunk_for(np.full(4, i / N, np.float32)),
                                   rtol=1e-6)
    for i, (_, m) in enumerate(by_topic['/robot/command']):
        np.testing.assert_allclose(list(m.velocity), np.full(4, -i / N))
    for i, (_, m) in enumerate(by_topic['/vla/latency']):
        assert {kv.key: kv.value for kv in m.status[0].values} == {'stage_ms': str(i)}
    logs = sorted(t for msgs in by_topic.values() for t, _ in msgs)
    assert logs[-1] - logs[0] < 60 * 10**9  # receive times of this run, not the synthetic stamps
    assert all(t > 0 for t in logs)


def test_mcap_bag_is_read_back_by_the_independent_mcap_reader(tmp_path):
    bag = tmp_path / 'run'
    record(bag, 'mcap')
    mcap_files = list(bag.glob('*.mcap'))
    assert len(mcap_files) == 1 and (bag / 'metadata.yaml').is_file()
    by_topic = {}
    for m in read_ros2_messages(str(mcap_files[0])):
        assert m.schema.encoding == 'ros2msg' and m.channel.message_encoding == 'cdr'
        by_topic.setdefault(m.channel.topic, []).append((m.log_time_ns, m.ros_msg))
    check_messages(by_topic)
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['storage_identifier'] == 'mcap' and meta['version'] == 9
    topics = {t['topic_metadata']['name']: t for t in meta['topics_with_message_count']}
    assert topics['/camera/image_raw']['topic_metadata']['type'] == 'sensor_msgs/msg/Image'
    assert topics['/camera/image_raw']['topic_metadata']['offered_qos_profiles'][0]['reliability'] == 'best_effort'
    assert topics['/task/instruction']['topic_metadata']['offered_qos_profiles'][0]['durability'] == 'transient_local'


def test_sqlite3_bag_round_trips_through_the_project_reader(tmp_path):
    bag = tmp_path / 'run_db'
    record(bag, 'sqlite3')
    assert list(bag.glob('*.db3'))
    by_topic = {}
    with BagReader(bag) as reader:
        assert reader.topics['/robot/command'].msgtype == 'sensor_msgs/msg/JointState'
        for m in reader.messages():
            by_topic.setdefault(m.topic, []).append((m.log_time_ns, m.msg))
    check_messages(by_topic)
    # the rclpy messages work with the project's conversions
    _, first = by_topic['/camera/image_raw'][0]
    np.testing.assert_array_equal(image_to_array(first), frame_image(0))
    np.testing.assert_allclose(msg_to_proprio(by_topic['/robot/ee_state'][3][1]), proprio(3), rtol=1e-6)
    np.testing.assert_allclose(msg_to_chunk(by_topic['/vla/action_chunk'][2][1]),
                               chunk_for(np.full(4, 2 / N, np.float32)), rtol=1e-6)
    np.testing.assert_allclose(msg_to_command(by_topic['/robot/command'][5][1]), np.full(4, -5 / N), rtol=1e-6)
    assert stamp_to_ns(first.header.stamp) == T0


def test_recorder_config_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match='not a stack topic'):
        RecorderConfig(topics=['/my/topic'])
    with pytest.raises(ValueError, match='unknown'):
        RecorderConfig(topics=['/my/topic:nope_msgs/msg/Thing'])
    with pytest.raises(ValueError, match='storage'):
        RecorderConfig(storage='rosbag1')
    RecorderConfig(topics=['/my/cam:sensor_msgs/msg/Image'])  # any standard type under another name
    (tmp_path / 'exists').mkdir()
    with pytest.raises(FileExistsError, match='exists'):
        with recording(tmp_path / 'exists'):
            pass


def test_record_command_runs_for_a_duration_and_writes_a_readable_bag(tmp_path):
    from flow_rag_vla_ros.cli import main
    bag = tmp_path / 'cli_bag'
    assert main(['record', '--out', str(bag), '--duration', '0.5', '--storage', 'sqlite3',
                 '--topics', '/robot/command', '/my/cam:sensor_msgs/msg/Image']) == 0
    with BagReader(bag) as reader:
        assert set(reader.topics) == {'/robot/command', '/my/cam'}
    with pytest.raises(SystemExit, match='not a stack topic'):
        main(['record', '--out', str(tmp_path / 'x'), '--topics', '/unknown'])
    assert Path(bag / 'metadata.yaml').is_file()


def test_record_command_stops_cleanly_on_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    bag = tmp_path / 'sigterm_bag'
    proc = subprocess.Popen([sys.executable, '-m', 'flow_rag_vla_ros.cli', 'record', '--out', str(bag)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        assert wait_until(lambda: bag.exists(), 30.0)
        pub = Publisher()
        try:
            assert wait_until(lambda: pub.pubs['/robot/command'].get_subscription_count() > 0, 10.0)
            for i in range(5):
                pub.pubs['/robot/command'].publish(command_to_msg(np.full(4, i / 10), T0 + i * DT, 'c'))
            time.sleep(1.0)  # reliable delivery to the other process; its counts are not visible from here
        finally:
            pub.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    with BagReader(bag) as reader:
        commands = [m for m in reader.messages(['/robot/command'])]
    assert [m.stamp_ns for m in commands] == [T0 + i * DT for i in range(5)]
