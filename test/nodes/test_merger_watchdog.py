"""Killing the policy node mid-run: the merger holds within 2 control periods and resumes after a restart."""
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from flow_rag_vla_ros.launcher import start_processes
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.conversions import array_to_image, key_values, proprio_to_msg

pytestmark = [pytest.mark.ros, pytest.mark.slow]
PERIOD = 0.04


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt'))


class Robot:
    """Publishes frames at 25 Hz like a camera; logs (receive time, state) of every merged command."""

    def __init__(self, context):
        self.node = n = rclpy.create_node('watchdog_robot', context=context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=context)
        self.executor.add_node(n)
        self.image_pub = n.create_publisher(Image, '/camera/image_raw', qos.SENSOR)
        self.state_pub = n.create_publisher(JointState, '/robot/ee_state', qos.SENSOR)
        n.create_publisher(String, '/task/instruction', qos.LATCHED).publish(String(data='reach the red target'))
        self.commands: list[tuple[float, str]] = []
        n.create_subscription(DiagnosticArray, '/vla/latency', self.on_latency, qos.EVENTS)
        self.image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
        n.create_timer(PERIOD, self.on_frame)

    def on_frame(self):
        stamp = time.time_ns()
        self.state_pub.publish(proprio_to_msg(np.array([0.1, 0, 0.1, 0, 0, 0, 0], np.float32), stamp))
        self.image_pub.publish(array_to_image(self.image, stamp, 'scene_camera'))

    def on_latency(self, msg):
        for status in msg.status:
            kv = key_values(status)
            if kv.get('stage') == 'command':
                self.commands.append((time.monotonic(), kv['state']))

    def spin_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def spin_until(self, predicate, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)
            if predicate():
                return True
        return False


def test_merger_holds_when_policy_dies_and_resumes_after_restart(tiny_checkpoint):
    overrides = {n: {'checkpoint': str(tiny_checkpoint), 'backend': 'torch'} for n in ('vision_encoder', 'flow_policy')}
    overrides['action_merger'] = {'control_period_s': PERIOD, 'stale_timeout_s': 2 * PERIOD}
    stack = start_processes(['vision_encoder', 'flow_policy', 'action_merger'], overrides=overrides)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    robot = Robot(ctx)
    try:
        ok = lambda: sum(1 for _, s in robot.commands if s == 'ok') >= 10  # noqa: E731
        assert robot.spin_until(ok, 120), 'stack never produced commands'
        stack.kill_node('flow_policy')  # SIGKILL: no goodbye
        robot.spin_for(1.0)
        last_ok = max(t for t, s in robot.commands if s == 'ok')
        holds = [t for t, s in robot.commands if s == 'hold_stale' and t > last_ok]
        assert holds, 'merger never held after the policy died'
        assert holds[0] - last_ok <= 2 * PERIOD + 0.03, f'held only {holds[0] - last_ok:.3f} s after the last chunk'
        assert all(s != 'ok' for t, s in robot.commands if t > holds[0])

        n_before = len(robot.commands)
        stack.restart_node('flow_policy')
        resumed = lambda: any(s == 'ok' for _, s in robot.commands[n_before:])  # noqa: E731
        assert robot.spin_until(resumed, 120), 'merger did not resume after the policy restarted'
    finally:
        robot.node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        stack.stop()
