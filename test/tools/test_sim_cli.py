"""`flow-rag-vla sim` end to end: real node processes, the sim in lockstep, the documented JSON."""
import json

import pytest

from flow_rag_vla_ros.cli import main
from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint

pytestmark = pytest.mark.ros


@pytest.mark.parametrize('layout', ['processes', 'composed'])
def test_sim_command_writes_results_json(tmp_path, layout):
    ckpt = make_tiny_checkpoint(tmp_path / 'ckpt')
    out = tmp_path / 'out.json'
    rc = main(['sim', '--task', 'reach', '--episodes', '2', '--seed', '5', '--checkpoint', str(ckpt),
               '--backend', 'torch', '--layout', layout, '--json', str(out)])
    result = json.loads(out.read_text())
    assert rc == 0 and result['episodes'] == 2
    assert [e['seed'] for e in result['per_episode']] == [5, 6]
    assert 0.0 <= result['success_rate'] <= 1.0
    assert {'p50', 'p95', 'p99'} <= set(result['e2e_ms']) and result['e2e_ms']['n'] == result['frames_commanded']
    assert result['e2e_ms']['p50'] > 0
    assert {'sim', 'vision_encoder', 'flow_policy', 'rag_monitor', 'action_merger'} <= set(result['nodes'])
    # every step was taken on a command derived from its own frame, or (under load) an explicit hold
    steps = sum(e['steps'] for e in result['per_episode'])
    assert steps - sum(e['held_steps'] for e in result['per_episode']) <= result['frames_commanded'] <= steps
