"""`tensorrt`: engines built from the verified ONNX exports with the TensorRT 10 Python API (fp16 default).

Build: `trt.Builder` -> network parsed by `trt.OnnxParser` -> `BuilderConfig` (FP16/BF16 flag, workspace
limit) -> `build_serialized_network`. The plan is cached by `EngineCache` under `<checkpoint>/engines/`,
keyed by sha256(ONNX bytes) + TensorRT version + GPU name + precision: any change rebuilds.
Run: `trt.Runtime.deserialize_cuda_engine`, one execution context, static torch CUDA buffers bound once
with `set_tensor_address`, `execute_async_v3` on a dedicated stream.
`torch2trt=True` (and torch2trt installed) converts the torch modules with torch2trt instead, cached the
same way keyed by the weights' sha256.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from flow_rag_vla_ros.core.backends.base import PARTS, BackendUnavailable, PolicyBackend, as_batch, load_preprocess
from flow_rag_vla_ros.core.backends.engine_cache import EngineCache, engine_key
from flow_rag_vla_ros.core.backends.onnx_backend import FILES, ensure_exported

log = logging.getLogger(__name__)
PRECISIONS = ('fp32', 'fp16', 'bf16')


def _trt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailable(f'TensorRT Python package not installed ({e})') from e
    return trt


def build_engine(onnx_path: Path, precision: str = 'fp16', workspace_bytes: int = 1 << 30) -> bytes:
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch always
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f'TensorRT cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == 'bf16':
        config.set_flag(trt.BuilderFlag.BF16)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f'TensorRT engine build failed for {onnx_path}')
    return bytes(plan)


class TRTEngine:
    """One deserialised engine with static device buffers for every I/O tensor (shapes are static)."""

    def __init__(self, plan: bytes, device: str = 'cuda'):
        import torch
        trt = _trt()
        self.torch = torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeError('TensorRT could not deserialise the engine')
        self.context = self.engine.create_execution_context()
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                  trt.int64: torch.int64, trt.bool: torch.bool}
        self.inputs, self.outputs = {}, {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            buf = torch.empty(shape, dtype=dtypes[self.engine.get_tensor_dtype(name)], device=device)
            self.context.set_tensor_address(name, buf.data_ptr())
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs)[name] = buf
        self.stream = torch.cuda.Stream(device=device)

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        for name, x in feeds.items():
            buf = self.inputs[name]
            buf.copy_(self.torch.from_numpy(np.ascontiguousarray(x)).to(buf.dtype), non_blocking=False)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError('TensorRT execute_async_v3 failed')
        self.stream.synchronize()
        return next(iter(self.outputs.values())).float().cpu().numpy()


class TensorRTBackend(PolicyBackend):
    name = 'tensorrt'

    def __init__(self, engines: dict, preprocess, device: str = 'cuda'):
        self.engines, self.preprocess, self.device = engines, preprocess, device
        self.parts = tuple(p for p in PARTS if p in engines)
        if 'vision' in engines:
            self.image_shape = tuple(engines['vision'].inputs['images'].shape[2:])
        if 'policy' in engines:
            self.horizon = int(engines['policy'].inputs['noise'].shape[1])

    def encode(self, image):
        self._need('vision')
        return self.engines['vision'](images=as_batch(self.preprocess(image), 4))[0]

    def act(self, tokens, proprio, language, noise):
        self._need('policy')
        return self.engines['policy'](tokens=as_batch(tokens, 3), proprio=as_batch(proprio, 2),
                                      language=as_batch(language, 2), noise=as_batch(noise, 3))[0]


class Torch2TRTBackend(PolicyBackend):
    """Same interface over torch2trt `TRTModule`s (the converted vision and sampler)."""
    name = 'tensorrt'

    def __init__(self, modules: dict, preprocess, image_shape, horizon, device: str = 'cuda'):
        import torch
        self.torch, self.modules, self.preprocess, self.device = torch, modules, preprocess, device
        self.parts = tuple(p for p in PARTS if p in modules)
        self.image_shape, self.horizon = tuple(image_shape), int(horizon)

    def _t(self, x, ndim):
        return self.torch.from_numpy(as_batch(x, ndim)).to(self.device)

    def encode(self, image):
        self._need('vision')
        return self.modules['vision'](self._t(self.preprocess(image), 4))[0].float().cpu().numpy()

    def act(self, tokens, proprio, language, noise):
        self._need('policy')
        out = self.modules['policy'](self._t(tokens, 3), self._t(proprio, 2), self._t(language, 2), self._t(noise, 3))
        return out[0].float().cpu().numpy()


def _gpu_name(device: str) -> str:
    import torch
    if not torch.cuda.is_available():
        raise BackendUnavailable('TensorRT needs a CUDA device; torch.cuda.is_available() is False')
    return torch.cuda.get_device_name(torch.device(device if device.startswith('cuda') else 'cuda'))


def _load_torch2trt(checkpoint_dir: Path, parts, device, precision, cache: EngineCache, preprocess):
    try:
        from torch2trt import TRTModule, torch2trt
    except ImportError as e:
        raise BackendUnavailable(f'torch2trt requested but not installed ({e})') from e
    import torch
    from flow_rag_vla_ros.core.backends.torch_backend import load_model, model_shapes
    from flow_rag_vla_ros.core.export import _modules
    trt = _trt()
    policy = load_model(checkpoint_dir, device)
    image_shape, horizon = model_shapes(policy)
    vision, sampler = _modules(policy)
    z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    tokens = vision(z(1, 3, *image_shape))
    examples = {'vision': (vision, [z(1, 3, *image_shape)]),
                'policy': (sampler, [torch.zeros_like(tokens), z(1, 7), z(1, 384), z(1, horizon, 4)])}
    weights = checkpoint_dir / 'model.safetensors'
    modules = {}
    for part in parts:
        module, example = examples[part]
        key = engine_key(weights, trt.__version__, _gpu_name(device), f'{precision}-{part}')

        def build(_path, module=module, example=example):
            converted = torch2trt(module, example, fp16_mode=precision == 'fp16')
            buf = io.BytesIO()
            torch.save(converted.state_dict(), buf)
            return buf.getvalue()

        data, built = cache.get_or_build(checkpoint_dir / f'torch2trt_{part}', key, build)
        trt_module = TRTModule()
        # the cached state dict is plain containers + engine bytes: no pickled code may run from a cache file
        trt_module.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
        modules[part] = trt_module
    return Torch2TRTBackend(modules, preprocess, image_shape, horizon, device)


def load(checkpoint_dir: Path, parts: Sequence[str] = PARTS, device: str = 'cuda', threads: int = 1,
         precision: str = 'fp16', engine_cache_dir: str | Path | None = None, torch2trt: bool = False,
         preprocess=None, **_) -> PolicyBackend:
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}')
    trt = _trt()
    checkpoint_dir = Path(checkpoint_dir)
    device = device if device.startswith('cuda') else 'cuda'
    gpu = _gpu_name(device)
    if preprocess is None and 'vision' in parts:
        preprocess = load_preprocess(checkpoint_dir)
    cache = EngineCache(engine_cache_dir or checkpoint_dir / 'engines')
    if torch2trt:
        return _load_torch2trt(checkpoint_dir, parts, device, precision,
                               EngineCache(cache.cache_dir, suffix='.pth'), preprocess)
    ensure_exported(checkpoint_dir, parts)
    engines = {}
    for part in parts:
        onnx_path = checkpoint_dir / FILES[part]
        key = engine_key(onnx_path, trt.__version__, gpu, precision)
        plan, built = cache.get_or_build(onnx_path, key, lambda p: build_engine(p, precision))
        if built:
            log.info('built TensorRT %s engine for %s on %s (TensorRT %s)', precision, onnx_path.name, gpu,
                     trt.__version__)
        engines[part] = TRTEngine(plan, device)
    return TensorRTBackend(engines, preprocess, device)
