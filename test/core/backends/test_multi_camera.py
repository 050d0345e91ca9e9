"""A checkpoint trained on several cameras (frames side by side) exports and serves at its full frame width."""
from __future__ import annotations

import numpy as np

from flow_rag_vla_ros.core.backends import load_policy_backend
from flow_rag_vla_ros.core.export import export_checkpoint
from flow_rag_vla_ros.tools.testing import make_tiny_checkpoint


def test_two_camera_checkpoint_exports_and_backends_agree(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / 'ckpt', n_cameras=2, image_size=32)
    torch_backend = load_policy_backend('torch', ckpt, strict=True)
    assert torch_backend.image_shape == (32, 64)  # (H, W): two 32 px views side by side

    report = export_checkpoint(ckpt)
    assert report['image_shape'] == [32, 64]
    ort_backend = load_policy_backend('onnxruntime', ckpt, strict=True)
    assert ort_backend.image_shape == (32, 64)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    proprio = rng.standard_normal(7).astype(np.float32)
    language = (rng.standard_normal(384) / np.sqrt(384)).astype(np.float32)
    noise = rng.standard_normal((torch_backend.horizon, 4)).astype(np.float32)
    expected = torch_backend.policy(image, proprio, language, noise)
    np.testing.assert_allclose(ort_backend.policy(image, proprio, language, noise), expected, atol=1e-4)
    # the two views are encoded separately: changing only the second view changes the tokens of its half
    tokens = torch_backend.encode(image)
    image[:, 32:] = 255 - image[:, 32:]
    changed = torch_backend.encode(image)
    half = tokens.shape[0] // 2
    np.testing.assert_allclose(changed[:half], tokens[:half], atol=1e-6)
    assert not np.allclose(changed[half:], tokens[half:])
