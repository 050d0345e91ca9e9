import dataclasses
import typing
from types import SimpleNamespace

import numpy as np
import pytest

from flow_rag_vla_ros.core.config import from_dict
from flow_rag_vla_ros.core.merger import ActionMerger, Correction, MergerConfig, blend, correction_verdict

MS = 1_000_000
DT = 40 * MS
S = 1_000_000_000  # frame stamp (ns)
FREE = {'max_delta_per_step': [10.0] * 4}  # no rate limiting: values are exact
LIMIT = {'max_delta_per_step': [0.5, 0.5, 0.5, 2.0]}  # a tight rate limit whose effect shows
DELTA = np.array(MergerConfig().max_delta_per_step)


def merger(**kwargs) -> ActionMerger:
    return ActionMerger(MergerConfig(**kwargs))


def corr(chunk, confidence=0.9, failure_type='drop', source='transform'):
    """What the node passes: an object with .chunk, .confidence, .failure_type, .source (e.g. CorrectionMsg)."""
    return SimpleNamespace(chunk=np.asarray(chunk, dtype=float), confidence=confidence, failure_type=failure_type,
                           source=source)


def const(v, h=8):
    return np.full((h, 4), float(v))


# -- configuration ------------------------------------------------------------------------------------
def test_config_is_a_ros_parameter_schema():
    allowed = {bool, int, float, str, list[float], list[str]}
    hints = typing.get_type_hints(MergerConfig)
    assert all(hints[f.name] in allowed for f in dataclasses.fields(MergerConfig))
    assert all(f.metadata.get('description') for f in dataclasses.fields(MergerConfig))
    cfg = from_dict(MergerConfig, {'deadline_ms': 30, 'splice_mode': 'rtc'})
    assert cfg.deadline_ms == 30.0 and cfg.splice_mode == 'rtc' and cfg.stale_timeout_s == 0.08


@pytest.mark.parametrize('bad', [{'splice_mode': 'mix'}, {'clock': 'sim'}, {'correction_weight': 1.5},
                                 {'stored_correction_weight': -0.1}, {'replay_correction_weight': 1.5},
                                 {'action_low': [-1.0] * 3}, {'max_delta_per_step': [0.5, 0.5, 0.0, 2.0]},
                                 {'action_low': [0.1, -1.0, -1.0, -1.0]}, {'gripper_hold_value': 2.0},
                                 {'refill_fraction': 0.0}, {'deadline_ms': 0.0}, {'ensemble_decay_per_dim': [4.0] * 3},
                                 {'ensemble_decay_per_dim': [4.0, 4.0, 4.0, float('nan')]},
                                 {'splice_mode_by_task': ['push=replace']}, {'splice_mode_by_task': ['lift:replace']},
                                 {'splice_mode_by_task': ['push:newest']},
                                 {'splice_mode_by_task': ['push:replace', 'push:rtc']}])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        MergerConfig(**bad)


def test_per_dimension_ensemble_decay_reaches_the_executor():
    m = merger(ensemble_decay_per_dim=[4.0, 4.0, 4.0, 0.0])
    np.testing.assert_array_equal(m.executor.decay, [4.0, 4.0, 4.0, 0.0])
    np.testing.assert_array_equal(merger(ensemble_decay=0.7).executor.decay, [0.7])


def test_the_task_picks_the_splice_mode_and_a_change_drops_the_queue():
    m = merger(clock='frames', splice_mode_by_task=['push:replace'], **FREE)
    assert m.executor.mode == 'ensemble'  # the task is not known yet: splice_mode
    m.on_chunk(S, const(0.9), S)
    assert m.set_task('pick_and_place') == 'ensemble' and m.remaining(S) == 8  # no change: the queue stays
    assert m.set_task('push') == 'replace' and m.remaining(S) == 0  # spliced for ensembling: dropped
    m.on_chunk(S + DT, const(0.9), S + DT)
    assert m.on_chunk(S + 2 * DT, const(0.1), S + 2 * DT).action[0] == pytest.approx(0.1)  # the newest chunk only
    assert m.set_task(None) == 'ensemble'  # an unknown instruction: splice_mode
    m.on_chunk(S + 3 * DT, const(0.9), S + 3 * DT)
    assert m.on_chunk(S + 4 * DT, const(0.1), S + 4 * DT).action[0] not in (pytest.approx(0.1), pytest.approx(0.9))
    assert merger(splice_mode_by_task=[]).set_task('push') == 'ensemble'


