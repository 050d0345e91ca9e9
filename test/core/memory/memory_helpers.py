"""Shared builders for the failure-memory tests."""
from __future__ import annotations

import numpy as np

from flow_rag_vla_ros.core.memory import FailureCase

DIM = 256


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def embedding_for(i: int, dim: int = DIM) -> np.ndarray:
    """A deterministic random unit vector per integer (distinct ones are nearly orthogonal)."""
    return unit(np.random.default_rng(1000 + i).standard_normal(dim))


def near(v: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return unit(v + sigma * rng.standard_normal(v.shape))


def case(embedding: np.ndarray, failure_type: str = 'drop', seed: int = 0, **kw) -> FailureCase:
    chunk = np.random.default_rng(seed).uniform(-1, 1, (8, 4)).astype(np.float32)
    return FailureCase(embedding=embedding, failed_chunk=chunk, failure_type=failure_type, **kw)
