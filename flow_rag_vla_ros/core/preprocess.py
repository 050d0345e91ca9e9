"""Image preprocessing shared by training and every runtime backend: OpenCV + numpy only (no torch).

Split the side-by-side camera frame into cameras, resize each to image_size, ImageNet-normalise, and lay
them back side by side: uint8 (H, W * n_cameras, 3) -> float32 (3, S, S * n_cameras).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from flow_rag_vla_ros.core.configuration_flow_policy import FlowPolicyConfig


def preprocess(image: np.ndarray, config: FlowPolicyConfig) -> np.ndarray:
    """uint8 (H, W * n_cameras, 3) RGB -> float32 (3, S, S * n_cameras), ImageNet-normalised."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'expected a uint8 (H, W, 3) image, got {image.shape} {image.dtype}')
    n, s = config.n_cameras, config.image_size
    if image.shape[1] % n:
        raise ValueError(f'image width {image.shape[1]} is not divisible by n_cameras={n}')
    w = image.shape[1] // n
    views = [image[:, i * w:(i + 1) * w] for i in range(n)]
    views = [v if v.shape[:2] == (s, s) else cv2.resize(v, (s, s), interpolation=cv2.INTER_AREA) for v in views]
    x = np.concatenate(views, axis=1).astype(np.float32) / 255.0  # (S, S*n, 3)
    x = (x - np.asarray(config.image_mean, np.float32)) / np.asarray(config.image_std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, S, S*n)


def make_preprocess(checkpoint_dir):
    """The checkpoint's preprocessing as uint8 (H, W, 3) -> float32 (1, 3, S, S*n) (runtime backends)."""
    from flow_rag_vla_ros.core.config import from_dict
    doc = json.loads((Path(checkpoint_dir) / 'config.json').read_text())
    config = from_dict(FlowPolicyConfig, doc['config'])
    return lambda image: preprocess(image, config)[None]
