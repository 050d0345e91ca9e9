"""Inference backends behind one interface, with a documented fallback chain.

    backend = load_policy_backend('onnxruntime', 'models/vla_v5', device='cpu', threads=1)
    tokens = backend.encode(image_uint8_hwc); chunk = backend.act(tokens, proprio, language, noise)

Backends: `torch` (eager, CPU/CUDA), `torch-cudagraph` (one CUDA graph for vision + the whole sampling
loop), `onnxruntime` (CPU, CUDA EP when installed), `onnxruntime-int8` (dynamic int8 expert),
`tensorrt` (fp16 engines built from the ONNX files, cached; `torch2trt=True` uses torch2trt instead).

Fallback: a backend that cannot load here (library missing, no GPU, no ONNX file and no way to export
one, ...) is replaced by the next one of its chain, with ONE `logging.warning` line naming what was asked,
why each step was unavailable and what is used:
    tensorrt         -> torch-cudagraph -> onnxruntime -> torch
    torch-cudagraph  -> torch
    onnxruntime-int8 -> onnxruntime -> torch
    onnxruntime      -> torch
With `device='cuda'` and no usable GPU the last resort is `torch` on the CPU. `strict=True` raises `BackendUnavailable` instead. An unknown name is a configuration error (ValueError).
Importing this package imports neither torch nor onnxruntime; each backend imports what it needs.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Sequence

from flow_rag_vla_ros.core.backends.base import PARTS, BackendUnavailable, PolicyBackend, check_parts

log = logging.getLogger(__name__)

# name -> "module:function" with signature (checkpoint_dir, parts=..., device=..., threads=..., **opts)
REGISTRY = {
    'torch': 'flow_rag_vla_ros.core.backends.torch_backend:load',
    'torch-cudagraph': 'flow_rag_vla_ros.core.backends.cudagraph_backend:load',
    'onnxruntime': 'flow_rag_vla_ros.core.backends.onnx_backend:load',
    'onnxruntime-int8': 'flow_rag_vla_ros.core.backends.onnx_backend:load_int8',
    'tensorrt': 'flow_rag_vla_ros.core.backends.tensorrt_backend:load',
}
CHAINS = {
    'tensorrt': ('tensorrt', 'torch-cudagraph', 'onnxruntime', 'torch'),
    'torch-cudagraph': ('torch-cudagraph', 'torch'),
    'onnxruntime-int8': ('onnxruntime-int8', 'onnxruntime', 'torch'),
    'onnxruntime': ('onnxruntime', 'torch'),
    'torch': ('torch',),
}
BACKENDS = tuple(REGISTRY)


def _loader(name: str):
    module, func = REGISTRY[name].split(':')
    return getattr(importlib.import_module(module), func)


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ''
    return f'{type(e).__name__}: {text}' if text else type(e).__name__


def load_policy_backend(name: str, checkpoint_dir: str | Path, device: str = 'cpu', threads: int = 1,
                        strict: bool = False, parts: Sequence[str] = PARTS, **opts) -> PolicyBackend:
    """Load `name` (or the first available backend of its chain); `backend.name` says which one runs."""
    if name not in CHAINS:
        raise ValueError(f'unknown policy backend {name!r}; choose one of {", ".join(BACKENDS)}')
    parts = check_parts(parts)
    failures: list[str] = []
    attempts = [(c, device) for c in (CHAINS[name][:1] if strict else CHAINS[name])]
    if not strict and device != 'cpu':
        attempts.append(('torch', 'cpu'))  # last resort: eager torch on the CPU
    for candidate, dev in attempts:
        try:
            backend = _loader(candidate)(Path(checkpoint_dir), parts=parts, device=dev, threads=threads, **opts)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # any load failure (ImportError, BackendUnavailable, CUDA errors) -> next
            if strict:
                raise BackendUnavailable(f'policy backend {name!r} unavailable: {_why(e)}') from e
            failures.append(f'{candidate}{"" if dev == device else f" ({dev})"}: {_why(e)}')
            log.debug('backend %s failed to load', candidate, exc_info=True)
            continue
        if failures:
            log.warning('policy backend %r unavailable (%s); using %r on %s', name, '; '.join(failures),
                        backend.name, backend.device)
        return backend
    raise BackendUnavailable(f'no policy backend could be loaded for {name!r}: {"; ".join(failures)}')


__all__ = ['BACKENDS', 'CHAINS', 'BackendUnavailable', 'PolicyBackend', 'load_policy_backend']
