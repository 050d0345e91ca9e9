"""Action merger node: an episode 'start' event restarts the merger (the previous episode's queue is dropped);
the instruction's task picks the splice mode."""
import time

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter

from flow_rag_vla_ros.core.spec import INSTRUCTIONS
from flow_rag_vla_ros.nodes.action_merger_node import ActionMergerNode
from flow_rag_vla_ros.nodes.conversions import EPISODE_STATUS, chunk_to_msg, diagnostic

pytestmark = pytest.mark.ros
S, DT = 1_000_000_000, 40_000_000


@pytest.mark.parametrize('events_topic', ['/task/events', ''])
def test_start_event_drops_the_previous_episodes_queue(events_topic):
    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        node = ActionMergerNode(context=context, parameter_overrides=[
            Parameter('clock', value='frames'), Parameter('events_topic', value=events_topic)])
        for k in range(2):
            node.on_chunk(chunk_to_msg(np.full((8, 4), 0.5, np.float32), S + k * DT, 'scene_camera'))
        assert node.merger.remaining(S + DT) > 0
        subscribed = {sub.topic_name for sub in node.subscriptions}
        assert ('/task/events' in subscribed) == bool(events_topic)  # '' = never restarts
        if not events_topic:
            return
        start = diagnostic(S + DT, 'scene_camera', EPISODE_STATUS, 'start', {'episode': 1})
        other = diagnostic(S + DT, 'scene_camera', EPISODE_STATUS, 'success', {'episode': 0})
        node.on_event(other)  # what the subscription delivers
        assert node.merger.remaining(S + DT) > 0  # only 'start' restarts
        node.on_event(start)
        assert node.merger.remaining(S + DT) == 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize('ack_topic', ['/action_merger/restarted', ''])
def test_restart_is_acknowledged_with_the_start_events_stamp(ack_topic):
    """A lockstep sim or replay sends the next episode's first frame only after this acknowledgement."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    from flow_rag_vla_ros.nodes import qos
    from flow_rag_vla_ros.nodes.conversions import RESTART_ACK, stamp_to_ns
    context = rclpy.Context()
    rclpy.init(context=context)
    node = listener = None
    try:
        node = ActionMergerNode(context=context, parameter_overrides=[
            Parameter('clock', value='frames'), Parameter('restart_ack_topic', value=ack_topic)])
        listener = rclpy.create_node('ack_listener', context=context)
        acks = []
        listener.create_subscription(DiagnosticArray, '/action_merger/restarted', acks.append, qos.EVENTS)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        published = {t for t, _ in node.get_publisher_names_and_types_by_node('action_merger', '/')}
        assert ('/action_merger/restarted' in published) == bool(ack_topic)
        if not ack_topic:
            return
        deadline = time.monotonic() + 5.0  # discovery: the ack is volatile, so wait until the listener matched
        while node.restart_ack_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        node.on_event(diagnostic(S + DT, 'scene_camera', EPISODE_STATUS, 'success', {'episode': 0}))
        node.on_event(diagnostic(S + DT, 'scene_camera', EPISODE_STATUS, 'start', {'episode': 1}))
        deadline = time.monotonic() + 5.0
        while not acks and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        executor.spin_once(timeout_sec=0.2)  # a (wrong) ack of the 'success' event would be here by now
        assert [stamp_to_ns(a.header.stamp) for a in acks] == [S + DT]  # only 'start' is acknowledged
        assert acks[0].status[0].name == RESTART_ACK
    finally:
        for n in (listener, node):
            if n is not None:
                n.destroy_node()
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize('text, mode', [(INSTRUCTIONS['push'], 'replace'), (INSTRUCTIONS['reach'], 'ensemble'),
                                        ('stack the blocks', 'ensemble')])
def test_the_instruction_picks_the_splice_mode(text, mode):
    from std_msgs.msg import String
    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        node = ActionMergerNode(context=context, parameter_overrides=[
            Parameter('splice_mode_by_task', value=['push:replace'])])
        assert '/task/instruction' in {sub.topic_name for sub in node.subscriptions}
        node.on_instruction(String(data=text))  # what the latched subscription delivers
        assert node.merger.executor.mode == mode
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_a_control_tick_after_shutdown_publishes_nothing_and_does_not_raise():
    """SIGTERM shuts the context down while the executor may still run a due timer: its command must not try to
    publish (the EventsExecutor logs an escaped 'publisher's context is invalid' as FATAL). The guard sits in the
    one place every command leaves, so the sequential deadline timer is covered too."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        node = ActionMergerNode(context=context, parameter_overrides=[Parameter('clock', value='time')])
        node.on_chunk(chunk_to_msg(np.full((8, 4), 0.5, np.float32), time.time_ns(), 'scene_camera'))
        assert node.merger.tick(time.time_ns()) is not None  # a tick now would publish a command
        rclpy.shutdown(context=context)
        node.on_timer()
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
