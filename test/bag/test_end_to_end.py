"""`sim --record` then a lockstep `replay` with the same checkpoint and backend reproduces the actions.

Exact commands need a deterministic pipeline (flow_only): in the parallel pipeline the monitor's corrections
are asynchronous by design, so whether one lands before a given frame's command depends on timing. There the
chunks (the policy's output) still reproduce exactly, and every recorded frame gets a command.
"""
import json
from pathlib import Path

import pytest

from flow_rag_vla_ros.bag.reader import BagReader
from flow_rag_vla_ros.cli import main
from flow_rag_vla_ros.tools.replay import ReplayConfig, replay_bag

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[2]


def record_and_replay(tmp_path, checkpoint, backend, task='reach', episodes=1, pipeline='flow_only') -> dict:
    bag, sim_json = tmp_path / 'sim_bag', tmp_path / 'sim.json'
    assert main(['sim', '--task', task, '--episodes', str(episodes), '--checkpoint', str(checkpoint),
                 '--backend', backend, '--pipeline', pipeline, '--record', str(bag), '--json', str(sim_json)]) == 0
    # every episode's first frame went out after the merger had restarted (in the recording and the replay)
    assert json.loads(sim_json.read_text())['unacknowledged_starts'] == 0
    with BagReader(bag) as reader:
        recorded_commands = reader.topics['/robot/command'].count
        assert reader.topics['/camera/image_raw'].count >= recorded_commands > 0
    config = ReplayConfig(rate=0.0, checkpoint=str(checkpoint), backend=backend, pipeline=pipeline,
                          startup_timeout_s=120.0)
    result = replay_bag(bag, config)
    summary = {k: result[k] for k in ('frames', 'actions', 'chunks')}
    assert result['frames']['unanswered'] == 0, summary
    assert result['frames']['unacknowledged_starts'] == 0, summary
    assert _nearly_all(result['actions']['n'], result['frames']['recorded_commands']), summary
    assert _nearly_all(result['chunks']['n'], result['actions']['n']), summary
    return result


def _nearly_all(n: int, total: int) -> bool:
    """Observed on this loaded 2-core VM in about 1 run in 10: a recorded command whose camera frame is missing
    from the bag, or one recorded chunk fewer than commands. Likely cause, fixed since: the run started once
    the recorder listed every publisher, before each publisher had learnt of the recorder (matching is per
    side); the start gate now also waits for a message on each required topic, and 14 runs of this file
    after that missed nothing. The bound stays as a guard (1 in 10 messages); exactness is asserted on every
    frame present in both (the MSE checks)."""
    return n > 0 and n >= total - max(1, total // 10)


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt'))


def test_lockstep_replay_reproduces_a_recorded_sim_run(tmp_path, tiny_checkpoint):
    """A small random-weight policy in the shipped format: no trained model needed."""
    result = record_and_replay(tmp_path, tiny_checkpoint, 'torch')
    assert result['actions']['mse'] <= 1e-6, result['actions']
    assert result['chunks']['mse'] <= 1e-6, result['chunks']
    assert len(result['per_episode']) == 2  # warm-up frame + the episode


def test_lockstep_replay_of_the_parallel_pipeline_reproduces_the_chunks(tmp_path, tiny_checkpoint):
    result = record_and_replay(tmp_path, tiny_checkpoint, 'torch', pipeline='parallel')
    assert result['chunks']['mse'] <= 1e-6, result['chunks']
    assert result['bad_outputs'] == []


def _trained_models():
    found = [d for d in (REPO / 'models' / 'reach_v1', REPO / 'models' / 'vla_v5') if (d / 'config.json').is_file()]
    return found or [pytest.param(None, marks=pytest.mark.skip(
        reason='no trained model in models/reach_v1 or models/vla_v5 (train one with `flow-rag-vla train`)'))]


@pytest.mark.slow
@pytest.mark.parametrize('checkpoint', _trained_models())
def test_lockstep_replay_reproduces_the_trained_policy(tmp_path, checkpoint):
    backend = 'onnxruntime' if (checkpoint / 'policy.onnx').is_file() else 'torch'
    result = record_and_replay(tmp_path, checkpoint, backend, episodes=2)  # flow_only: exact
    assert result['actions']['mse'] <= 1e-6, result['actions']
    assert result['chunks']['mse'] <= 1e-6, result['chunks']
