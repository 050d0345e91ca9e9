"""ONNX export: numerics vs PyTorch (relative error <= 1e-4), and bad exports are refused, leaving no file."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from conftest import standin_preprocess
from standin import DivergentVision

from flow_rag_vla_ros.core.export import (POLICY_INPUTS, ExportError, export_policy, export_verified, ort_session,
                                          relative_error, verify_onnx)


def test_export_matches_torch_on_random_and_real_inputs(exported_dir, standin_policy):
    report = json.loads((exported_dir / 'export.json').read_text())
    assert report['opset'] >= 17 and report['export_mode'] == 'unrolled_sampler'
    # installed model files are read by other users (colcon install, docker): not mkstemp's owner-only mode
    assert all((exported_dir / f).stat().st_mode & 0o777 == 0o644 for f in ('vision.onnx', 'policy.onnx'))
    for part in ('vision', 'policy'):
        errors = report['files'][part]['relative_error']
        assert set(errors) == {'random', 'real'}
        assert all(e <= 1e-4 for e in errors.values())
    # independent re-check on fresh inputs
    c = standin_policy.config
    rng = np.random.default_rng(42)
    feeds = {'tokens': rng.standard_normal((1, 4, c.vision_dim)).astype(np.float32),
             'proprio': rng.standard_normal((1, 7)).astype(np.float32),
             'language': rng.standard_normal((1, 384)).astype(np.float32) / 20,
             'noise': rng.standard_normal((1, c.horizon, 4)).astype(np.float32)}
    out = ort_session(exported_dir / 'policy.onnx').run(None, feeds)[0]
    with torch.no_grad():
        ref = standin_policy.sample_actions(*(torch.from_numpy(feeds[k]) for k in POLICY_INPUTS)).numpy()
    assert relative_error(out, ref) <= 1e-4
    image = standin_preprocess(rng.integers(0, 256, (c.image_size, c.image_size, 3), dtype=np.uint8))
    tokens = ort_session(exported_dir / 'vision.onnx').run(None, {'images': image})[0]
    with torch.no_grad():
        assert relative_error(tokens, standin_policy.vision(torch.from_numpy(image)).numpy()) <= 1e-4


def test_divergent_export_is_refused_and_not_written(tmp_path):
    rng = np.random.default_rng(0)
    pos = (np.abs(rng.standard_normal((1, 3, 8, 8))) + 0.1).astype(np.float32)
    neg = -pos
    with pytest.raises(ExportError, match='relative error'):
        export_verified(DivergentVision(), tmp_path / 'vision.onnx', ['images'], ['tokens'],
                        {'random': [(pos,)], 'real': [(neg,)]})
    assert list(tmp_path.iterdir()) == []


def test_corrupted_graph_is_refused(exported_dir, standin_policy):
    model = onnx.load(str(exported_dir / 'policy.onnx'))
    for init in model.graph.initializer:  # a 1 % weight corruption: small, but far above 1e-4
        w = onnx.numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.size > 16:
            init.CopyFrom(onnx.numpy_helper.from_array(w * np.float32(1.01), init.name))
    rng = np.random.default_rng(1)
    c = standin_policy.config
    inputs = (rng.standard_normal((1, 4, c.vision_dim)).astype(np.float32), rng.standard_normal((1, 7)).astype(np.float32),
              rng.standard_normal((1, 384)).astype(np.float32) / 20,
              rng.standard_normal((1, c.horizon, 4)).astype(np.float32))

    def reference(*xs):
        with torch.no_grad():
            return standin_policy.sample_actions(*(torch.from_numpy(x) for x in xs)).numpy()

    with pytest.raises(ExportError):
        verify_onnx(model.SerializeToString(), reference, POLICY_INPUTS, {'random': [inputs]})
    with pytest.raises(ExportError, match='cannot load'):
        verify_onnx(b'not an onnx graph', reference, POLICY_INPUTS, {'random': [inputs]})


def test_failed_export_keeps_previous_files(exported_dir, standin_policy, tmp_path):
    """A refused re-export leaves an existing verified export untouched."""
    import shutil
    out = tmp_path / 'ckpt'
    shutil.copytree(exported_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ExportError):
        export_policy(standin_policy, out, (32, 32), standin_policy.config.horizon, tolerance=0.0)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_opset_below_17_rejected(standin_policy, tmp_path):
    with pytest.raises(ValueError):
        export_policy(standin_policy, tmp_path, (32, 32), 8, opset=16)


def test_same_padded_convs_export_without_pad_nodes_after_ort_fusion(tmp_path):
    """TF-'same' padding (F.pad before the conv) must reach ONNX Runtime in a form its PadFusion folds into
    the Conv: a Pad left in the graph costs a pair of NCHWc layout reorders per conv on the CPU."""
    import onnxruntime as ort

    from flow_rag_vla_ros.core.vision import SameConv2d
    torch.manual_seed(0)
    net = torch.nn.Sequential(SameConv2d(3, 8, 3, stride=2), torch.nn.ReLU6(),  # asymmetric pad (0, 1)
                              SameConv2d(8, 8, 5, groups=8), torch.nn.ReLU6())    # symmetric pad (2, 2)
    x = np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)
    export_verified(net, tmp_path / 'vision.onnx', ['images'], ['tokens'], {'random': [(x,)]})
    graph = onnx.load(str(tmp_path / 'vision.onnx')).graph
    assert [n.op_type for n in graph.node].count('Pad') == 2  # the export itself keeps torch's Pad ...
    assert not any(len(n.input) and n.input[-1] == '' for n in graph.node)  # ... minus the omitted input
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp_path / 'optimized.onnx')
    out = ort.InferenceSession(str(tmp_path / 'vision.onnx'), so, providers=['CPUExecutionProvider']).run(
        None, {'images': x})[0]
    assert 'Pad' not in [n.op_type for n in onnx.load(str(tmp_path / 'optimized.onnx')).graph.node]
    with torch.no_grad():
        assert relative_error(out, net(torch.from_numpy(x)).numpy()) <= 1e-5
