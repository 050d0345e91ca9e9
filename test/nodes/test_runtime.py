"""nodes/runtime.py: the per-frame sampler noise and the cameras a checkpoint needs."""
import json

import numpy as np
import pytest

from flow_rag_vla_ros.nodes.runtime import checkpoint_cameras, frame_noise


def test_frame_noise_is_a_pure_function_of_seed_and_input():
    tokens = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = frame_noise(0, tokens, (8, 4))
    np.testing.assert_array_equal(a, frame_noise(0, tokens.copy(), (8, 4)))  # same input -> same noise
    assert not np.array_equal(a, frame_noise(1, tokens, (8, 4)))  # another seed
    assert not np.array_equal(a, frame_noise(0, tokens + 1e-3, (8, 4)))  # another frame
    assert a.dtype == np.float32 and a.shape == (8, 4)


def _checkpoint(tmp_path, n_cameras, cameras=None):
    doc = {'config': {'n_cameras': n_cameras}, 'extra': {} if cameras is None else {'cameras': cameras}}
    (tmp_path / 'config.json').write_text(json.dumps(doc))
    return tmp_path


def test_checkpoint_cameras_are_the_recorded_list(tmp_path):
    assert checkpoint_cameras(_checkpoint(tmp_path, 2, ['scene', 'side'])) == ['scene', 'side']
    assert checkpoint_cameras(_checkpoint(tmp_path, 1)) == ['scene']  # unrecorded single camera: the default
    assert checkpoint_cameras(tmp_path / 'missing') is None


def test_multi_camera_checkpoint_without_a_matching_camera_list_is_an_error(tmp_path):
    # rendering the scene camera alone would still fill the model's frame (each view is resized), so the
    # policy would run on the wrong images without any error
    with pytest.raises(ValueError, match='records no camera list'):
        checkpoint_cameras(_checkpoint(tmp_path, 2))
    with pytest.raises(ValueError, match='n_cameras=2'):
        checkpoint_cameras(_checkpoint(tmp_path, 2, ['scene']))
