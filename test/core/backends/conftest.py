"""Fixtures: a stand-in FlowPolicy checkpoint (exported) that backends load without the real model."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


def standin_preprocess(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, np.float32) / 255.0
    return ((x - 0.5) / 0.25).transpose(2, 0, 1)[None].copy()


@pytest.fixture(scope='session')
def standin_policy():
    import torch
    from standin import StandInPolicy
    torch.manual_seed(0)
    return StandInPolicy().eval()


@pytest.fixture(scope='session')
def exported_dir(tmp_path_factory, standin_policy):
    from flow_rag_vla_ros.core.export import Samples, export_policy
    out = tmp_path_factory.mktemp('standin_ckpt')
    c = standin_policy.config
    rng = np.random.default_rng(3)
    samples = Samples(images=[rng.integers(0, 256, (c.image_size, c.image_size, 3), dtype=np.uint8)
                              for _ in range(2)],
                      proprio=[rng.standard_normal(7).astype(np.float32)],
                      language=[(rng.standard_normal(384) / 20).astype(np.float32)])
    export_policy(standin_policy, out, (c.image_size, c.image_size), c.horizon, standin_preprocess, samples)
    return out


@pytest.fixture
def standin_loaders(monkeypatch, standin_policy):
    """Make every backend's model/preprocess loading resolve to the stand-in."""
    from flow_rag_vla_ros.core.backends import base, cudagraph_backend, onnx_backend, tensorrt_backend, torch_backend
    for module in (base, torch_backend, onnx_backend, cudagraph_backend, tensorrt_backend):
        monkeypatch.setattr(module, 'load_preprocess', lambda checkpoint_dir: standin_preprocess)
    for module in (torch_backend, cudagraph_backend):
        monkeypatch.setattr(module, 'load_model', lambda checkpoint_dir, device='cpu': standin_policy)
    return standin_policy


def frame(size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {'image': rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            'proprio': rng.standard_normal(7).astype(np.float32) * 0.2,
            'language': (rng.standard_normal(384) / 20).astype(np.float32),
            'noise': rng.standard_normal((8, 4)).astype(np.float32)}
