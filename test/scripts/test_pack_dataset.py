"""scripts/pack_dataset.py: a packed dataset unpacks to the same episode files; a damaged frame is refused."""
import json

import numpy as np
import pytest

from flow_rag_vla_ros.core.spec import INSTRUCTIONS
from flow_rag_vla_ros.sim.dataset import Episode, read_episode, write_episode


@pytest.fixture(scope='module')
def pack(load_script):
    return load_script('pack_dataset')


def episode(seed: int, chunks: bool = False) -> Episode:
    rng = np.random.default_rng(seed)
    t = 4
    image = np.zeros((t, 16, 32, 3), np.uint8)
    image[:, 4:9, 6 + seed:12 + seed] = rng.integers(0, 255, 3, dtype=np.uint8)  # a flat scene with one object
    image[:, :, 16:] = rng.integers(0, 255, (t, 16, 16, 3), dtype=np.uint8)     # and a noisy second camera
    return Episode(image, rng.normal(size=(t, 7)).astype(np.float32), rng.uniform(-1, 1, (t, 4)).astype(np.float32),
                   seed % 2 == 0, INSTRUCTIONS['push'], 'push', seed, '' if seed % 2 == 0 else 'timeout',
                   rng.normal(size=(t, 8, 4)).astype(np.float32) if chunks else None)


def test_unpacked_episodes_equal_the_collected_ones(tmp_path, pack):
    src = tmp_path / 'src'
    for i in range(3):
        write_episode(src, episode(i, chunks=i == 1), i)
    (src / 'meta.json').write_text(json.dumps({'tasks': {'push': {'episodes': 3}}, 'cameras': ['scene', 'side']}))
    assert pack.main(['pack', str(src), str(tmp_path / 'packed'), '--workers', '1']) == 0
    assert pack.main(['unpack', str(tmp_path / 'packed'), str(tmp_path / 'out'), '--workers', '1']) == 0
    for i in range(3):
        a, b = (read_episode(d / 'push' / f'episode_{i:05d}.npz') for d in (src, tmp_path / 'out'))
        for field in ('images', 'proprio', 'actions'):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert (a.success, a.instruction, a.task, a.seed, a.failure_type) == \
               (b.success, b.instruction, b.task, b.seed, b.failure_type)
        assert (a.chunks is None) == (b.chunks is None) and (a.chunks is None or np.array_equal(a.chunks, b.chunks))
    assert json.loads((tmp_path / 'out' / 'meta.json').read_text()) == json.loads((src / 'meta.json').read_text())


def test_a_frame_that_decodes_differently_is_refused(tmp_path, pack):
    pack.pack_episode(episode(0), tmp_path / 'e.npz')
    with np.load(tmp_path / 'e.npz') as z:
        fields = dict(z)
    fields['crc'] = fields['crc'] ^ 1  # as if the bytes had changed in transit
    np.savez(tmp_path / 'bad.npz', **fields)
    with pytest.raises(ValueError, match='differ from the packed ones'):
        pack.unpack_episode(tmp_path / 'bad.npz')
