"""Replay evaluation against a fake stack: stamp matching, action MSE, alarm precision/recall, timing modes."""
import json

import numpy as np
import pytest
from bag_helpers import DT, FakeStack, event, sim_like_run, write_bag

from flow_rag_vla_ros.bag.compare import Event, Frame, alarm_scores, load_recording, parse_remaps
from flow_rag_vla_ros.bag.reader import BagError
from flow_rag_vla_ros.tools.replay import ReplayConfig, print_results, replay_bag

pytestmark = pytest.mark.ros

# frame 0 = warm-up, episode 0 = frames 1..6 (fails on frame 6), episode 1 = frames 7..11
RECORDED_ALARMS = (1,)  # outside the window of the failure: a false alarm
REPLAY_ALARMS = (5, 9)  # 5: within 3 frames of the failure (true positive); 9: episode 1 (false alarm)
PERTURBED = 0.1  # recorded commands of episode 1 differ from the policy by this on dim 2


def fake_stack_factory(stacks, **fake_stack_options):
    def start(config):
        stacks.append(FakeStack(**fake_stack_options))
        return stacks[-1]
    return start


def expected_mse_per_dim(n_frames, n_perturbed):
    per_dim = np.zeros(4)
    per_dim[2] = PERTURBED ** 2 * n_perturbed / n_frames
    return per_dim


def test_alarm_scores_window_and_episodes():
    frames = [Frame(100 + i, 0, None, episode=0 if i < 5 else 1) for i in range(10)]
    events = [Event(104, 0, 'failure', {}, None), Event(109, 0, 'timeout', {}, None)]
    # window 2 covers frames 3, 4 of the failure; frame 5 is the next episode; 9 is a timeout (not counted)
    s = alarm_scores(frames, {103, 105, 109}, events, window_frames=2, failure_events=('failure',))
    assert (s['alarms'], s['failures'], s['true_positive_alarms'], s['detected_failures']) == (3, 1, 1, 1)
    assert s['precision'] == pytest.approx(1 / 3) and s['recall'] == 1.0
    s = alarm_scores(frames, {103, 105, 109}, events, window_frames=2, failure_events=('failure', 'timeout'))
    assert (s['true_positive_alarms'], s['detected_failures'], s['recall']) == (2, 2, 1.0)
    s = alarm_scores(frames, set(), events, window_frames=1)
    assert s['failures'] == 2 and s['precision'] is None and s['recall'] == 0.0  # timeouts count by default
    with pytest.raises(ValueError, match='window_frames'):
        alarm_scores(frames, set(), events, window_frames=0)


def test_load_recording_dedupes_resends_and_assigns_episodes(tmp_path):
    items, stamps = sim_like_run(recorded_alarm_frames=RECORDED_ALARMS)
    write_bag(tmp_path / 'bag', items)
    rec = load_recording(tmp_path / 'bag')
    assert [f.stamp_ns for f in rec.frames] == stamps  # the warm-up frame was sent twice, kept once
    assert [f.episode for f in rec.frames] == [-1] + [0] * 6 + [1] * 5
    assert all(f.state is not None and f.info is not None for f in rec.frames)
    assert [e.kind for e in rec.events] == ['start', 'failure', 'start', 'success']
    assert rec.alarms == {stamps[1]} and set(rec.commands) == set(stamps) == set(rec.chunks)
    assert [k for k, _, _ in rec.timeline][:3] == ['instruction', 'frame', 'event']


