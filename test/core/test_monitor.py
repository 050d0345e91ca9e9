import numpy as np
import pytest

from flow_rag_vla_ros.core.memory import MemoryConfig
from flow_rag_vla_ros.core.memory.corrections import Correction, CorrectionConfig
from flow_rag_vla_ros.core.monitor import MonitorConfig, RagMonitor

RNG = np.random.default_rng(0)
LANG = RNG.standard_normal(384).astype(np.float32)
TOKENS = RNG.standard_normal((36, 112)).astype(np.float32)


def _proprio(x):
    return np.array([x, 0.0, 0.1, 0, 0, 0, 0], np.float32)


def _monitor(remember_successes=True, **kw):
    return RagMonitor(MonitorConfig(store_stride=1, remember_successes=remember_successes),
                      MemoryConfig(similarity_threshold=0.95, **kw), CorrectionConfig(transform_confidence=0.9))


def _episode(monitor, xs, outcome, failure_type='', chunk_value=0.5):
    monitor.on_event('start', values={'task': 'reach'})
    proposals = []
    for i, x in enumerate(xs):
        proposals.append(monitor.assess(i, TOKENS, _proprio(x), LANG))
        monitor.observe_chunk(i, np.full((8, 4), chunk_value, np.float32))
    monitor.on_event(outcome, failure_type)
    return proposals


def test_failure_is_remembered_and_a_similar_state_gets_a_correction():
    m = _monitor()
    assert _episode(m, [0.0, 0.01], 'failure', 'misalignment') == [None, None]
    assert len(m.memory) >= 1
    far = m.assess(100, TOKENS, _proprio(0.6), LANG)
    near = m.assess(101, TOKENS, _proprio(0.005), LANG)
    assert far is None
    assert near is not None and near.failure_type == 'misalignment' and near.source == 'transform'
    # misalignment transform halves the latest executed chunk
    np.testing.assert_allclose(near.chunk[:, :3], 0.25, atol=1e-6)


def test_success_after_a_match_stores_the_chunk_that_worked_and_raises_confidence():
    m = _monitor(remember_successes=False)  # the failure case's own correction, not the success memory's replay
    _episode(m, [0.0], 'failure', 'timeout')
    (case,) = m.memory.cases()
    before = case.confidence
    _episode(m, [0.0], 'success', chunk_value=-0.3)
    case = m.memory.get(case.id)
    assert case.confidence > before
    np.testing.assert_allclose(case.correction_chunk, -0.3)
    proposal = m.assess(7, TOKENS, _proprio(0.0), LANG)
    assert proposal.source == 'stored'


def test_success_stores_the_commands_executed_from_the_matched_state_not_the_policy_chunk():
    m = _monitor()
    _episode(m, [0.0], 'failure', 'timeout')
    (case,) = m.memory.cases()
    m.on_event('start', values={'task': 'reach'})
    m.observe_command(-1, np.full(4, 0.9, np.float32))  # before the matched state: not part of what followed it
    assert m.assess(10, TOKENS, _proprio(0.0), LANG) is not None  # matches the failure; later states do not
    for i in range(3):
        if i:
            m.assess(10 + i, TOKENS, _proprio(0.5 + i), LANG)
        m.observe_chunk(10 + i, np.full((8, 4), 0.5, np.float32))  # the policy's proposal ...
        m.observe_command(10 + i, np.array([0.1 * i, -0.2, 0.0, -1.0], np.float32))  # ... what was executed
    m.on_event('success')
    stored = m.memory.get(case.id).correction_chunk  # (H, 4)
    np.testing.assert_allclose(stored[:3, 0], [0.0, 0.1, 0.2], atol=1e-6)
    np.testing.assert_allclose(stored[:3, 1], -0.2, atol=1e-6)
    # the episode ended after 3 commands: the rest of the chunk holds still with the last gripper command
    np.testing.assert_array_equal(stored[3:, :3], 0.0)
    np.testing.assert_array_equal(stored[3:, 3], -1.0)


def _success_from(m, xs, dx=0.1, outcome='success'):
    """An episode through states at x in xs; the command after state i is [dx * i, 0, 0, 1]. Returns the proposals."""
    m.on_event('start', values={'task': 'reach'})
    proposals = []
    for i, x in enumerate(xs):
        proposals.append(m.assess(10 + i, TOKENS, _proprio(x), LANG))
        m.observe_command(10 + i, np.array([dx * i, 0.0, 0.0, 1.0], np.float32))
    m.on_event(outcome, 'timeout' if outcome != 'success' else '')
    return proposals


