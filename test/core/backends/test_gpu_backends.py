"""GPU backends: CUDA-graph runner / backend and TensorRT numerics. Skipped (with the reason) where absent."""
from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch
from conftest import frame

from flow_rag_vla_ros.core.backends import load_policy_backend

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a CUDA device; none here')
needs_trt = pytest.mark.skipif(importlib.util.find_spec('tensorrt') is None or not torch.cuda.is_available(),
                               reason='TensorRT numerics need the tensorrt package and a CUDA GPU; absent here')


@needs_cuda
def test_cudagraph_runner_replays_new_inputs():
    from flow_rag_vla_ros.core.backends.cudagraph_backend import CUDAGraphRunner
    lin = torch.nn.Linear(16, 8).cuda().eval()
    fn = lambda x: torch.relu(lin(x)) * 2  # noqa: E731
    runner = CUDAGraphRunner(fn, [torch.zeros(4, 16, device='cuda')])
    for seed in range(3):
        x = torch.randn(4, 16, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            torch.testing.assert_close(runner(x).cpu(), fn(x.cuda()).cpu())


@needs_cuda
def test_cudagraph_backend_matches_torch(tmp_path, exported_dir, standin_loaders):
    ckpt = tmp_path / 'ckpt'
    shutil.copytree(exported_dir, ckpt)
    graph = load_policy_backend('torch-cudagraph', ckpt, device='cuda', strict=True)
    ref = load_policy_backend('torch', ckpt, device='cpu')
    x = frame(32)
    out = graph.policy(x['image'], x['proprio'], x['language'], x['noise'])
    np.testing.assert_allclose(out, ref.policy(x['image'], x['proprio'], x['language'], x['noise']),
                               rtol=1e-3, atol=1e-4)


@needs_trt
def test_tensorrt_fp16_close_to_onnxruntime(tmp_path, exported_dir, standin_loaders):
    ckpt = tmp_path / 'ckpt'
    shutil.copytree(exported_dir, ckpt)
    trt = load_policy_backend('tensorrt', ckpt, device='cuda', strict=True)
    ort = load_policy_backend('onnxruntime', ckpt)
    assert trt.name == 'tensorrt' and list((ckpt / 'engines').glob('*.fp16.plan'))
    x = frame(32)
    a = trt.policy(x['image'], x['proprio'], x['language'], x['noise'])
    b = ort.policy(x['image'], x['proprio'], x['language'], x['noise'])
    assert np.abs(a - b).max() <= 2e-2 * max(1.0, np.abs(b).max())
