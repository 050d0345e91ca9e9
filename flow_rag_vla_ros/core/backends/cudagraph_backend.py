"""`torch-cudagraph`: the policy step captured once as CUDA graphs and replayed (no per-kernel launches).

`CUDAGraphRunner` is generic over any callable of tensors: inputs are copied into static device buffers,
the callable is warmed up on a side stream (lazy init, cuBLAS workspaces, autotuning), captured with
`torch.cuda.graph`, and each call is `copy_` into the static inputs + `graph.replay()`. The backend captures
three graphs sharing one memory pool: vision (`encode`), the whole K-step sampler (`act`) and the fused
vision + sampler (`policy`, one replay per camera frame). The model must be capture-safe (no host syncs,
no CPU tensors created inside the loop); a capture failure is a load failure, so the chain falls back.
`precision='bf16'` runs the captured graphs under bf16 autocast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from flow_rag_vla_ros.core.backends.base import PARTS, BackendUnavailable, PolicyBackend, as_batch, load_preprocess
from flow_rag_vla_ros.core.backends.torch_backend import load_model, model_shapes


class CUDAGraphRunner:
    def __init__(self, fn: Callable, example_inputs: Sequence, warmup: int = 3, pool=None):
        import torch
        self.torch = torch
        self.static_inputs = [x.detach().clone() for x in example_inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(warmup):
                fn(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool), torch.inference_mode():
            self.static_output = fn(*self.static_inputs)

    def pool(self):
        return self.graph.pool()

    def __call__(self, *inputs):
        for buf, x in zip(self.static_inputs, inputs):
            buf.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.static_output


class CUDAGraphBackend(PolicyBackend):
    name = 'torch-cudagraph'

    def __init__(self, policy, preprocess, image_shape, horizon, device: str = 'cuda',
                 parts: Sequence[str] = PARTS, precision: str = 'fp32'):
        import torch
        if precision not in ('fp32', 'bf16'):
            raise ValueError("precision must be 'fp32' or 'bf16'")
        self.torch, self.device, self.parts = torch, device, tuple(parts)
        self.preprocess, self.image_shape, self.horizon = preprocess, tuple(image_shape), int(horizon)
        self.model = policy.to(device).eval()
        dtype = torch.bfloat16 if precision == 'bf16' else None
        autocast = (lambda: torch.autocast('cuda', dtype=dtype)) if dtype else None

        def wrap(fn):
            if autocast is None:
                return lambda *a: fn(*a).float()
            def run(*a):
                with autocast():
                    return fn(*a).float()
            return run

        z = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
        h, w = self.image_shape
        with torch.inference_mode():
            tok_shape = self.model.vision(z(1, 3, h, w)).shape
        prop, lang, noise = z(1, 7), z(1, 384), z(1, self.horizon, 4)
        self._encode = self._act = self._fused = None
        pool = None
        if 'vision' in parts:
            self._encode = CUDAGraphRunner(wrap(self.model.vision), [z(1, 3, h, w)])
            pool = self._encode.pool()
        if 'policy' in parts:
            self._act = CUDAGraphRunner(wrap(self.model.sample_actions), [z(*tok_shape), prop, lang, noise], pool=pool)
            pool = self._act.pool()
        if len(self.parts) == 2:
            fused = lambda img, p, l, n: self.model.sample_actions(self.model.vision(img), p, l, n)  # noqa: E731
            self._fused = CUDAGraphRunner(wrap(fused), [z(1, 3, h, w), prop, lang, noise], pool=pool)

    def _t(self, x, ndim):
        return self.torch.from_numpy(as_batch(x, ndim)).pin_memory()

    def encode(self, image):
        self._need('vision')
        return self._encode(self._t(self.preprocess(image), 4))[0].cpu().numpy()

    def act(self, tokens, proprio, language, noise):
        self._need('policy')
        out = self._act(self._t(tokens, 3), self._t(proprio, 2), self._t(language, 2), self._t(noise, 3))
        return out[0].cpu().numpy()

    def policy(self, image, proprio, language, noise) -> np.ndarray:
        if self._fused is None:
            return super().policy(image, proprio, language, noise)
        out = self._fused(self._t(self.preprocess(image), 4), self._t(proprio, 2), self._t(language, 2),
                          self._t(noise, 3))
        return out[0].cpu().numpy()


def load(checkpoint_dir: Path, parts: Sequence[str] = PARTS, device: str = 'cuda', threads: int = 1,
         precision: str = 'fp32', preprocess=None, **_) -> CUDAGraphBackend:
    import torch
    if not torch.cuda.is_available():
        raise BackendUnavailable('CUDA graphs need a CUDA device; torch.cuda.is_available() is False')
    device = device if device.startswith('cuda') else 'cuda'
    policy = load_model(Path(checkpoint_dir), device)
    image_shape, horizon = model_shapes(policy)
    if preprocess is None and 'vision' in parts:
        preprocess = load_preprocess(Path(checkpoint_dir))
    return CUDAGraphBackend(policy, preprocess, image_shape, horizon, device, parts, precision)
