"""A node's own process spins on the executor its `executor` parameter names; with the EventsExecutor it still
serves timers and subscriptions and stops cleanly on SIGINT and SIGTERM."""
import signal
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from flow_rag_vla_ros.launcher import start_processes
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.base import NodeProcessConfig
from flow_rag_vla_ros.nodes.conversions import key_values

pytestmark = pytest.mark.ros


def test_unknown_executor_is_refused():
    with pytest.raises(ValueError, match='executor'):
        NodeProcessConfig(executor='multi_threaded')


@pytest.mark.parametrize('stop_signal', [signal.SIGTERM, signal.SIGINT])
def test_events_executor_serves_the_merger_and_stops_on_a_signal(stop_signal):
    stack = start_processes(['action_merger'], overrides={'action_merger': {'executor': 'events'}})
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node('executor_probe', context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    holds = []  # with no chunk, the merger's control timer publishes a hold every period
    node.create_subscription(DiagnosticArray, '/vla/latency', lambda msg: holds.extend(
        kv['state'] for kv in map(key_values, msg.status) if kv.get('stage') == 'command'), qos.EVENTS)
    try:
        deadline = time.monotonic() + 60
        while len(holds) < 5 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert len(holds) >= 5 and set(holds) == {'hold_stale'}, holds
        merger = stack.processes['action_merger']
        merger.send_signal(stop_signal)
        started = time.monotonic()
        assert merger.wait(timeout=5) == 0  # main() returned: not killed, no traceback exit code
        assert time.monotonic() - started < 2.0
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        stack.stop()
