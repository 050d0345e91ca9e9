"""State embedding for the failure memory: what "a similar state" means.

`state_embedding(visual_tokens (N, C), proprio (7,), language (384,)) -> (D,) float32`, deterministic, unit L2 norm:

  [ w_v * unit(P_v @ visual(visual_tokens)) ,  w_p * proprio / proprio_scale ,  w_l * unit(P_l @ language) ]

then the whole vector is L2-normalised again (so cosine = inner product).
- Visual block, `visual_pooling`:
  * ``spatial`` (default): the tokens keep their layout. Each token minus the frame's mean token
    (`t_n - mean_n(t)`: what is shared by the whole frame - lighting, overall colour - cancels, what sits WHERE
    remains), flattened to (N*C,) in token order, then projected. Two frames that differ only in where a
    small object / target is differ in the few tokens covering it, and keep that difference here.
  * ``mean``: mean-pooled tokens (C,) (the old embedding): position-blind - frames that differ only in
    where the target is look alike, so a failure memory matches every state of every episode.
  The result is projected to `visual_dim = dim - 7 - language_dim` dims by a fixed random projection
  (Johnson-Lindenstrauss: preserves angles in expectation), `visual_projection`:
  * ``gaussian`` (default): a dense Gaussian / sqrt(n_out) matrix.
  * ``sparse``: a sparse sign projection (Kane & Nelson's sparse JL): every input coordinate goes to
    `projection_nonzeros` random outputs with random signs, scaled 1/sqrt(nonzeros). For the default encoder's
    72 x 112 tokens the dense matrix is 8064 x 233 floats, 7.5 MB read from memory once per frame, the sparse
    one 8064 x 8 entries (0.5 MB): the monitor node spends ~0.5 ms less CPU per frame. Not the default: it did
    not narrow the policy path's latency, and on the Push revisits it matched as well or a little worse
    (stop 24, README "Latency" and "RAG failure memory").
  If the input size equals visual_dim the projection is the identity. Matrices are drawn from
  `numpy.random.default_rng((seed, n_in, n_out[, nonzeros]))`, so every process, robot and run builds the same
  one for the same token shape - no fitted state to ship. (The embedding depends on N, C and these settings: a
  memory built with one does not match another's; `embedding_id` names them and the memory checks it.)
- Proprio block: `[ee_x, ee_y, ee_z, ee_vx, ee_vy, ee_vz, finger_width]` divided by `proprio_scale` (workspace
  size ~0.15 m, speed ~0.5 m/s, finger ~0.08 m) so a few centimetres matter as much as the image.
- Language block: 384-d instruction embedding -> `language_dim` dims with a seeded Gaussian projection (same
  reasoning as the visual block); separates tasks, since the instruction set is tiny.
Block weights set the balance; with unit-norm visual/language blocks their contribution is exactly the weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse

from flow_rag_vla_ros.core.config import param, require
from flow_rag_vla_ros.core.spec import PROPRIO_DIM

LANGUAGE_DIM_IN = 384
VISUAL_POOLING = ('spatial', 'mean')
VISUAL_PROJECTIONS = ('sparse', 'gaussian')


@dataclass
class EmbeddingConfig:
    dim: int = param(256, 'embedding size D = visual block + 7 proprio + language_dim')
    language_dim: int = param(16, 'dims of the projected instruction embedding')
    visual_weight: float = param(1.0, 'weight of the (unit) visual block')
    proprio_weight: float = param(1.0, 'weight of the scaled proprio block')
    language_weight: float = param(0.5, 'weight of the (unit) language block')
    proprio_scale: tuple[float, ...] = param((0.15, 0.15, 0.15, 0.5, 0.5, 0.5, 0.08), 'proprio divisors')
    seed: int = param(20240, 'seed of the fixed random projections')
    visual_pooling: str = param('spatial', "spatial: centred tokens, flattened in layout order | mean: mean-pooled")
    visual_projection: str = param('gaussian', 'gaussian: dense random projection | sparse: sparse sign '
                                               'projection (less memory traffic; see the module docstring)')
    projection_nonzeros: int = param(8, 'sparse projection: outputs each input coordinate goes to')

    def __post_init__(self):
        require(len(self.proprio_scale) == PROPRIO_DIM and min(self.proprio_scale) > 0,
                f'proprio_scale needs {PROPRIO_DIM} positive values')
        require(self.language_dim >= 1, 'language_dim must be >= 1')
        require(self.visual_pooling in VISUAL_POOLING, f'visual_pooling must be one of {VISUAL_POOLING}')
        require(self.visual_projection in VISUAL_PROJECTIONS,
                f'visual_projection must be one of {VISUAL_PROJECTIONS}')
        require(1 <= self.projection_nonzeros <= self.visual_dim,
                f'projection_nonzeros must be in [1, visual_dim={self.visual_dim}]')
        require(self.visual_dim >= 1, f'dim {self.dim} leaves no room for the visual block')

    @property
    def visual_dim(self) -> int:
        return self.dim - PROPRIO_DIM - self.language_dim

    @property
    def embedding_id(self) -> str:
        """What the memory records beside its embeddings: two memories match only if this is equal (the token
        shape is not in it: dim checks catch only a size change)."""
        projection = (f'sparse{self.projection_nonzeros}' if self.visual_projection == 'sparse' else 'gaussian')
        return (f'{self.visual_pooling}/{projection}/d{self.dim}/l{self.language_dim}/s{self.seed}/'
                f'w{self.visual_weight:g},{self.proprio_weight:g},{self.language_weight:g}/'
                f'p{",".join(f"{x:g}" for x in self.proprio_scale)}')


@lru_cache(maxsize=16)
def projection(seed: int, n_in: int, n_out: int) -> np.ndarray:
    """Fixed (n_in, n_out) projection: identity when sizes match, else seeded Gaussian / sqrt(n_out)."""
    if n_in == n_out:
        return np.eye(n_in, dtype=np.float32)
    rng = np.random.default_rng((seed, n_in, n_out))
    return (rng.standard_normal((n_in, n_out)) / np.sqrt(n_out)).astype(np.float32)


@lru_cache(maxsize=16)
def sparse_projection(seed: int, n_in: int, n_out: int, nonzeros: int) -> scipy.sparse.csr_matrix | np.ndarray:
    """Fixed (n_in, n_out) sparse sign projection: row i has `nonzeros` entries +-1/sqrt(nonzeros) in distinct
    random columns, so every input coordinate counts and E|xP|^2 = |x|^2. Identity when sizes match."""
    if n_in == n_out:
        return np.eye(n_in, dtype=np.float32)
    import scipy.sparse  # here, not at the top: ~10 MB more in every monitor that keeps the dense default
    rng = np.random.default_rng((seed, n_in, n_out, nonzeros))
    columns = rng.random((n_in, n_out)).argsort(axis=1)[:, :nonzeros]  # (n_in, s) distinct per row
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=(n_in, nonzeros)) / np.float32(np.sqrt(nonzeros))
    rows = np.repeat(np.arange(n_in), nonzeros)  # (n_in * s,)
    return scipy.sparse.csr_matrix((signs.reshape(-1), (rows, columns.reshape(-1))), shape=(n_in, n_out),
                                   dtype=np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def visual_features(tokens: np.ndarray, pooling: str = 'spatial') -> np.ndarray:
    """(N, C) tokens -> the un-projected visual feature vector (see module docstring)."""
    mean = tokens.mean(axis=0)
    if pooling == 'mean':
        return mean
    return (tokens - mean).reshape(-1)


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
    pooled = visual_features(tokens, c.visual_pooling)
    if c.visual_projection == 'sparse':
        p_v = sparse_projection(c.seed, pooled.shape[0], c.visual_dim, c.projection_nonzeros)
    else:
        p_v = projection(c.seed, pooled.shape[0], c.visual_dim)
    visual = _unit(np.asarray(pooled @ p_v, np.float32).reshape(-1))  # (visual_dim,)
    lang = _unit(language @ projection(c.seed + 1, LANGUAGE_DIM_IN, c.language_dim))
    prop = proprio / np.asarray(c.proprio_scale, np.float32)
    out = np.concatenate([c.visual_weight * visual, c.proprio_weight * prop, c.language_weight * lang])
    return _unit(out).astype(np.float32)
