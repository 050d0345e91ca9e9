"""Eager PyTorch backend (`torch`), CPU or CUDA: the reference every other backend is checked against."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from flow_rag_vla_ros.core.backends.base import (PARTS, BackendUnavailable, PolicyBackend, Preprocess, as_batch,
                                                 load_preprocess)


def resolve_device(device: str) -> str:
    import torch
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise BackendUnavailable(f'device {device!r} requested but CUDA is not available')
    return device


def load_model(checkpoint_dir: Path, device: str = 'cpu'):
    """The trained FlowPolicy (eval mode) from a checkpoint directory."""
    from flow_rag_vla_ros.core.checkpoint import load_policy
    return load_policy(checkpoint_dir, device=device).eval()


def model_shapes(policy) -> tuple[tuple[int, int], int]:
    """(image (H, W), horizon) from the model config; cameras sit side by side: W = S * n_cameras."""
    c = policy.config
    return (int(c.image_size), int(c.image_size) * int(c.n_cameras)), int(c.horizon)


class TorchBackend(PolicyBackend):
    name = 'torch'

    def __init__(self, policy, preprocess: Preprocess | None, image_shape: tuple[int, int], horizon: int,
                 device: str = 'cpu', threads: int = 1, parts: Sequence[str] = PARTS):
        import torch
        self.torch = torch
        if not device.startswith('cuda'):
            torch.set_num_threads(threads)
        self.model = policy.to(device).eval()
        self.preprocess, self.device, self.parts = preprocess, device, tuple(parts)
        self.image_shape, self.horizon = tuple(image_shape), int(horizon)

    def _t(self, x: np.ndarray, ndim: int):
        return self.torch.from_numpy(as_batch(x, ndim)).to(self.device)

    def encode(self, image: np.ndarray) -> np.ndarray:
        self._need('vision')
        with self.torch.inference_mode():
            return self.model.vision(self._t(self.preprocess(image), 4))[0].float().cpu().numpy()

    def act(self, tokens, proprio, language, noise) -> np.ndarray:
        self._need('policy')
        with self.torch.inference_mode():
            out = self.model.sample_actions(self._t(tokens, 3), self._t(proprio, 2), self._t(language, 2),
                                             self._t(noise, 3))
        return out[0].float().cpu().numpy()


def load(checkpoint_dir: Path, parts: Sequence[str] = PARTS, device: str = 'cpu', threads: int = 1,
         preprocess: Preprocess | None = None, **_) -> TorchBackend:
    device = resolve_device(device)
    policy = load_model(Path(checkpoint_dir), device)
    image_shape, horizon = model_shapes(policy)
    if preprocess is None and 'vision' in parts:
        preprocess = load_preprocess(Path(checkpoint_dir))
    return TorchBackend(policy, preprocess, image_shape, horizon, device, threads, parts)