# -- the deadline-aware merge ---------------------------------------------------------------------------
def test_accepted_correction_is_blended_with_the_exact_weight():
    rng = np.random.default_rng(0)
    flow, correction = rng.uniform(-1, 1, (8, 4)), rng.uniform(-1, 1, (8, 4))
    m = merger(**FREE)
    assert m.on_correction(S, corr(correction, 0.95, 'grasp_failure'), S + 5 * MS) is None
    cmd = m.on_chunk(S, flow, S + 10 * MS)
    expected = 0.7 * flow + 0.3 * correction
    np.testing.assert_allclose(cmd.action, expected[0], rtol=1e-12)
    np.testing.assert_allclose(m.plan(S + 10 * MS, 8), expected, rtol=1e-12)
    r = cmd.record
    assert (cmd.state, cmd.source_stamp_ns, r.used_correction, r.reason) == ('ok', S, True, '')
    assert (r.correction_stamp_ns, r.confidence, r.failure_type, r.weight) == (S, 0.95, 'grasp_failure', 0.3)


@pytest.mark.parametrize('source, weight', [('stored', 0.8), ('replay', 0.9), ('transform', 0.3), ('', 0.3)])
def test_stored_and_replayed_corrections_have_their_own_blend_weight(source, weight):
    flow, correction = const(0.5), const(-0.5)
    m = merger(stored_correction_weight=0.8, replay_correction_weight=0.9, **FREE)
    m.on_correction(S, corr(correction, 0.95, source=source), S + 5 * MS)
    cmd = m.on_chunk(S, flow, S + 10 * MS)
    np.testing.assert_allclose(cmd.action, (1 - weight) * 0.5 - weight * 0.5, rtol=1e-12)
    assert cmd.record.weight == weight


@pytest.mark.parametrize('stamp, arrival, confidence, reason', [
    (None, None, None, 'none'),
    (S - DT, S - DT + 5 * MS, 0.99, 'stale'),  # for an older frame
    (S, S + 25 * MS + 1, 0.99, 'late'),       # after the deadline
    (S, S + 5 * MS, 0.79, 'low_confidence'),
    (S, S + 25 * MS, 0.8, ''),                # exactly at the deadline and the threshold: used
])
def test_correction_is_used_or_rejected_for_each_reason(stamp, arrival, confidence, reason):
    m = merger(**FREE)
    if stamp is not None:
        m.on_correction(stamp, corr(const(-0.5), confidence), arrival)
    cmd = m.on_chunk(S, const(0.5), S + 26 * MS)
    assert cmd.record.reason == reason and cmd.record.used_correction == (reason == '')
    np.testing.assert_allclose(cmd.action, 0.5 if reason else 0.7 * 0.5 - 0.3 * 0.5)


def test_newer_correction_is_aligned_by_time():
    flow, correction = const(0.0), np.arange(8, dtype=float)[:, None].repeat(4, 1) / 10
    m = merger(**FREE)
    m.on_correction(S + DT, corr(correction), S + DT + 5 * MS)  # a faster monitor already saw the next frame
    m.on_chunk(S, flow, S + DT + 10 * MS)
    expected = blend(flow, correction, 0.3, offset=1)  # correction step k is for slot S + (k + 1) * DT
    np.testing.assert_allclose(m.plan(S, 8), expected)
    assert expected[0, 0] == 0.0 and expected[1, 0] == pytest.approx(0.0) and expected[2, 0] == pytest.approx(0.03)


def test_verdict_is_a_pure_function():
    c = Correction(S, const(0.0), 0.9, 'drop', arrival_ns=S + 10 * MS)
    assert correction_verdict(S, c, 25 * MS, 0.8) == ''
    assert correction_verdict(S + 1, c, 25 * MS, 0.8) == 'stale'
    assert correction_verdict(S, c, 5 * MS, 0.8) == 'late'
    assert correction_verdict(S, c, 25 * MS, 0.95) == 'low_confidence'
    assert correction_verdict(S, None, 25 * MS, 0.8) == 'none'
    clear = Correction(S, const(0.0), 0.0, '', arrival_ns=S + 10 * MS)
    assert correction_verdict(S, clear, 25 * MS, 0.8) == 'all_clear'
    assert correction_verdict(S, clear, 25 * MS, 0.0) == 'all_clear'  # never blended, whatever the threshold


