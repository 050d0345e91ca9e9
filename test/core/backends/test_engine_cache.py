"""Engine cache: the key covers ONNX bytes, TensorRT version, GPU name and precision; any change rebuilds."""
from __future__ import annotations

import pytest

from flow_rag_vla_ros.core.backends.engine_cache import EngineCache, engine_key


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / 'policy.onnx'
    path.write_bytes(b'onnx-graph-v1')
    return path


class FakeBuilder:
    def __init__(self):
        self.calls = 0

    def __call__(self, onnx_path):
        self.calls += 1
        return b'plan:' + onnx_path.read_bytes() + b':%d' % self.calls


BASE = ('10.3.0', 'NVIDIA H100 80GB HBM3', 'fp16')


def test_key_changes_with_every_component(onnx_file, tmp_path):
    k = engine_key(onnx_file, *BASE)
    assert engine_key(onnx_file, *BASE).digest == k.digest
    other = tmp_path / 'other.onnx'
    other.write_bytes(b'onnx-graph-v2')
    variants = [engine_key(other, *BASE), engine_key(onnx_file, '10.4.0', *BASE[1:]),
                engine_key(onnx_file, BASE[0], 'NVIDIA RTX 4090', BASE[2]), engine_key(onnx_file, *BASE[:2], 'fp32')]
    digests = {k.digest} | {v.digest for v in variants}
    assert len(digests) == 5


def test_cache_hit_does_not_rebuild(onnx_file, tmp_path):
    cache, build = EngineCache(tmp_path / 'engines'), FakeBuilder()
    key = engine_key(onnx_file, *BASE)
    first, built1 = cache.get_or_build(onnx_file, key, build)
    second, built2 = EngineCache(tmp_path / 'engines').get_or_build(onnx_file, engine_key(onnx_file, *BASE), build)
    assert (built1, built2) == (True, False)
    assert first == second and build.calls == 1


@pytest.mark.parametrize('change', ['onnx', 'trt_version', 'gpu', 'precision'])
def test_any_change_rebuilds(onnx_file, tmp_path, change):
    cache, build = EngineCache(tmp_path / 'engines'), FakeBuilder()
    cache.get_or_build(onnx_file, engine_key(onnx_file, *BASE), build)
    trt, gpu, prec = BASE
    if change == 'onnx':
        onnx_file.write_bytes(b'onnx-graph-v2')
    elif change == 'trt_version':
        trt = '10.5.0'
    elif change == 'gpu':
        gpu = 'NVIDIA Jetson Orin'
    else:
        prec = 'fp32'
    key = engine_key(onnx_file, trt, gpu, prec)
    data, built = cache.get_or_build(onnx_file, key, build)
    assert built and build.calls == 2
    assert cache.lookup(onnx_file, key) == data  # the rebuilt engine is what the cache now serves


def test_tampered_plan_is_rebuilt(onnx_file, tmp_path):
    cache, build = EngineCache(tmp_path / 'engines'), FakeBuilder()
    key = engine_key(onnx_file, *BASE)
    cache.get_or_build(onnx_file, key, build)
    engine_path, _ = cache.paths(onnx_file, key)
    engine_path.write_bytes(b'truncated')
    data, built = cache.get_or_build(onnx_file, key, build)
    assert built and data != b'truncated'


def test_failed_build_leaves_no_entry(onnx_file, tmp_path):
    cache = EngineCache(tmp_path / 'engines')
    key = engine_key(onnx_file, *BASE)

    def broken(_path):
        raise RuntimeError('parser error')

    with pytest.raises(RuntimeError):
        cache.get_or_build(onnx_file, key, broken)
    assert cache.lookup(onnx_file, key) is None
    assert not list((tmp_path / 'engines').glob('*.plan'))