def test_lockstep_replay_matches_stamps_and_scores(tmp_path, capsys):
    items, stamps = sim_like_run(recorded_alarm_frames=RECORDED_ALARMS, replay_alarm_frames=REPLAY_ALARMS)
    write_bag(tmp_path / 'bag', items)
    stacks = []
    config = ReplayConfig(rate=0.0, window_frames=3, command_timeout_s=0.3, startup_timeout_s=20.0, drain_s=0.3)
    result = replay_bag(tmp_path / 'bag', config, start_stack=fake_stack_factory(stacks))
    assert stacks[0].events == ['start', 'failure', 'start', 'success']
    assert result['frames'] == {'recorded': 12, 'replayed': 12, 'commanded': 12, 'unanswered': 0,
                                'recorded_commands': 12, 'unacknowledged_starts': 0}
    a = result['actions']
    assert a['n'] == 12
    np.testing.assert_allclose(a['mse_per_dim'], expected_mse_per_dim(12, 5), atol=1e-9)
    assert a['mse'] == pytest.approx(np.mean(expected_mse_per_dim(12, 5)), abs=1e-9)
    assert a['max_abs_error'] == pytest.approx(PERTURBED, abs=1e-6)
    episodes = {e['episode']: e for e in result['per_episode']}
    assert sorted(episodes) == [-1, 0, 1] and episodes[0]['frames'] == 6 and episodes[1]['frames'] == 5
    assert episodes[0]['actions']['mse'] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(episodes[1]['actions']['mse_per_dim'], [0, 0, PERTURBED ** 2, 0], atol=1e-9)
    assert result['chunks']['n'] == 12 and result['chunks']['mse'] == pytest.approx(0.0, abs=1e-12)
    replayed, recorded = result['alarms']['replayed'], result['alarms']['recorded']
    assert (replayed['alarms'], replayed['true_positive_alarms'], replayed['failures']) == (2, 1, 1)
    assert replayed['precision'] == 0.5 and replayed['recall'] == 1.0
    assert recorded['alarms'] == 1 and recorded['precision'] == 0.0 and recorded['recall'] == 0.0
    assert result['latency_ms']['n'] == 12 and 0 < result['latency_ms']['p50'] < 1000
    assert result['recorded_latency_ms']['n'] == 12
    json.dumps(result)  # JSON-able as it is
    print_results(result)
    assert 'warm-up' in capsys.readouterr().out


def test_lockstep_replay_goes_on_when_the_stack_never_acknowledges_a_start(tmp_path):
    """A stack without the merger's acknowledgement (e.g. one recorded with events_topic '') still replays
    whole: each start waits command_timeout_s, is counted, and the commands still match."""
    items, _ = sim_like_run()
    write_bag(tmp_path / 'bag', items)
    stacks = []
    config = ReplayConfig(rate=0.0, command_timeout_s=0.3, startup_timeout_s=20.0, drain_s=0.3)
    result = replay_bag(tmp_path / 'bag', config, start_stack=fake_stack_factory(stacks, ack_restarts=False))
    assert stacks[0].events == ['start', 'failure', 'start', 'success']
    assert result['frames']['unacknowledged_starts'] == 2
    assert result['frames']['commanded'] == 12 and result['frames']['unanswered'] == 0
    assert result['per_episode'][1]['actions']['mse'] == pytest.approx(0.0, abs=1e-12)


def test_timed_replay_with_remap_and_original_stamps(tmp_path):
    items, stamps = sim_like_run(image_topic='/robot_cam/rgb')
    write_bag(tmp_path / 'bag', items, types={'/robot_cam/rgb': 'sensor_msgs/msg/Image'})
    with pytest.raises(BagError, match='--remap /camera/image_raw:='):
        load_recording(tmp_path / 'bag')
    stacks = []
    config = ReplayConfig(rate=2.0, stamps='original', remap=['/camera/image_raw:=/robot_cam/rgb'],
                          window_frames=3, startup_timeout_s=20.0, drain_s=0.5)
    result = replay_bag(tmp_path / 'bag', config, start_stack=fake_stack_factory(stacks))
    assert set(stacks[0].states) <= set(stamps)  # the recorded stamps went out unchanged
    episodes = {e['episode']: e['actions'] for e in result['per_episode']}
    # timed replay into best-effort depth-1 topics may lose a frame on a loaded machine, not the run
    assert result['actions']['n'] >= 6 and episodes[0]['n'] and episodes[1]['n'], result['frames']
    assert episodes[0]['mse'] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(episodes[1]['mse_per_dim'], [0, 0, PERTURBED ** 2, 0], atol=1e-9)
    assert result['alarms']['replayed']['alarms'] == 0 and result['alarms']['replayed']['recall'] == 0.0


def test_timed_replay_at_a_fixed_frame_rate(tmp_path):
    items, stamps = sim_like_run()
    write_bag(tmp_path / 'bag', items)
    config = ReplayConfig(rate=1.0, frame_rate_hz=10.0, window_frames=3, startup_timeout_s=20.0, drain_s=0.3)
    result = replay_bag(tmp_path / 'bag', config, start_stack=fake_stack_factory([]))
    # 11 frames after the warm-up frame, 0.1 s apart (recorded: one control period apart), then the drain
    assert result['wall_s'] >= 10 * 0.1 + 0.3 - 0.01 > len(stamps) * DT / 1e9 + 0.3
    lat = result['stamp_to_command_ms']
    assert lat['n'] >= 9 and 0 < lat['p50'] < 1000  # warm-up excluded; a loaded machine may lose a frame
    # the middleware takes each command before this harness's callback runs, on the same (system) clock
    callback, middleware = (result['samples_ms'][k] for k in ('stamp_to_command', 'stamp_to_command_middleware'))
    assert len(middleware) == len(callback) and all(0 < m <= c for m, c in zip(middleware, callback))