# -- parallel pipeline: a correction after the chunk ---------------------------------------------------------
def test_correction_after_the_chunk_revises_the_queued_actions():
    m = merger(**FREE)
    first = m.on_chunk(S, const(0.5), S + 10 * MS)
    assert first.record.reason == 'none' and first.action[0] == 0.5
    assert m.on_correction(S, corr(const(-0.5)), S + 20 * MS) is None  # before the deadline
    cmd = m.tick(S + DT + MS)
    assert cmd.action[0] == pytest.approx(0.2) and cmd.record.used_correction


@pytest.mark.parametrize('pin', [True, False])
def test_a_late_replay_is_executed_as_is_while_the_next_chunk_waits_for_its_own(pin):
    """Replays (commands that once succeeded) arrive after their frame's chunk in the node graph: pinned, the
    next frame's flow chunk does not blend into them."""
    m = merger(clock='frames', pin_replays=pin, alarm_wait_ms=0.0, **FREE)  # the next chunk does not wait
    m.on_chunk(S, const(0.5), S + 10 * MS)
    replay = np.repeat(np.linspace(-0.1, -0.8, 8)[:, None], 4, axis=1)  # (8, 4): action i is -0.1 * (i + 1)
    m.on_correction(S, corr(replay, 0.95, source='replay'), S + 20 * MS)
    cmd = m.on_chunk(S + DT, const(0.5), S + DT + 10 * MS)  # no correction for this frame yet
    if pin:
        assert cmd.action[0] == pytest.approx(-0.2) and cmd.sources == (S,)
    else:  # ensembled with the newer flow chunk
        assert cmd.action[0] > 0.0 and cmd.sources == (S + DT, S)


def test_correction_after_the_deadline_leaves_the_queue_alone():
    m = merger(**FREE)
    m.on_chunk(S, const(0.5), S + 10 * MS)
    m.on_correction(S, corr(const(-0.5)), S + 30 * MS)
    cmd = m.tick(S + DT + MS)
    assert cmd.action[0] == 0.5 and not cmd.record.used_correction and cmd.record.reason == 'late'


# -- sequential pipeline: wait for the correction -----------------------------------------------------------
def test_wait_mode_emits_when_the_correction_arrives():
    m = merger(wait_for_correction=True, **FREE)
    assert m.on_chunk(S, const(0.5), S + 10 * MS) is None
    assert m.pending_deadline_ns() == S + 25 * MS
    assert m.tick(S + 12 * MS).state == 'hold_stale'  # nothing released yet
    cmd = m.on_correction(S, corr(const(-0.5)), S + 15 * MS)
    assert (cmd.state, cmd.source_stamp_ns, cmd.record.used_correction) == ('ok', S, True)
    assert cmd.action[0] == pytest.approx(0.2) and m.pending_deadline_ns() is None


def test_wait_mode_emits_at_the_deadline_without_a_correction():
    m = merger(wait_for_correction=True, **FREE)
    assert m.on_chunk(S, const(0.5), S + 10 * MS) is None
    assert m.tick(S + 25 * MS - 1).record is None
    cmd = m.tick(S + 25 * MS)
    assert (cmd.state, cmd.source_stamp_ns, cmd.record.reason) == ('ok', S, 'none') and cmd.action[0] == 0.5


def test_wait_mode_ends_on_an_all_clear_verdict_without_blending_it():
    m = merger(wait_for_correction=True, **FREE)
    assert m.on_chunk(S, const(0.5), S + 10 * MS) is None
    cmd = m.on_correction(S, corr(const(0.5), confidence=0.0, failure_type=''), S + 12 * MS)  # "all clear"
    assert (cmd.state, cmd.source_stamp_ns, cmd.record.used_correction) == ('ok', S, False)
    assert cmd.record.reason == 'all_clear' and cmd.action[0] == 0.5


def test_wait_mode_does_not_wait_when_it_cannot_help():
    m = merger(wait_for_correction=True, **FREE)
    assert m.on_chunk(S, const(0.5), S + 30 * MS).state == 'ok'  # already past its deadline
    m.on_correction(S + DT, corr(const(-0.5)), S + DT + 5 * MS)
    cmd = m.on_chunk(S + DT, const(0.5), S + DT + 10 * MS)  # its correction is already here
    assert cmd.record.used_correction


