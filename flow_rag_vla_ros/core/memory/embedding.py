"""State embedding for the failure memory: what "a similar state" means.

`state_embedding(visual_tokens (N, C), proprio (7,), language (384,)) -> (D,) float32`, deterministic, unit L2 norm:

  [ w_v * unit(P_v @ mean_n(visual_tokens)) ,  w_p * proprio / proprio_scale ,  w_l * unit(P_l @ language) ]

then the whole vector is L2-normalised again (so cosine = inner product).
- Visual block: mean-pooled tokens (C,), projected to `dim - 7 - language_dim` dims. If C equals that size the
  projection is the identity; otherwise P_v is a fixed Gaussian random projection (Johnson-Lindenstrauss:
  preserves angles in expectation) drawn from `numpy.random.default_rng((seed, C))`, so every process, robot
  and run builds the same matrix for the same C - no fitted state to ship.
- Proprio block: `[ee_x, ee_y, ee_z, ee_vx, ee_vy, ee_vz, finger_width]` divided by `proprio_scale` (workspace
  size ~0.15 m, speed ~0.5 m/s, finger ~0.08 m) so a few centimetres matter as much as the image.
- Language block: 384-d instruction embedding -> `language_dim` dims with a seeded Gaussian projection (same
  reasoning as the visual block); separates tasks, since the instruction set is tiny.
Block weights set the balance; with unit-norm visual/language blocks their contribution is exactly the weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.spec import PROPRIO_DIM

LANGUAGE_DIM_IN = 384


@dataclass
class EmbeddingConfig:
    dim: int = param(256, 'embedding size D = visual block + 7 proprio + language_dim')
    language_dim: int = param(16, 'dims of the projected instruction embedding')
    visual_weight: float = param(1.0, 'weight of the (unit) visual block')
    proprio_weight: float = param(1.0, 'weight of the scaled proprio block')
    language_weight: float = param(0.5, 'weight of the (unit) language block')
    proprio_scale: tuple[float, ...] = param((0.15, 0.15, 0.15, 0.5, 0.5, 0.5, 0.08), 'proprio divisors')
    seed: int = param(20240, 'seed of the fixed random projections')

    def __post_init__(self):
        require(len(self.proprio_scale) == PROPRIO_DIM and min(self.proprio_scale) > 0,
                f'proprio_scale needs {PROPRIO_DIM} positive values')
        require(self.language_dim >= 1, 'language_dim must be >= 1')
        require(self.visual_dim >= 1, f'dim {self.dim} leaves no room for the visual block')

    @property
    def visual_dim(self) -> int:
        return self.dim - PROPRIO_DIM - self.language_dim


@lru_cache(maxsize=16)
def projection(seed: int, n_in: int, n_out: int) -> np.ndarray:
    """Fixed (n_in, n_out) projection: identity when sizes match, else seeded Gaussian / sqrt(n_out)."""
    if n_in == n_out:
        return np.eye(n_in, dtype=np.float32)
    rng = np.random.default_rng((seed, n_in, n_out))
    return (rng.standard_normal((n_in, n_out)) / np.sqrt(n_out)).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def state_embedding(visual_tokens: np.ndarray, proprio: np.ndarray, language: np.ndarray,
                    config: EmbeddingConfig | None = None) -> np.ndarray:
    c = config or EmbeddingConfig()
    tokens = np.asarray(visual_tokens, np.float32)
    if tokens.ndim != 2:
        raise ValueError(f'visual_tokens must be (N, C), got {tokens.shape}')
    proprio = np.asarray(proprio, np.float32).reshape(-1)
    language = np.asarray(language, np.float32).reshape(-1)
    if proprio.shape != (PROPRIO_DIM,):
        raise ValueError(f'proprio must be ({PROPRIO_DIM},), got {proprio.shape}')
    if language.shape != (LANGUAGE_DIM_IN,):
        raise ValueError(f'language must be ({LANGUAGE_DIM_IN},), got {language.shape}')
    pooled = tokens.mean(axis=0)
    visual = _unit(pooled @ projection(c.seed, pooled.shape[0], c.visual_dim))
    lang = _unit(language @ projection(c.seed + 1, LANGUAGE_DIM_IN, c.language_dim))
    prop = proprio / np.asarray(c.proprio_scale, np.float32)
    out = np.concatenate([c.visual_weight * visual, c.proprio_weight * prop, c.language_weight * lang])
    return _unit(out).astype(np.float32)
