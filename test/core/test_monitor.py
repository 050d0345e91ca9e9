import numpy as np

from flow_rag_vla_ros.core.memory import MemoryConfig
from flow_rag_vla_ros.core.memory.corrections import CorrectionConfig
from flow_rag_vla_ros.core.monitor import MonitorConfig, RagMonitor

RNG = np.random.default_rng(0)
LANG = RNG.standard_normal(384).astype(np.float32)
TOKENS = RNG.standard_normal((36, 112)).astype(np.float32)


def _proprio(x):
    return np.array([x, 0.0, 0.1, 0, 0, 0, 0], np.float32)


def _monitor(**kw):
    return RagMonitor(MonitorConfig(store_stride=1), MemoryConfig(similarity_threshold=0.95, **kw),
                      CorrectionConfig(transform_confidence=0.9))


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
    m = _monitor()
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


def _success_from(m, xs):
    """A successful episode through states at x in xs; the command after state i is [0.1 * i, 0, 0, 1]."""
    m.on_event('start', values={'task': 'reach'})
    for i, x in enumerate(xs):
        m.assess(10 + i, TOKENS, _proprio(x), LANG)
        m.observe_command(10 + i, np.array([0.1 * i, 0.0, 0.0, 1.0], np.float32))
    m.on_event('success')


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