def test_success_stores_what_followed_the_state_most_like_the_case_and_counts_once():
    once, thrice = _monitor(), _monitor()
    for m, xs in ((once, [0.0]), (thrice, [0.003, 0.0, 0.004])):  # all three states match the case
        _episode(m, [0.0], 'failure', 'timeout')
        _success_from(m, xs)
    (case_once,), (case_thrice,) = once.memory.cases(), thrice.memory.cases()
    assert case_thrice.confidence == case_once.confidence  # one episode, one confidence update
    # the exact state (the second) is the best match: its commands, not the last matching state's
    np.testing.assert_allclose(case_thrice.correction_chunk[:2, 0], [0.1, 0.2], rtol=1e-6)


def test_repeated_failure_despite_correction_lowers_confidence():
    m = _monitor()
    _episode(m, [0.0], 'failure', 'timeout')
    (case,) = m.memory.cases()
    _episode(m, [0.0], 'failure', 'timeout')
    assert m.memory.get(case.id).confidence < case.confidence


def test_read_only_monitor_does_not_learn():
    m = RagMonitor(MonitorConfig(learn=False), MemoryConfig())
    _episode(m, [0.0], 'failure', 'timeout')
    assert len(m.memory) == 0


def test_failure_stores_only_the_last_frames_counted_back_from_the_failure():
    m = RagMonitor(MonitorConfig(store_stride=2, store_last_frames=5), MemoryConfig(dedup_threshold=1.0))
    xs = [0.1 * i for i in range(12)]
    _episode(m, xs, 'failure', 'timeout')
    stored = sorted(float(c.embedding @ m.embed(TOKENS, _proprio(x), LANG)) > 0.9999
                    for c in m.memory.cases() for x in xs[-1:])
    assert len(m.memory) == 3 and stored.count(True) == 1  # states 7, 9, 11: the last one is always kept
    assert m.failure_states(list(range(12))) == [7, 9, 11]
    assert RagMonitor(MonitorConfig(store_stride=1), MemoryConfig()).failure_states(list(range(4))) == [0, 1, 2, 3]


# -- the success memory ---------------------------------------------------------------------------------
TRAJECTORY = [0.0, 0.2, 0.4]  # states far apart (similarity < 0.9); the first is where the failure happened


def _replay_at(m, x, stamp=99):
    proposal = m.assess(stamp, TOKENS, _proprio(x), LANG)
    return proposal if proposal is not None and proposal.source == 'replay' else None


def test_a_success_past_a_known_risk_is_replayed_state_by_state():
    m = _monitor()
    _episode(m, [0.0], 'failure', 'timeout')
    _success_from(m, TRAJECTORY)
    assert len(m.successes) == 3  # every state of the episode, not only the risky one
    for i, x in enumerate(TRAJECTORY):
        replay = _replay_at(m, x)
        # the commands executed from state i on; the episode ended after 3 commands, then zero motion
        assert replay is not None and replay.failure_type == ('timeout' if i == 0 else 'success') and replay.confidence == pytest.approx(1.0)
        np.testing.assert_allclose(replay.chunk[:3 - i, 0], [0.1 * k for k in range(i, 3)], atol=1e-6)
        np.testing.assert_array_equal(replay.chunk[3 - i:, :3], 0.0)
    # like the failure state (similarity ~0.985 > 0.95) but not near-identical (< 0.99): no open-loop replay
    near = m.assess(100, TOKENS, _proprio(0.03), LANG)
    assert near is not None and near.source != 'replay'


def test_a_success_without_a_known_risk_is_remembered_too():
    m = _monitor()
    assert _success_from(m, TRAJECTORY) == [None] * 3
    replay = _replay_at(m, 0.2)
    assert len(m.memory) == 0 and replay.failure_type == 'success'  # nothing failed here: no risk to name
    np.testing.assert_allclose(replay.chunk[:2, 0], [0.1, 0.2], atol=1e-6)


