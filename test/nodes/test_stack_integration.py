"""The real stack nodes over real rclpy: a command derived from a specific frame reaches the robot side."""
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from flow_rag_vla_ros.launcher import start_processes
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.conversions import array_to_image, proprio_to_msg, stamp_to_ns

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    """A small randomly initialised policy, saved in the shipped checkpoint format."""
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt'))


class RobotSide:
    """Plays the robot: publishes frames + proprio + instruction, records what comes back per stamp."""

    def __init__(self, context):
        self.node = rclpy.create_node('fake_robot', context=context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        n = self.node
        self.image_pub = n.create_publisher(Image, '/camera/image_raw', qos.SENSOR)
        self.state_pub = n.create_publisher(JointState, '/robot/ee_state', qos.SENSOR)
        self.instruction_pub = n.create_publisher(String, '/task/instruction', qos.LATCHED)
        self.seen: dict[str, set[int]] = {'features': set(), 'chunk': set(), 'command': set(), 'latency': set()}
        n.create_subscription(Image, '/vla/features', lambda m: self._saw('features', m), qos.SENSOR)
        n.create_subscription(JointTrajectory, '/vla/action_chunk', lambda m: self._saw('chunk', m), qos.RELIABLE)
        n.create_subscription(JointState, '/robot/command', lambda m: self._saw('command', m), qos.RELIABLE)
        n.create_subscription(DiagnosticArray, '/vla/latency', lambda m: self._saw('latency', m), qos.EVENTS)

    def _saw(self, what, msg):
        self.seen[what].add(stamp_to_ns(msg.header.stamp))

    def send(self, image_msg, stamp):
        self.state_pub.publish(proprio_to_msg(np.array([0.1, 0.0, 0.1, 0, 0, 0, 0], np.float32), stamp))
        self.image_pub.publish(image_msg)

    def wait_for(self, what, stamp, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if stamp in self.seen[what]:
                return True
        return False


@pytest.fixture(scope='module')
def running_stack(tiny_checkpoint):
    overrides = {n: {'checkpoint': str(tiny_checkpoint), 'backend': 'torch'}
                 for n in ('vision_encoder', 'flow_policy', 'rag_monitor')}
    overrides['rag_monitor']['directory'] = str(tiny_checkpoint / 'memory')
    del overrides['rag_monitor']['checkpoint'], overrides['rag_monitor']['backend']
    stack = start_processes(['vision_encoder', 'flow_policy', 'rag_monitor', 'action_merger'], overrides=overrides)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    robot = RobotSide(ctx)
    robot.instruction_pub.publish(String(data='reach the red target'))
    yield stack, robot
    robot.node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    stack.stop()
    assert all(p.returncode is not None for p in stack.processes.values())


def _frame(stamp):
    image = np.random.default_rng(stamp % 1000).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    return array_to_image(image, stamp, 'scene_camera')


def _first_answered_frame(robot, timeout=90.0):
    """Nodes load models at start: resend fresh frames until the stack answers one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamp = time.time_ns()
        robot.send(_frame(stamp), stamp)
        if robot.wait_for('command', stamp, 1.0):
            return stamp
    raise AssertionError('the stack never answered a frame')


def test_command_carries_the_stamp_of_its_camera_frame_through_every_hop(running_stack):
    stack, robot = running_stack
    _first_answered_frame(robot)
    stamp = time.time_ns()
    robot.send(_frame(stamp), stamp)
    assert robot.wait_for('command', stamp, 5.0)
    # each hop's message was published before the command it led to, but topics are delivered
    # independently: the command can reach this subscriber before the chunk does
    for hop in ('features', 'chunk', 'latency'):
        assert robot.wait_for(hop, stamp, 2.0), f'{hop} did not carry stamp {stamp}'
    assert all(stack.alive().values())


@pytest.mark.parametrize('corrupt', ['encoding', 'size', 'empty'])
def test_bad_image_is_dropped_and_the_next_frame_is_served(running_stack, corrupt):
    stack, robot = running_stack
    _first_answered_frame(robot)
    bad_stamp = time.time_ns()
    bad = _frame(bad_stamp)
    if corrupt == 'encoding':
        bad.encoding = 'mono8'
    elif corrupt == 'size':
        bad = array_to_image(np.zeros((64, 80, 3), np.uint8), bad_stamp, 'scene_camera')
    else:
        bad.data, bad.height, bad.width = b'', 0, 0
    robot.send(bad, bad_stamp)
    assert not robot.wait_for('command', bad_stamp, 1.0)
    good = time.time_ns()
    robot.send(_frame(good), good)
    assert robot.wait_for('command', good, 5.0)
    assert all(stack.alive().values())


@pytest.mark.parametrize('state', [
    JointState(name=['ee_x'], position=[0.0]),
    JointState(name=['ee_x', 'ee_y', 'ee_z', 'finger_width'], position=[0.0, float('nan'), 0.0, 0.0]),
])
def test_bad_joint_state_is_dropped_and_node_keeps_serving(running_stack, state):
    stack, robot = running_stack
    _first_answered_frame(robot)
    stamp = time.time_ns()
    state.header.stamp = _frame(stamp).header.stamp
    robot.state_pub.publish(state)
    robot.image_pub.publish(_frame(stamp))  # no valid proprio for this stamp -> no chunk for it
    robot.wait_for('command', stamp, 1.0)
    good = time.time_ns()
    robot.send(_frame(good), good)
    assert robot.wait_for('command', good, 5.0)
    assert all(stack.alive().values())
