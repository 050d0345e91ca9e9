"""Action merger node: an episode 'start' event restarts the merger (the previous episode's queue is dropped)."""
import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter

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
