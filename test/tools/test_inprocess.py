"""In-process runner (tools/inprocess.py): the node graph's lockstep loop without ROS, on a tiny checkpoint."""
import numpy as np
import pytest

from flow_rag_vla_ros.core.memory import FailureCase, MemoryConfig
from flow_rag_vla_ros.core.memory.corrections import Correction, CorrectionConfig
from flow_rag_vla_ros.core.monitor import MonitorConfig, RagMonitor
from flow_rag_vla_ros.tools.inprocess import run_inprocess

KEYS = ('task', 'pipeline', 'scenario', 'seed', 'episodes', 'success_rate', 'mean_steps_to_success', 'e2e_ms',
        'frames_published', 'frame_rate_hz', 'corrections_used', 'per_episode', 'wall_s')
EPISODE_KEYS = ('episode', 'seed', 'success', 'steps', 'event', 'failure_type', 'held_steps', 'failure_state')


@pytest.fixture(scope='module')
def policy(tmp_path_factory):
    from flow_rag_vla_ros.core.backends import load_policy_backend
    from flow_rag_vla_ros.core.language import InstructionEmbedder
    from flow_rag_vla_ros.core.spec import INSTRUCTIONS
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp('tiny'))
    backend = load_policy_backend('torch', ckpt, device='cpu', threads=1)
    language = InstructionEmbedder.from_checkpoint(ckpt).embed(INSTRUCTIONS['push'])
    return ckpt, backend, language


def test_runs_episodes_and_returns_documented_keys(policy):
    ckpt, _, _ = policy
    r = run_inprocess('push', 2, 3, 'flow_only', 'slippery_zone', str(ckpt), 'torch', max_steps=8)
    for key in KEYS:
        assert key in r, key
    assert r['episodes'] == 2 and len(r['per_episode']) == 2
    assert [e['seed'] for e in r['per_episode']] == [3, 4]
    for e in r['per_episode']:
        for key in EPISODE_KEYS:
            assert key in e, key
        assert 1 <= e['steps'] <= 8 and len(e['failure_state']) == 6
        assert e['success'] or e['failure_type']
    assert r['corrections_used'] == 0  # no monitor in flow_only


def test_situations_make_initial_states_recur(policy):
    """Revisit protocol: episode i starts from seed + i % situations, so the same situation comes back."""
    _, backend, language = policy
    r = run_inprocess('push', 5, 3, 'flow_only', '', policy_backend=backend, language=language, max_steps=4,
                      situations=2)
    episodes = r['per_episode']
    assert [e['seed'] for e in episodes] == [3, 4, 3, 4, 3]
    assert episodes[0]['failure_state'] == episodes[2]['failure_state'] == episodes[4]['failure_state']
    assert episodes[0]['failure_state'] != episodes[1]['failure_state']


def test_rag_pipeline_uses_a_correction_from_memory(policy):
    _, backend, language = policy
    memory = MemoryConfig(similarity_threshold=-1.0)  # every state "matches" the stored failure
    monitor = RagMonitor(MonitorConfig(learn=False), memory, CorrectionConfig(transform_confidence=1.0))
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal(memory.dim).astype(np.float32)
    monitor.memory.add(FailureCase(embedding=embedding / np.linalg.norm(embedding),
                                   failed_chunk=np.zeros((8, 4), np.float32), failure_type='timeout', task='push',
                                   correction_chunk=np.full((8, 4), 0.5, np.float32), confidence=1.0))
    try:
        r = run_inprocess('push', 1, 0, 'parallel', '', policy_backend=backend, language=language,
                          rag_monitor=monitor, merger={'confidence_threshold': 0.0}, max_steps=6)
    finally:
        monitor.close()
    assert r['corrections_proposed'] > 0
    assert r['corrections_used'] > 0
    # every command says what happened to its correction; with latency 0 none is late
    verdicts = r['correction_verdicts']
    assert verdicts['used'] == r['corrections_used'] and 'late' not in verdicts
    assert sum(verdicts.values()) == sum(r['command_paths'].values())


def test_same_seed_gives_identical_results(policy):
    _, backend, language = policy
    kwargs = dict(policy_backend=backend, language=language, max_steps=10,
                  correction={'transform_confidence': 1.0})
    a = run_inprocess('push', 3, 7, 'parallel', 'external_push', **kwargs)
    b = run_inprocess('push', 3, 7, 'parallel', 'external_push', **kwargs)
    assert a['per_episode'] == b['per_episode']
    assert (a['corrections_used'], a['corrections_proposed'], a['memory_cases']) == \
           (b['corrections_used'], b['corrections_proposed'], b['memory_cases'])


class _AlternatingRisk:
    """A monitor that flags a risk on every other frame and has nothing to say on the others."""

    def __init__(self, monitor: RagMonitor):
        self.monitor, self.calls = monitor, 0

    def assess(self, stamp, tokens, proprio, language, chunk=None):
        self.calls += 1
        if self.calls % 2:
            return None
        return Correction(chunk=np.zeros((8, 4), np.float32), confidence=1.0, failure_type='timeout', case_id=0,
                          similarity=1.0, source='transform')

    def __getattr__(self, name):
        return getattr(self.monitor, name)


def test_a_chunk_waiting_for_a_correction_gets_an_all_clear_or_is_released_at_its_deadline(policy):
    """alarm_wait_ms: after a flagged frame the next chunk waits for its own verdict. The monitor node sends an
    all-clear when it has nothing to say after an alarm, which releases the chunk at once; the in-process loop
    must send it too. When no verdict can come in time (sequential, corrections slower than the deadline), the
    merger node's deadline timer releases the chunk; the in-process loop must too, not leave the robot without a
    command (a held step the node graph never takes, and which broke the success memory's replays)."""
    _, backend, language = policy
    monitor = RagMonitor(MonitorConfig(learn=False), MemoryConfig())
    try:
        r = run_inprocess('push', 1, 0, 'parallel', '', policy_backend=backend, language=language,
                          rag_monitor=_AlternatingRisk(monitor), merger={'alarm_wait_ms': 20.0}, max_steps=8)
        late = run_inprocess('push', 1, 0, 'sequential', '', policy_backend=backend, language=language,
                             rag_monitor=monitor, correction_latency_ms=30.0, max_steps=8)
    finally:
        monitor.close()
    assert r['per_episode'][0]['held_steps'] == 0
    assert r['correction_verdicts'].get('all_clear', 0) >= 3  # every unflagged frame after a flagged one
    assert 'deadline' not in r['command_paths']
    assert late['per_episode'][0]['held_steps'] == 0
    assert set(late['command_paths']) == {'deadline'}
