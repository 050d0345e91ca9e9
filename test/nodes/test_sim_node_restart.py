"""Lockstep sim node: an episode's first frame waits for the merger's acknowledgement of the 'start' event.

DDS orders messages per topic, not across topics: without the wait, the new episode's first frame (and its
chunk) could reach the merger before the 'start' event, and the first command of the episode would come
from the previous episode's queue. Callbacks are driven directly; the merger side of the handshake is
tested in test_merger_node_events.py.
"""
import time

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter

from flow_rag_vla_ros.nodes.conversions import EPISODE_STATUS, command_to_msg, restart_ack
from flow_rag_vla_ros.nodes.sim_node import SimNode

pytestmark = pytest.mark.ros
ACTION = np.array([0.1, 0.0, 0.0, 0.0], np.float32)


@pytest.fixture
def make_sim():
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def make(**params):
        overrides = [Parameter('episodes', value=2), Parameter('image_size', value=32),
                     Parameter('command_timeout_s', value=0.2)]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        node = SimNode(context=context, parameter_overrides=overrides)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def answer_warm_up(sim: SimNode) -> int:
    """The stack answers the warm-up frame: episode 0 starts. Returns the 'start' event's stamp."""
    warm_up = sim.frame_stamp_ns
    sim.on_command(command_to_msg(ACTION, warm_up, 'scene_camera'))
    assert sim.episode == 0
    return warm_up


def ack(stamp: int):
    return restart_ack(stamp, 'scene_camera')


def test_first_frame_of_an_episode_waits_for_the_restart_acknowledgement(make_sim):
    sim = make_sim()
    start = answer_warm_up(sim)
    assert sim.frames_published == 0 and sim.frame_stamp_ns == start  # no episode frame yet
    sim.on_command(command_to_msg(ACTION, start, 'scene_camera'))  # a repeated answer to the warm-up frame
    assert sim.steps == 0  # ... must not step the new episode
    sim.on_restart_ack(ack(start - 1))  # an acknowledgement of another start
    assert sim.frames_published == 0
    sim.on_restart_ack(ack(start))
    assert sim.frames_published == 1 and sim.frame_stamp_ns > start
    sim.on_command(command_to_msg(ACTION, sim.frame_stamp_ns, 'scene_camera'))
    assert sim.steps == 1
    assert sim.unacknowledged_starts == 0


def test_missing_acknowledgement_starts_the_episode_after_the_timeout(make_sim):
    sim = make_sim()
    start = answer_warm_up(sim)
    sim.on_timer()
    assert sim.frames_published == 0  # not overdue yet
    time.sleep(0.25)  # command_timeout_s 0.2
    sim.on_timer()
    assert sim.frames_published == 1 and sim.frame_stamp_ns > start
    assert sim.unacknowledged_starts == 1
    sim.on_restart_ack(ack(start))  # a late acknowledgement changes nothing
    assert sim.frames_published == 1


@pytest.mark.parametrize('params', [{'restart_ack_topic': ''}, {'clock_mode': 'realtime'}])
def test_no_wait_when_disabled_or_in_real_time(make_sim, params):
    sim = make_sim(**params)
    if params.get('clock_mode') == 'realtime':
        sim.last_command = ACTION  # real time: the first answer that arrived starts the run on a timer tick
        sim.on_timer()
    else:
        answer_warm_up(sim)
    assert sim.episode == 0 and sim.frames_published == 1
    assert sim.awaiting_restart is None


def test_start_event_carries_the_stamp_that_is_acknowledged(make_sim):
    """The merger acknowledges with the event's own stamp: the event must carry the stamp the sim waits for."""
    sim = make_sim()
    events = []
    sim.events_pub.publish = events.append  # the message as published
    start = answer_warm_up(sim)
    (event,) = events
    assert event.status[0].name == EPISODE_STATUS and event.status[0].message == 'start'
    assert event.header.stamp.sec * 10**9 + event.header.stamp.nanosec == start == sim.awaiting_restart[0]


def test_callbacks_after_close_leave_the_disconnected_physics_alone(make_sim):
    # a run ends by closing the sim while an executor thread may still deliver its timer or a command
    sim = make_sim(clock_mode='realtime')
    stamp = sim.frame_stamp_ns
    sim.close()
    sim.on_timer()  # would render the warm-up frame again
    sim.on_command(command_to_msg(np.zeros(4, np.float32), stamp, 'scene_camera'))
    sim.on_timer()  # with a command in hand it would reset the env and start an episode
    assert sim.closed and sim.episode < 0


@pytest.mark.parametrize('clock_mode', ['lockstep', 'realtime'])
def test_the_instruction_is_sent_again_until_the_stack_answers(make_sim, clock_mode):
    sim = make_sim(clock_mode=clock_mode)
    sent = []
    sim.instruction_pub = type('Pub', (), {'publish': staticmethod(sent.append)})()
    sim.on_timer()
    assert sent == []  # just sent at start
    sim.instruction_sent_ns -= 10 ** 9  # a second later, still no answer
    sim.on_timer()
    assert [m.data for m in sent] == [sim.obs.instruction]
    sim.on_command(command_to_msg(ACTION, sim.frame_stamp_ns, 'scene_camera'))  # the stack answers
    if clock_mode == 'realtime':
        sim.on_timer()  # realtime starts the episode on the next tick
    assert sim.episode == 0  # episodes run: the instruction goes out once per episode, not every 0.5 s
    n = len(sent)
    sim.instruction_sent_ns -= 10 ** 9
    sim.on_timer()
    assert len(sent) == n


def test_realtime_sim_holds_when_no_command_arrived_since_its_last_frame(make_sim):
    """The driver side's own command timeout (one step): when the stack's commands stop - a dead merger, or a
    Fast DDS send block in its process (README, node graph) - the arm stops moving and keeps its gripper, rather
    than repeating the last command."""
    sim = make_sim(clock_mode='realtime', rate_hz=1000.0)  # the test drives the timer callback itself
    sim.timer.cancel()
    sim.on_command(command_to_msg(ACTION, sim.frame_stamp_ns, 'scene_camera'))
    sim.on_timer()  # the stack answered the warm-up frame: episode 0 starts
    assert sim.episode == 0
    applied = []
    step = sim.env.step
    sim.env.step = lambda action: (applied.append(np.array(action)), step(action))[1]
    grip = np.array([0.2, -0.1, 0.05, 0.7], np.float32)
    sim.on_command(command_to_msg(grip, sim.frame_stamp_ns, 'scene_camera'))
    sim.on_timer()  # a command arrived since the last frame: executed
    sim.on_timer()  # none since: hold
    sim.on_timer()
    np.testing.assert_allclose(applied[0], grip, atol=1e-6)
    for hold in applied[1:]:
        np.testing.assert_allclose(hold, [0.0, 0.0, 0.0, 0.7], atol=1e-6)
    assert sim.held_steps == 2 and len(applied) == 3
