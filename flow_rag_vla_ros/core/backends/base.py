"""The one small interface every inference backend implements (see docs/DESIGN.md, runtime backends).

    tokens = backend.encode(image_uint8_hwc)               # (N, C) float32
    chunk  = backend.act(tokens, proprio, language, noise)  # (H, 4) float32
    chunk  = backend.policy(image, proprio, language, noise)  # encode + act (fused where a backend can)

Inputs are single samples (no batch axis) as numpy arrays; outputs are float32 numpy arrays.
`parts` says which halves a process needs ('vision', 'policy'): the vision node never loads the expert,
the policy node never loads the vision encoder.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence

import numpy as np

PARTS = ('vision', 'policy')
Preprocess = Callable[[np.ndarray], np.ndarray]  # uint8 (H, W, 3) -> float32 (1, 3, H, W)


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (missing library, no GPU, missing file); the loader falls back."""


def check_parts(parts: Sequence[str]) -> tuple[str, ...]:
    parts = tuple(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ValueError(f'parts must be a non-empty subset of {PARTS}, got {parts}')
    return parts


class PolicyBackend(ABC):
    name: str = ''
    device: str = 'cpu'
    parts: tuple[str, ...] = PARTS
    image_shape: tuple[int, int] | None = None  # (H, W) the vision encoder expects
    horizon: int | None = None  # H actions per chunk

    @abstractmethod
    def encode(self, image: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB -> visual tokens (N, C) float32."""

    @abstractmethod
    def act(self, tokens: np.ndarray, proprio: np.ndarray, language: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """(N, C), (7,), (384,), (H, 4) -> action chunk (H, 4) float32 (raw, un-normalised)."""

    def policy(self, image: np.ndarray, proprio: np.ndarray, language: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.act(self.encode(image), proprio, language, noise)

    def _need(self, part: str) -> None:
        if part not in self.parts:
            raise RuntimeError(f'backend {self.name!r} was loaded with parts={self.parts}, not {part!r}')

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name={self.name!r}, device={self.device!r}, parts={self.parts})'


def as_batch(x: np.ndarray, ndim: int) -> np.ndarray:
    """float32, C-contiguous, with a leading batch axis of 1 (accepts already-batched input)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == ndim - 1:
        x = x[None]
    if x.ndim != ndim or x.shape[0] != 1:
        raise ValueError(f'expected {ndim - 1}-d input (or batch of 1), got shape {x.shape}')
    return np.ascontiguousarray(x)


def load_preprocess(checkpoint_dir) -> Preprocess:
    """The model's own image preprocessing (core/preprocess.py: cv2 resize + normalisation) for a checkpoint."""
    from flow_rag_vla_ros.core.preprocess import make_preprocess
    return make_preprocess(checkpoint_dir)
