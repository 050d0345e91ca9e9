"""Mean/std normalisation with statistics computed from the training data and stored in the checkpoint.

`NormalizerStats` is plain data (JSON-able); `FlowPolicy` registers the stats as buffers
(`proprio_mean`, `proprio_std`, `action_mean`, `action_std`) so ONNX exports include the normalisation.
Dimensions that never vary (e.g. the gripper of blocked-gripper tasks) get std = `min_std`, so they
normalise to ~0 instead of dividing by zero.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_STD = 1e-2


@dataclass
class NormalizerStats:
    mean: list[float]
    std: list[float]

    def __post_init__(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f'mean ({len(self.mean)}) and std ({len(self.std)}) differ in length')
        if any(s <= 0 for s in self.std):
            raise ValueError('std must be > 0')

    @classmethod
    def identity(cls, dim: int) -> 'NormalizerStats':
        return cls([0.0] * dim, [1.0] * dim)

    @classmethod
    def from_data(cls, x: np.ndarray, min_std: float = MIN_STD) -> 'NormalizerStats':
        """Stats over all leading axes of x (..., D)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])  # (M, D)
        return cls(x.mean(0).tolist(), np.maximum(x.std(0), min_std).tolist())

    def to_dict(self) -> dict:
        return asdict(self)


def normalize(x, mean, std):
    return (x - mean) / std


def unnormalize(x, mean, std):
    return x * std + mean
