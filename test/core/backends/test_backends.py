"""Backends on the stand-in checkpoint: agreement with torch, int8 closeness, fallback chain, staleness, bench."""
from __future__ import annotations

import logging
import shutil
import sys
import time

import numpy as np
import pytest
from conftest import frame

from flow_rag_vla_ros.core.backends import BackendUnavailable, load_policy_backend
from flow_rag_vla_ros.core.backends.bench import benchmark_backends, time_interleaved


@pytest.fixture
def ckpt(tmp_path, exported_dir):
    out = tmp_path / 'ckpt'
    shutil.copytree(exported_dir, out)
    return out


def test_onnxruntime_matches_torch(ckpt, standin_loaders):
    ort = load_policy_backend('onnxruntime', ckpt)
    ref = load_policy_backend('torch', ckpt)
    assert (ort.name, ref.name) == ('onnxruntime', 'torch')
    assert ort.image_shape == ref.image_shape == (32, 32) and ort.horizon == ref.horizon == 8
    x = frame(32)
    tok_ort, tok_ref = ort.encode(x['image']), ref.encode(x['image'])
    assert tok_ort.shape == tok_ref.shape and tok_ort.dtype == np.float32
    np.testing.assert_allclose(tok_ort, tok_ref, rtol=1e-4, atol=1e-5)
    chunk = ort.act(tok_ref, x['proprio'], x['language'], x['noise'])
    assert chunk.shape == (8, 4) and chunk.dtype == np.float32
    np.testing.assert_allclose(chunk, ref.act(tok_ref, x['proprio'], x['language'], x['noise']), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ort.policy(x['image'], x['proprio'], x['language'], x['noise']),
                                  ort.act(tok_ort, x['proprio'], x['language'], x['noise']))


def test_int8_close_to_fp32_and_cached(ckpt, standin_loaders):
    fp32 = load_policy_backend('onnxruntime', ckpt, parts=('policy',))
    int8 = load_policy_backend('onnxruntime-int8', ckpt, parts=('policy',))
    assert int8.name == 'onnxruntime-int8' and (ckpt / 'policy.int8.onnx').exists()
    mtime = (ckpt / 'policy.int8.onnx').stat().st_mtime_ns
    errs = []
    for seed in range(5):
        x = frame(32, seed)
        tokens = np.random.default_rng(seed).standard_normal((4, 32)).astype(np.float32)
        a = fp32.act(tokens, x['proprio'], x['language'], x['noise'])
        b = int8.act(tokens, x['proprio'], x['language'], x['noise'])
        errs.append(np.abs(a - b).max() / np.abs(a).max())
    # dynamic int8 quantises activations per tensor at run time and 10 Euler steps compound it (<= 5 % here);
    # a broken quantised graph is off by O(100 %). What it costs in success is measured by eval (README).
    assert max(errs) < 0.1, errs
    load_policy_backend('onnxruntime-int8', ckpt, parts=('policy',))
    assert (ckpt / 'policy.int8.onnx').stat().st_mtime_ns == mtime  # reused, not re-quantised


def test_int8_quantises_only_the_mlp_down_projections(ckpt):
    import json

    import onnx

    from flow_rag_vla_ros.core.backends.quantize import QUANTIZE, quantize_expert
    path = quantize_expert(ckpt / 'policy.onnx')
    nodes = onnx.load(str(path)).graph.node
    int8_ops = [n.name for n in nodes if n.op_type == 'MatMulInteger']
    fp32_ops = [n.name for n in nodes if n.op_type in ('MatMul', 'Gemm')]
    # every unrolled Euler step's copy of each block's mlp.2 (stand-in: 2 blocks x 10 steps), nothing else
    assert len(int8_ops) == 2 * 10 and all('/mlp/mlp.2' in n for n in int8_ops), int8_ops
    for kept in ('action_in_proj', 'action_out_proj', 'context_projector', 'ctx_k', '/q/', '/mlp/mlp.0'):
        assert any(kept in n for n in fp32_ops), kept
    # an int8 file made with another recipe is not reused
    meta_path = path.with_name(path.name + '.json')
    meta = json.loads(meta_path.read_text())
    assert meta['quantize'] == list(QUANTIZE) and meta['int8_nodes'] == 2 * 10
    meta_path.write_text(json.dumps({**meta, 'quantize': ['.']}))
    mtime = path.stat().st_mtime_ns
    quantize_expert(ckpt / 'policy.onnx')
    assert path.stat().st_mtime_ns != mtime and json.loads(meta_path.read_text())['quantize'] == list(QUANTIZE)