def test_a_replay_that_fails_is_dropped_until_a_new_success_replaces_it():
    m = _monitor()
    _episode(m, [0.0], 'failure', 'timeout')
    _success_from(m, TRAJECTORY)
    proposals = _success_from(m, TRAJECTORY, outcome='failure')  # replayed all the way, and failed
    assert [p.source for p in proposals] == ['replay'] * 3
    assert all(c.confidence == pytest.approx(0.7) for c in m.successes.cases())
    assert _replay_at(m, 0.0) is None  # 0.7 < replay_min_confidence: the failure memory proposes instead
    _success_from(m, TRAJECTORY, dx=-0.2)  # succeeded another way
    replay = _replay_at(m, 0.2)
    assert replay.confidence == pytest.approx(1.0) and len(m.successes) == 3
    np.testing.assert_allclose(replay.chunk[:2, 0], [-0.2, -0.4], atol=1e-6)


def test_success_memory_is_durable_beside_the_failure_memory(tmp_path):
    m = _monitor(directory=str(tmp_path))
    _episode(m, [0.0], 'failure', 'timeout')
    _success_from(m, TRAJECTORY)
    m.close()
    again = _monitor(directory=str(tmp_path))
    assert (tmp_path / 'successes').is_dir() and len(again.successes) == 3 and len(again.memory) == 1
    np.testing.assert_allclose(_replay_at(again, 0.2).chunk[:2, 0], [0.1, 0.2], atol=1e-6)
    assert _monitor(remember_successes=False).successes is None


def test_a_failure_long_after_a_replay_does_not_charge_it():
    m = _monitor()
    _success_from(m, TRAJECTORY)
    drift = [0.0] + [1.0 + 0.3 * k for k in range(8)]  # replayed at state 0, then H = 8 unlike states, then failed
    proposals = _success_from(m, drift, outcome='failure')
    assert proposals[0].source == 'replay' and proposals[1:] == [None] * 8
    assert all(c.confidence == 1.0 for c in m.successes.cases())
    _success_from(m, drift[:8], outcome='failure')  # failed 7 states after the replay: its commands were running
    assert sorted(c.confidence for c in m.successes.cases()) == pytest.approx([0.7, 1.0, 1.0])


def test_a_success_memory_export_seeds_another_robot(tmp_path):
    m = _monitor()
    _success_from(m, TRAJECTORY)
    assert m.successes.export(str(tmp_path / 'successes.safetensors')) == 3
    seeded = RagMonitor(MonitorConfig(success_memory_import=str(tmp_path / 'successes.safetensors')),
                        MemoryConfig(similarity_threshold=0.95))
    assert len(seeded.successes) == 3 and len(seeded.memory) == 0
    np.testing.assert_allclose(_replay_at(seeded, 0.2).chunk[:2, 0], [0.1, 0.2], atol=1e-6)


def test_all_clear_is_due_where_the_merger_waits_for_a_verdict():
    from flow_rag_vla_ros.core.monitor import all_clear_due
    assert all_clear_due('sequential', has_chunk=True, alarmed_before=False)
    assert not all_clear_due('sequential', has_chunk=False, alarmed_before=True)  # no chunk waits for it
    assert all_clear_due('parallel', has_chunk=False, alarmed_before=True)
    assert not all_clear_due('parallel', has_chunk=False, alarmed_before=False)


def test_verdict_to_send_is_the_proposal_else_an_all_clear_where_due():
    from flow_rag_vla_ros.core.merger import is_alarm
    from flow_rag_vla_ros.core.monitor import verdict_to_send
    proposal = Correction(chunk=np.ones((8, 4), np.float32), confidence=0.9, failure_type='timeout', case_id=3,
                          similarity=0.99, source='transform')
    assert verdict_to_send('parallel', proposal, None, False, 8) is proposal and is_alarm(proposal)
    assert verdict_to_send('parallel', None, None, False, 8) is None  # nothing flagged before: nothing to end
    clear = verdict_to_send('parallel', None, None, True, 8)
    assert not is_alarm(clear) and clear.confidence == 0.0 and clear.failure_type == ''
    np.testing.assert_array_equal(clear.chunk, np.zeros((8, 4)))
    chunk = np.full((8, 4), 0.1, np.float32)
    np.testing.assert_array_equal(verdict_to_send('sequential', None, chunk, False, 8).chunk, chunk)
    assert not is_alarm(None)