# -- parallel pipeline with alarm_wait_ms: wait for the correction while a risk is being flagged -----------
def _alarmed(**kwargs) -> ActionMerger:
    """A parallel merger whose frame S had a usable correction (in time); frame S + DT comes next."""
    m = merger(alarm_wait_ms=20.0, **FREE, **kwargs)
    m.on_correction(S, corr(const(-0.5)), S + 5 * MS)
    assert m.on_chunk(S, const(0.5), S + 10 * MS).record.used_correction
    return m


def test_after_an_alarm_the_next_chunk_waits_for_its_own_correction():
    m = _alarmed()
    assert m.on_chunk(S + DT, const(0.5), S + DT + 10 * MS) is None
    assert m.pending_deadline_ns() == S + DT + 20 * MS
    cmd = m.on_correction(S + DT, corr(const(-0.5)), S + DT + 13 * MS)
    assert (cmd.state, cmd.source_stamp_ns, cmd.record.used_correction) == ('ok', S + DT, True)


def test_after_an_alarm_a_chunk_without_correction_goes_at_frame_stamp_plus_the_wait():
    m = _alarmed()
    assert m.on_chunk(S + DT, const(0.5), S + DT + 10 * MS) is None
    assert m.tick(S + DT + 20 * MS - 1).record.frame_stamp_ns == S  # still the previous frame's queue
    cmd = m.tick(S + DT + 20 * MS)
    assert (cmd.source_stamp_ns, cmd.record.used_correction, cmd.record.reason) == (S + DT, False, 'stale')


def test_after_an_alarm_an_all_clear_releases_the_chunk_at_once_and_ends_the_streak():
    m = _alarmed()
    assert m.on_chunk(S + DT, const(0.5), S + DT + 10 * MS) is None
    cmd = m.on_correction(S + DT, corr(const(0.0), confidence=0.0, failure_type=''), S + DT + 11 * MS)
    assert (cmd.source_stamp_ns, cmd.record.used_correction, cmd.record.reason) == (S + DT, False, 'all_clear')
    waited_out = _alarmed()
    waited_out.on_chunk(S + DT, const(0.5), S + DT + 10 * MS)
    np.testing.assert_array_equal(cmd.action, waited_out.tick(S + DT + 20 * MS).action)  # the same command, 9 ms sooner
    assert m.on_chunk(S + 2 * DT, const(0.5), S + 2 * DT + 10 * MS).state == 'ok'  # no alarm now: no wait


def test_no_wait_without_a_usable_correction_on_the_previous_frame_or_with_the_wait_off():
    m = merger(alarm_wait_ms=20.0, **FREE)
    assert m.on_chunk(S, const(0.5), S + 10 * MS).state == 'ok'  # nothing flagged: emitted at once
    m.on_correction(S, corr(const(-0.5), confidence=0.5), S + 12 * MS)  # below the threshold: no alarm
    assert m.on_chunk(S + DT, const(0.5), S + DT + 10 * MS).state == 'ok'
    ended = _alarmed()
    assert ended.on_chunk(S + DT, const(0.5), S + DT + 10 * MS) is None
    assert ended.tick(S + DT + 20 * MS).source_stamp_ns == S + DT  # no correction came: the streak ended
    assert ended.on_chunk(S + 2 * DT, const(0.5), S + 2 * DT + 10 * MS).state == 'ok'  # so this one goes at once
    off = merger(alarm_wait_ms=0.0, **FREE)
    off.on_correction(S, corr(const(-0.5)), S + 5 * MS)
    off.on_chunk(S, const(0.5), S + 10 * MS)
    assert off.on_chunk(S + DT, const(0.5), S + DT + 10 * MS).state == 'ok'  # 0: never waits
    with pytest.raises(ValueError, match='alarm_wait_ms'):
        MergerConfig(alarm_wait_ms=30.0)  # past the 25 ms deadline


