"""nodes/runtime.py: the per-frame sampler noise."""
import numpy as np

from flow_rag_vla_ros.nodes.runtime import frame_noise


def test_frame_noise_is_a_pure_function_of_seed_and_input():
    tokens = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = frame_noise(0, tokens, (8, 4))
    np.testing.assert_array_equal(a, frame_noise(0, tokens.copy(), (8, 4)))  # same input -> same noise
    assert not np.array_equal(a, frame_noise(1, tokens, (8, 4)))  # another seed
    assert not np.array_equal(a, frame_noise(0, tokens + 1e-3, (8, 4)))  # another frame
    assert a.dtype == np.float32 and a.shape == (8, 4)
