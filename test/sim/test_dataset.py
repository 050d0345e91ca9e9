"""Dataset: DESIGN.md layout, pickle-free round trip, collection with meta.json."""
import json

import numpy as np
import pytest

from flow_rag_vla_ros.core.spec import INSTRUCTIONS
from flow_rag_vla_ros.sim.dataset import Episode, collect, iter_episodes, load_meta, read_episode, write_episode
from flow_rag_vla_ros.sim.panda_env import SimConfig


def make_episode(t=4, success=True):
    rng = np.random.default_rng(0)
    return Episode(rng.integers(0, 255, (t, 8, 8, 3), dtype=np.uint8), rng.normal(size=(t, 7)).astype(np.float32),
                   rng.uniform(-1, 1, (t, 4)).astype(np.float32), success, INSTRUCTIONS['push'], 'push', 12,
                   '' if success else 'timeout')


def test_round_trip_and_layout(tmp_path):
    ep = make_episode(success=False)
    path = write_episode(tmp_path, ep, 3)
    assert path == tmp_path / 'push' / 'episode_00003.npz'
    with np.load(path, allow_pickle=False) as z:  # every field loads without pickle
        assert {'images', 'proprio', 'actions', 'success', 'instruction', 'task', 'seed', 'failure_type'} <= set(z)
        assert z['success'].shape == () and z['seed'].shape == ()
    back = read_episode(path)
    np.testing.assert_array_equal(back.images, ep.images)
    np.testing.assert_array_equal(back.actions, ep.actions)
    assert (back.success, back.instruction, back.seed, back.failure_type) == (False, ep.instruction, 12, 'timeout')
    assert not list(tmp_path.rglob('*.tmp'))


def test_episode_shape_validation():
    ep = make_episode()
    with pytest.raises(ValueError):
        Episode(ep.images[:2], ep.proprio, ep.actions, True, '', 'push', 0, '')


def test_collect_writes_episodes_and_meta(tmp_path):
    stats = collect('reach', 3, 50, tmp_path, SimConfig(task='reach', image_size=32), progress=False)
    episodes = list(iter_episodes(tmp_path, 'reach'))
    assert len(episodes) == 3 and [e.seed for e in episodes] == [50, 51, 52]
    for e in episodes:
        assert e.images.shape[1:] == (32, 32, 3) and e.proprio.shape[1] == 7 and e.actions.shape[1] == 4
        assert e.instruction == INSTRUCTIONS['reach'] and e.task == 'reach'
    meta = load_meta(tmp_path)
    assert meta['tasks']['reach'] == json.loads(json.dumps(stats)) and meta['image_size'] == 32
    assert stats['expert_success_rate'] == sum(e.success for e in episodes) / 3
    # a second task merges into meta.json without dropping the first
    collect('push', 1, 0, tmp_path, SimConfig(task='push', image_size=32), progress=False)
    assert load_meta(tmp_path)['task_list'] == ['reach', 'push']
    assert len(list(iter_episodes(tmp_path))) == 4
    assert 'expert' not in load_meta(tmp_path)['tasks']['push']  # the default expert: nothing to record


def test_collect_records_non_default_expert_settings(tmp_path):
    from flow_rag_vla_ros.cli import main
    from flow_rag_vla_ros.sim.experts import ExpertConfig
    tolerant = ExpertConfig(push_line_tolerance_m=0.04, push_lateral_gain=0.3)
    collect('push', 1, 0, tmp_path, SimConfig(task='push', image_size=32), progress=False, expert_config=tolerant)
    expert = load_meta(tmp_path)['tasks']['push']['expert']
    assert expert['push_line_tolerance_m'] == 0.04 and expert['push_lateral_gain'] == 0.3
    with pytest.raises(SystemExit, match='FIELD=VALUE'):
        main(['collect', '--task', 'push', '--episodes', '1', '--out', str(tmp_path / 'x'), '--expert', 'gain'])
    with pytest.raises(ValueError, match='unknown parameter'):
        main(['collect', '--task', 'push', '--episodes', '1', '--out', str(tmp_path / 'x'), '--expert', 'speed=2'])


def test_relabelled_chunks_round_trip_and_are_validated(tmp_path):
    ep = make_episode(t=5)
    ep.chunks = np.random.default_rng(1).uniform(-1, 1, (5, 8, 4)).astype(np.float32)
    back = read_episode(write_episode(tmp_path, ep, 0))
    np.testing.assert_array_equal(back.chunks, ep.chunks)
    assert read_episode(write_episode(tmp_path, make_episode(), 1)).chunks is None  # demonstrations have none
    with pytest.raises(ValueError, match='chunks must be'):
        Episode(ep.images, ep.proprio, ep.actions, True, '', 'push', 0, '', chunks=ep.chunks[:4])