# -- safety -----------------------------------------------------------------------------------------------
def test_nan_chunk_is_rejected_whole_and_the_arm_holds():
    m = merger()
    m.on_chunk(S, const(0.5), S + 10 * MS)
    bad = const(0.5)
    bad[4, 2] = np.nan
    cmd = m.on_chunk(S + DT, bad, S + DT + 10 * MS)
    assert cmd.state == 'hold_invalid' and cmd.source_stamp_ns == S + DT and 'non-finite' in cmd.message
    np.testing.assert_array_equal(cmd.action, [0.0, 0.0, 0.0, 0.5])
    assert m.tick(S + DT + 50 * MS).state == 'hold_invalid'  # the old queue is not used either
    assert m.tick(S + DT + 95 * MS).state == 'hold_stale'
    assert m.on_chunk(S + 3 * DT, const(0.5), S + 3 * DT + 10 * MS).state == 'ok'


def test_nan_and_inf_never_reach_the_output():
    rng = np.random.default_rng(1)
    m = merger()
    t = S
    for k in range(300):
        t += 10 * MS
        if k % 4 == 0:
            chunk = rng.uniform(-2, 2, (8, 4))
            if rng.random() < 0.4:
                chunk[rng.integers(8), rng.integers(4)] = rng.choice([np.nan, np.inf, -np.inf])
            cmd = m.on_chunk(t - 15 * MS, chunk, t)
        elif k % 4 == 1:
            c = rng.uniform(-2, 2, (8, 4))
            if rng.random() < 0.5:
                c[0, 0] = np.nan
            cmd = m.on_correction(t - 20 * MS, corr(c, rng.choice([0.9, np.nan])), t)
        else:
            cmd = m.tick(t)
        if cmd is not None:
            assert np.isfinite(cmd.action).all() and np.all(np.abs(cmd.action) <= 1.0)


def test_watchdog_holds_within_two_periods_and_resumes_without_a_jump():
    m = merger(**LIMIT)
    for k in range(6):  # a healthy stream: one chunk per period, ticks between
        m.on_chunk(S + k * DT, const(0.8), S + k * DT + 15 * MS)
        assert m.tick(S + k * DT + 30 * MS).state == 'ok'
    last_arrival = S + 5 * DT + 15 * MS
    t = last_arrival
    while m.tick(t).state == 'ok':  # the policy died
        t += 5 * MS
    assert t - last_arrival <= 2 * DT + 5 * MS
    hold = m.tick(t + MS)
    assert hold.state == 'hold_stale' and 'no fresh chunk' in hold.message
    np.testing.assert_array_equal(hold.action, [0.0, 0.0, 0.0, 0.8])  # zero motion, gripper unchanged
    back = m.on_chunk(t + 100 * MS, const(0.8), t + 110 * MS)
    assert back.state == 'ok'
    np.testing.assert_allclose(back.action, [0.5, 0.5, 0.5, 0.8])  # rate limited from the hold


@pytest.mark.parametrize('mode', ['ensemble', 'rtc', 'replace'])
def test_splices_never_jump_more_than_the_rate_limit(mode):
    rng = np.random.default_rng(2)
    m = merger(splice_mode=mode)
    previous = None
    for k in range(60):
        stamp = S + k * DT
        latency = int(rng.uniform(5, 60) * MS)
        commands = [m.on_chunk(stamp, rng.uniform(-1.5, 1.5, (8, 4)), stamp + latency)]
        commands += [m.tick(stamp + latency + int(rng.uniform(1, 30) * MS))]
        for cmd in commands:
            if previous is not None:
                if cmd.state == 'ok':
                    assert np.all(np.abs(cmd.action - previous.action) <= DELTA + 1e-12)
                else:
                    assert np.all(cmd.action[:3] == 0) and cmd.action[3] == previous.action[3]
            previous = cmd


def test_out_of_order_chunk_is_dropped_and_resent_frame_answered():
    m = merger()
    assert m.on_chunk(S + DT, const(0.2), S + DT + 10 * MS).state == 'ok'
    assert m.on_chunk(S, const(0.9), S + DT + 12 * MS) is None
    assert m.counts['dropped_out_of_order'] == 1
    again = m.on_chunk(S + DT, const(0.3), S + DT + 20 * MS)  # lockstep re-sends a frame with its stamp
    assert again.source_stamp_ns == S + DT and again.action[0] == pytest.approx(0.3)


