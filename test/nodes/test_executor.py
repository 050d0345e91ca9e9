"""A node's own process spins on the executor its `executor` parameter names; with the EventsExecutor it still
serves timers, subscriptions and the monitor's retrieval thread, and stops cleanly on SIGINT and SIGTERM."""
import signal
import time
from contextlib import contextmanager

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from flow_rag_vla_ros.launcher import start_processes
from flow_rag_vla_ros.nodes import qos
from flow_rag_vla_ros.nodes.base import NodeProcessConfig
from flow_rag_vla_ros.nodes.conversions import features_to_msg, key_values, proprio_to_msg

pytestmark = pytest.mark.ros


@contextmanager
def events_node_and_probe(name: str, stage: str, field: str):
    """Node `name` as its own process on the EventsExecutor, and a probe node in this process that collects `field`
    of every latency record of `stage`: yields (node process, probe node, probe executor, records)."""
    stack = start_processes([name], overrides={name: {'executor': 'events'}})
    ctx, node = rclpy.Context(), None
    try:
        rclpy.init(context=ctx)
        node = rclpy.create_node(f'{name}_probe', context=ctx)
        executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        records = []
        node.create_subscription(DiagnosticArray, '/vla/latency', lambda msg: records.extend(
            kv[field] for kv in map(key_values, msg.status) if kv.get('stage') == stage), qos.EVENTS)
        yield stack.processes[name], node, executor, records
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        stack.stop()


def test_unknown_executor_is_refused():
    with pytest.raises(ValueError, match='executor'):
        NodeProcessConfig(executor='multi_threaded')


@pytest.mark.parametrize('stop_signal', [signal.SIGTERM, signal.SIGINT])
def test_events_executor_serves_the_merger_and_stops_on_a_signal(stop_signal):
    # with no chunk, the merger's control timer publishes a hold every period
    with events_node_and_probe('action_merger', 'command', 'state') as (merger, _, executor, holds):
        deadline = time.monotonic() + 60
        while len(holds) < 5 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert len(holds) >= 5 and set(holds) == {'hold_stale'}, holds
        merger.send_signal(stop_signal)
        started = time.monotonic()
        assert merger.wait(timeout=5) == 0  # main() returned: not killed, no traceback exit code
        assert time.monotonic() - started < 2.0


def test_events_executor_leaves_the_monitors_retrieval_thread_running():
    """The monitor's verdicts come from its own thread: the executor must not hold the GIL while it waits."""
    import numpy as np
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float32MultiArray
    # the retrieval thread reports a 'correction' latency record for every frame it assessed
    with events_node_and_probe('rag_monitor', 'correction', 'stage') as (monitor, node, executor, assessed):
        language = node.create_publisher(Float32MultiArray, '/vla/instruction_embedding', qos.LATCHED)
        language.publish(Float32MultiArray(data=[384 ** -0.5] * 384))
        ee_state = node.create_publisher(JointState, '/robot/ee_state', qos.SENSOR)
        features = node.create_publisher(Image, '/vla/features', qos.SENSOR)
        tokens = np.random.default_rng(0).random((72, 112), np.float32)
        deadline = time.monotonic() + 60
        while len(assessed) < 3 and time.monotonic() < deadline:
            stamp = time.time_ns()
            ee_state.publish(proprio_to_msg(np.zeros(7, np.float32), stamp))
            features.publish(features_to_msg(tokens, stamp, 'scene_camera'))
            end = time.monotonic() + 0.05
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.01)
        assert len(assessed) >= 3, 'the monitor assessed no frame on the EventsExecutor'
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(timeout=5) == 0


def test_composed_run_stops_cleanly_when_a_signal_ends_the_context_inside_spin(monkeypatch):
    """A signal can shut the context down while the MultiThreadedExecutor builds its wait set: rclpy then raises
    RCLError ('the given context is not valid'), not ExternalShutdownException. The composed process must stop
    as it does on the latter: nodes closed, no traceback. An error while the context is fine still raises."""
    from rclpy.executors import MultiThreadedExecutor

    from flow_rag_vla_ros.launcher import run_composed
    from flow_rag_vla_ros.nodes.action_merger_node import ActionMergerNode

    closed = []
    monkeypatch.setattr(ActionMergerNode, 'close', lambda self: closed.append(type(self).__name__))

    def shut_down_then_fail(self, *args, **kwargs):
        rclpy.shutdown()
        raise RuntimeError('failed to initialize wait set: the given context is not valid')

    monkeypatch.setattr(MultiThreadedExecutor, 'spin', shut_down_then_fail)
    run_composed(['action_merger'])
    assert closed == ['ActionMergerNode']

    def fail(self, *args, **kwargs):
        raise RuntimeError('a real bug')

    monkeypatch.setattr(MultiThreadedExecutor, 'spin', fail)
    with pytest.raises(RuntimeError, match='a real bug'):
        run_composed(['action_merger'])
    assert closed == ['ActionMergerNode'] * 2 and not rclpy.ok()