def test_bad_replay_configuration_is_explained():
    with pytest.raises(ValueError, match='STACK_TOPIC:=BAG_TOPIC'):
        parse_remaps(['/camera/image_raw=/cam'])
    with pytest.raises(ValueError, match='not a replayed or compared topic'):
        parse_remaps(['/vla/features:=/x'])
    with pytest.raises(ValueError, match='rate'):
        ReplayConfig(rate=-1)
    with pytest.raises(ValueError, match='stamps'):
        ReplayConfig(stamps='shifted')
    with pytest.raises(ValueError, match='timed replay'):
        ReplayConfig(rate=0.0, frame_rate_hz=20.0)


def test_instruction_received_after_the_first_frame_is_replayed_first(tmp_path):
    items, _ = sim_like_run()
    (topic, _, instruction), rest = items[0], items[1:]
    first_image_log = next(log for t, log, _ in rest if t == '/camera/image_raw')
    write_bag(tmp_path / 'bag', sorted(rest + [(topic, first_image_log + 1, instruction)], key=lambda i: i[1]))
    rec = load_recording(tmp_path / 'bag')
    assert rec.timeline[0][0] == 'instruction' and rec.timeline[1][0] == 'frame'


def test_an_episode_event_received_after_a_later_frame_is_replayed_before_it():
    """The recorder's receive order of /task/events and frames races; the stack acted on the event first."""
    from flow_rag_vla_ros.bag.compare import _events_before_later_frames

    def frame(k):
        return ('frame', 10 * k + 1, Frame(k * DT, 10 * k + 1, None))

    def episode_event(kind, k, log):
        return ('event', log, event(k * DT, kind, episode=0))

    timeline = [frame(1), frame(2), episode_event('success', 2, 25), frame(3), episode_event('start', 2, 32),
                frame(4)]
    out = _events_before_later_frames(timeline)
    order = [(kind, payload.stamp_ns // DT if kind == 'frame' else payload.status[0].message)
             for kind, _, payload in out]
    assert order == [('frame', 1), ('frame', 2), ('event', 'success'), ('event', 'start'), ('frame', 3),
                     ('frame', 4)]
    assert _events_before_later_frames(out) == out  # already ordered: unchanged


def test_the_instruction_is_sent_again_until_its_embedding_comes_back():
    """A latched sample can miss a subscriber that is still starting: without a re-send the stack never answers."""
    from types import SimpleNamespace

    from flow_rag_vla_ros.tools.replay import _Driver
    from std_msgs.msg import String

    sent = []
    node = SimpleNamespace(embedding_labels=set(), get_logger=lambda: SimpleNamespace(warning=lambda *_: None),
                           instruction_pub=SimpleNamespace(publish=sent.append))

    class Executor:
        def spin_once(self, timeout_sec):
            if len(sent) >= 3:  # the third send gets through
                node.embedding_labels.add('reach the red target')

    driver = _Driver(node, Executor(), ReplayConfig(rate=0.0, startup_timeout_s=5.0), stack=None)
    driver.instruction(String(data='reach the red target'))
    assert len(sent) == 3 and all(m.data == 'reach the red target' for m in sent)


@pytest.mark.parametrize('pipeline, sends', [('parallel', 3), ('sequential', 3), ('flow_only', 1)])
def test_the_warm_up_waits_for_the_monitor_as_well_as_the_command(pipeline, sends):
    """The command can come back before the monitor has started: frames measured then would carry its start-up."""
    from types import SimpleNamespace

    from flow_rag_vla_ros.tools.replay import _Driver
    from sensor_msgs.msg import Image

    images = []
    node = SimpleNamespace(commands={}, chunks={}, stage_latency={}, get_logger=lambda: None,
                           state_pub=None, info_pub=None, image_pub=SimpleNamespace(publish=images.append))

    class Executor:
        def spin_once(self, timeout_sec):
            stamp = images[-1].header.stamp.sec * 10**9 + images[-1].header.stamp.nanosec
            node.commands.setdefault(stamp, (None, 0, 0))  # the policy path answers the first send
            if len(images) >= 3:  # the monitor only the third
                node.stage_latency.setdefault('correction', []).append((stamp, 1.0, 2.0))

    driver = _Driver(node, Executor(), ReplayConfig(rate=0.0, pipeline=pipeline, startup_timeout_s=5.0), stack=None)
    driver.frame(Frame(stamp_ns=10**9, log_time_ns=0, image=Image()))
    assert len(images) == sends and driver.answered