def test_frames_clock_answers_a_resent_frame_with_the_same_command():
    chunks = [const(1.0), const(-1.0), const(0.2)]

    def run(resends):
        m, out = merger(clock='frames', **LIMIT), []
        for k, c in enumerate(chunks):
            stamp = S + k * DT
            first = m.on_chunk(stamp, c, stamp + 5 * MS)
            for r in range(resends):  # lockstep re-sends an unanswered frame with its stamp
                again = m.on_chunk(stamp, c, stamp + (r + 2) * 500 * MS)
                np.testing.assert_array_equal(again.action, first.action)
            out.append(first.action)
        return np.array(out), m.counts['repeated_frames']

    once, repeated = run(0)
    np.testing.assert_array_equal(run(3)[0], once)  # the rate limiter stepped once per frame
    assert repeated == 0 and run(2)[1] == 6
    np.testing.assert_allclose(once[:2, 0], [0.5, 0.0])  # rate-limited: at most 0.5 per step


@pytest.mark.parametrize('clock', ['frames', 'time'])
def test_episode_restart_drops_the_old_queue_and_restarts_the_rate_limit(clock):
    m = merger(clock=clock, **LIMIT)
    for k in range(3):  # the previous episode ends moving at full speed, gripper closed
        m.on_chunk(S + k * DT, np.tile([1.0, 1.0, 1.0, -1.0], (8, 1)), S + k * DT + 5 * MS)
    last = S + 2 * DT
    m.restart(last)  # the 'start' event carries the previous episode's last frame stamp
    assert m.remaining(last + DT) == 0
    first = m.on_chunk(last + DT, np.tile([-1.0, 0.2, 0.0, 1.0], (8, 1)), last + DT + 5 * MS)
    # only the new chunk, rate-limited from zero motion (not from the old +1), gripper free to open
    np.testing.assert_allclose(first.action, [-0.5, 0.2, 0.0, 1.0])
    assert first.sources == (last + DT,)


def test_episode_restart_keeps_chunks_of_the_new_episode():
    m = merger(clock='frames', **FREE)
    m.on_chunk(S, const(0.9), S + 5 * MS)
    m.on_chunk(S + DT, const(0.1), S + DT + 5 * MS)  # the new episode's first chunk beat the event
    m.restart(S)
    nxt = m.on_chunk(S + 2 * DT, const(0.3), S + 2 * DT + 5 * MS)
    assert set(nxt.sources) == {S + DT, S + 2 * DT}  # the old episode's chunk is gone, the new ones stay


def test_refill_trigger_follows_the_queue():
    m = merger(refill_fraction=0.5)
    assert m.needs_inference(S)
    m.on_chunk(S, const(0.1), S + 10 * MS)
    assert m.remaining(S + 10 * MS) == 8 and not m.needs_inference(S + 10 * MS)
    assert m.remaining(S + 5 * DT) == 3 and m.needs_inference(S + 5 * DT)


def test_frames_clock_does_not_depend_on_inference_time():
    rng = np.random.default_rng(3)
    chunks = [rng.uniform(-1, 1, (8, 4)) for _ in range(10)]
    runs = []
    for latency in (5 * MS, 130 * MS):
        m = merger(clock='frames', **LIMIT)
        out = []
        for k, c in enumerate(chunks):
            stamp = S + k * 150 * MS  # a slow lockstep loop
            out.append(m.on_chunk(stamp, c, stamp + latency).action)
            assert m.tick(stamp + latency + 20 * MS) is None
        runs.append(np.array(out))
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_allclose(runs[0][0], np.clip(chunks[0][0], [-0.5, -0.5, -0.5, -1], [0.5, 0.5, 0.5, 1]))


def test_malformed_or_older_corrections_are_ignored():
    m = merger(**FREE)
    m.on_correction(S, corr(const(np.nan)), S + MS)
    m.on_correction(S, corr(const(0.0)[:, :3]), S + MS)
    assert m.counts['rejected_corrections'] == 2 and m.correction is None
    m.on_correction(S + DT, corr(const(-0.5)), S + DT + MS)
    m.on_correction(S, corr(const(0.9)), S + DT + 2 * MS)  # older than the one held
    assert m.correction.source_stamp_ns == S + DT


def test_the_merger_core_does_not_load_torch():
    import subprocess
    import sys
    code = ('import sys, flow_rag_vla_ros.core.merger, flow_rag_vla_ros.core.latency, flow_rag_vla_ros.core.rtc; '
            'sys.exit("torch" in sys.modules)')
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0  # keeps the merger node small
