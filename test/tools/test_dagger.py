"""DAgger relabelling: the policy's own states, each labelled with what the noiseless expert does there."""
import numpy as np
import pytest

from flow_rag_vla_ros.sim.dataset import iter_episodes, load_meta
from flow_rag_vla_ros.sim.experts import STEP_M
from flow_rag_vla_ros.sim.panda_env import PandaEnv, SimConfig
from flow_rag_vla_ros.tools.dagger import relabel
from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint


def reach_expert_label(ee: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """ReachExpert without noise, offsets or random gain: half the error per step, slow near the table."""
    a = 0.5 * (goal - ee) / STEP_M
    if ee[2] < 0.08:
        a[2] = max(a[2], -0.4)
    return np.array([*np.clip(a, -1, 1), 0.0], np.float32)


def test_every_visited_state_is_labelled_by_the_noiseless_expert(tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / 'ckpt', image_size=32, horizon=3)
    written = relabel(str(checkpoint), 'reach', 2, 300, tmp_path / 'relabelled', first_index=10, max_steps=6)
    assert [w['index'] for w in written] == [10, 11] and [w['seed'] for w in written] == [300, 301]
    episodes = list(iter_episodes(tmp_path / 'relabelled', 'reach'))
    env = PandaEnv(SimConfig(task='reach', render=False))
    for ep, record in zip(episodes, written):
        assert ep.seed == record['seed'] and ep.success == record['success'] and len(ep.actions) == record['steps']
        assert ep.images.shape == (record['steps'], 32, 32, 3) and ep.chunks.shape == (record['steps'], 3, 4)
        np.testing.assert_array_equal(ep.actions, ep.chunks[:, 0])
        env.reset(seed=ep.seed)
        goal = env.goal()
        # label t belongs to state t (the proprio recorded with it), not to the state after the policy's action
        for proprio, chunk in zip(ep.proprio, ep.chunks):
            np.testing.assert_allclose(chunk[0], reach_expert_label(proprio[:3].astype(np.float64), goal), atol=1e-4)
            # the rest of the chunk is the expert's own plan from there: Reach halves the distance every step
            assert np.abs(chunk[2, :3]).sum() <= np.abs(chunk[0, :3]).sum() + 1e-6
        # the policy (random weights) moved the arm: these are its states, not the expert's
        assert np.ptp(ep.proprio[:, :3], axis=0).max() > 1e-3
    env.close()


def test_cli_writes_meta_with_the_policy_outcome(tmp_path):
    from flow_rag_vla_ros.cli import main
    checkpoint = make_tiny_checkpoint(tmp_path / 'ckpt', image_size=32)
    out = tmp_path / 'relabelled'
    assert main(['dagger', '--checkpoint', str(checkpoint), '--task', 'push', '--episodes', '2', '--seed', '7',
                 '--out', str(out), '--max-steps', '3']) == 0
    meta = load_meta(out)
    assert meta['tasks']['push']['episodes'] == 2 and meta['tasks']['push']['steps'] == 6
    assert meta['relabelled_by']['push']['policy'] == str(checkpoint.resolve())
    assert sorted(e.seed for e in iter_episodes(out, 'push')) == [7, 8]


def test_an_expert_with_hidden_state_is_refused(tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / 'ckpt', image_size=32)
    with pytest.raises(ValueError, match='keeps state across steps'):
        relabel(str(checkpoint), 'pick_and_place', 1, 0, tmp_path / 'relabelled', max_steps=2)
    assert not (tmp_path / 'relabelled').exists()