def test_int8_refuses_a_model_without_the_recipe_layers(tmp_path):
    import torch

    from flow_rag_vla_ros.core.backends.quantize import quantize_expert
    from flow_rag_vla_ros.core.export import _torch_export
    x = np.zeros((1, 8), np.float32)
    (tmp_path / 'policy.onnx').write_bytes(_torch_export(torch.nn.Linear(8, 4), (x,), ['x'], ['y'], 17))
    with pytest.raises(ValueError, match='no MatMul matches the int8 recipe'):
        quantize_expert(tmp_path / 'policy.onnx')
    assert not (tmp_path / 'policy.int8.onnx').exists()


def test_parts_load_only_what_is_needed(ckpt, standin_loaders):
    vision = load_policy_backend('onnxruntime', ckpt, parts=('vision',))
    assert vision.parts == ('vision',) and vision.image_shape == (32, 32)
    with pytest.raises(RuntimeError, match='parts'):
        vision.act(np.zeros((4, 32), np.float32), np.zeros(7), np.zeros(384), np.zeros((8, 4)))


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and 'policy backend' in r.getMessage()]


def test_failed_import_falls_back_with_one_warning(ckpt, standin_loaders, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # `import onnxruntime` now raises ImportError
    with caplog.at_level(logging.WARNING):
        backend = load_policy_backend('onnxruntime', ckpt)
    assert backend.name == 'torch'
    (record,) = _warnings(caplog)
    msg = record.getMessage()
    assert "'onnxruntime' unavailable" in msg and 'ModuleNotFoundError' in msg and "using 'torch'" in msg
    assert backend.act(np.zeros((4, 32), np.float32), np.zeros(7), np.zeros(384), np.zeros((8, 4))).shape == (8, 4)


def test_int8_falls_back_to_onnxruntime_when_quantisation_is_missing(ckpt, standin_loaders, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, 'flow_rag_vla_ros.core.backends.quantize', None)
    with caplog.at_level(logging.WARNING):
        backend = load_policy_backend('onnxruntime-int8', ckpt)
    assert backend.name == 'onnxruntime'
    assert len(_warnings(caplog)) == 1 and "using 'onnxruntime'" in _warnings(caplog)[0].getMessage()


def test_tensorrt_chain_without_gpu(ckpt, standin_loaders, monkeypatch, caplog):
    import torch
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with caplog.at_level(logging.WARNING):
        backend = load_policy_backend('tensorrt', ckpt)
    assert backend.name == 'onnxruntime'
    (record,) = _warnings(caplog)
    assert 'tensorrt:' in record.getMessage() and 'torch-cudagraph:' in record.getMessage()


def test_strict_raises_and_unknown_name_is_an_error(ckpt, standin_loaders, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(BackendUnavailable, match='onnxruntime'):
        load_policy_backend('onnxruntime', ckpt, strict=True)
    with pytest.raises(ValueError, match='unknown policy backend'):
        load_policy_backend('openvino', ckpt)


def test_tampered_export_is_not_used(ckpt, standin_loaders, caplog):
    data = bytearray((ckpt / 'policy.onnx').read_bytes())
    data[-1] ^= 0xFF
    (ckpt / 'policy.onnx').write_bytes(bytes(data))
    with pytest.raises(BackendUnavailable, match='differs from the verified export'):
        load_policy_backend('onnxruntime', ckpt, auto_export=False, strict=True)
    with caplog.at_level(logging.WARNING):
        backend = load_policy_backend('onnxruntime', ckpt, auto_export=False)
    assert backend.name == 'torch'


def test_missing_export_is_exported_on_the_fly(ckpt, standin_loaders):
    (ckpt / 'policy.onnx').unlink()
    (ckpt / 'vision.onnx').unlink()
    backend = load_policy_backend('onnxruntime', ckpt, strict=True)
    assert backend.name == 'onnxruntime' and (ckpt / 'policy.onnx').exists()


def test_benchmark_backends_reports_every_requested_backend(ckpt, standin_loaders):
    res = benchmark_backends(ckpt, ['torch', 'onnxruntime', 'tensorrt'], iters=5, warmup=1, paced_period_ms=2.0,
                             paced_iters=3)
    for name in ('torch', 'onnxruntime'):
        r = res[name]
        assert r['used'] == name
        for key in ('policy_ms', 'encode_ms', 'act_ms'):
            assert 0 < r[key]['p50'] <= r[key]['p99'] and r[key]['n'] == 5
        for key in ('encode_ms_paced', 'act_ms_paced'):  # once per period, as a node calls them
            assert r[key]['n'] == 3 and r[key]['p50'] > 0 and r[key]['period_ms'] == 2.0
    assert res['torch']['speedup_vs_torch'] == 1.0
    assert res['onnxruntime']['speedup_vs_torch'] == pytest.approx(
        res['torch']['policy_ms']['p50'] / res['onnxruntime']['policy_ms']['p50'])
    assert res['tensorrt']['available'] is False and res['tensorrt']['reason']
    assert list(res) == ['torch', 'onnxruntime', 'tensorrt']


def test_benchmark_backends_with_none_available_reports_why(ckpt, standin_loaders):
    res = benchmark_backends(ckpt, ['tensorrt'], iters=5, warmup=1)
    assert res['tensorrt']['available'] is False and res['tensorrt']['reason']


def test_time_interleaved_alternates_blocks_and_counts_only_warm_calls():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ('a', 'b', 'c')}
    res = time_interleaved(fns, iters=7, warmup=2, block=3)
    assert {name: r['n'] for name, r in res.items()} == {'a': 7, 'b': 7, 'c': 7}
    assert calls[:6] == ['a', 'a', 'b', 'b', 'c', 'c']  # warm-up
    rounds = calls[6:]
    # each block = one uncounted call after the switch + up to 3 timed ones; the order rotates per round
    assert rounds[:12] == ['a'] * 4 + ['b'] * 4 + ['c'] * 4
    assert rounds[12:24] == ['b'] * 4 + ['c'] * 4 + ['a'] * 4
    assert rounds[24:] == ['c'] * 2 + ['a'] * 2 + ['b'] * 2  # the last, partial block: 1 timed call each


@pytest.mark.parametrize('name', ['onnxruntime', 'onnxruntime-int8'])
def test_onnxruntime_path_does_not_import_torch(ckpt, name):
    """Runtime loads stay torch-free (the one-off int8 quantisation, done by `export --int8`, may not)."""
    import subprocess

    from flow_rag_vla_ros.core.backends.quantize import quantize_expert
    quantize_expert(ckpt / 'policy.onnx')
    code = ('import sys, numpy as np\n'
            'from flow_rag_vla_ros.core.backends import load_policy_backend\n'
            f'b = load_policy_backend({name!r}, {str(ckpt)!r}, parts=("policy",), strict=True)\n'
            'b.act(np.zeros((4, 32), np.float32), np.zeros(7), np.zeros(384), np.zeros((8, 4)))\n'
            'assert "torch" not in sys.modules, "torch imported"\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_cuda_request_without_gpu_ends_on_cpu_torch(ckpt, standin_loaders, monkeypatch, caplog):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with caplog.at_level(logging.WARNING):
        backend = load_policy_backend('torch-cudagraph', ckpt, device='cuda')
    assert (backend.name, backend.device) == ('torch', 'cpu')
    assert len(_warnings(caplog)) == 1 and 'on cpu' in _warnings(caplog)[0].getMessage()


def test_time_paced_sleeps_a_period_before_each_call_and_times_only_the_call():
    from flow_rag_vla_ros.core.backends.bench import time_paced
    stamps = []
    fns = {name: (lambda name=name: stamps.append((name, time.perf_counter()))) for name in ('a', 'b')}
    res = time_paced(fns, iters=3, period_s=0.01)
    assert [n for n, _ in stamps] == ['a', 'b'] * 3  # in turn
    gaps = np.diff([t for _, t in stamps])
    assert (gaps >= 0.01).all()  # a period of sleep before every call
    assert res['a']['n'] == 3 and res['a']['p99'] < 5  # the sleep is not in the sample (ms)
