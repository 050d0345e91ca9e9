"""Small runtime helpers shared by the model nodes (no rclpy)."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from flow_rag_vla_ros.paths import share_dir


def resolve_checkpoint(path: str) -> Path:
    """Absolute paths as given; relative ones against the cwd first, then the package share dir."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p.resolve()
    candidate = share_dir() / p
    if candidate.exists():
        return candidate
    raise FileNotFoundError(f'checkpoint {path!r} not found (looked in {Path.cwd()} and {share_dir()})')


def checkpoint_cameras(checkpoint_dir: Path) -> list[str] | None:
    """The camera list a checkpoint was trained with (recorded by `flow-rag-vla train`); unrecorded
    single-camera checkpoints get the default scene camera (docs/DESIGN.md); None when config.json is
    unreadable. A multi-camera checkpoint without a list, or with one of the wrong length, raises: rendering
    other cameras than the model's would still give a frame of the right size (each view is resized), and
    the policy would fail silently."""
    import json
    try:
        doc = json.loads((Path(checkpoint_dir) / 'config.json').read_text())
    except (OSError, ValueError):
        return None
    cameras = doc.get('extra', {}).get('cameras')
    n_cameras = doc.get('config', {}).get('n_cameras', 1)
    if cameras:
        if len(cameras) != n_cameras:
            raise ValueError(f'checkpoint {checkpoint_dir}: extra.cameras lists {len(cameras)} cameras '
                             f'{list(cameras)} but the model takes n_cameras={n_cameras}')
        return list(cameras)
    if n_cameras == 1:
        return ['scene']
    raise ValueError(f'checkpoint {checkpoint_dir}: the model takes {n_cameras} cameras side by side but '
                     'config.json records no camera list (extra.cameras); without it the sim cannot render '
                     'what the model was trained on')


def frame_noise(seed: int, tokens: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Noise for one frame, a pure function of (seed, input): replaying the same input gives the same chunk."""
    key = (seed ^ zlib.crc32(np.ascontiguousarray(tokens).tobytes())) & 0xFFFFFFFF
    return np.random.default_rng(key).standard_normal(shape).astype(np.float32)
