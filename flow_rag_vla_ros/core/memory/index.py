"""FAISS index construction for the failure memory, the similarity scale, and a readers-writer lock.

Index kinds (all keep the memory's case ids as FAISS ids, so a hit maps straight to its case):
- flat: `IndexIDMap2(IndexFlatIP | IndexFlatL2)`; exact; `remove_ids` in O(N).
- ivf:  `IndexIVFFlat` with ids stored in its inverted lists (`add_with_ids`); `remove_ids` supported.
        Trained (k-means) on the cases present at build time; the memory rebuilds it when it has grown
        4x since training or crosses back below the threshold.
- hnsw: `IndexIDMap2(IndexHNSWFlat)`; HNSW cannot remove vectors, so `FailureMemory.remove` rebuilds the
        index from the case table (cost: a full HNSW build; prefer ivf when removals are frequent).
`auto` = flat up to `approx_threshold` cases, ivf above (fast to build, supports removal, p99 well under the
latency budget at 100k cases on one CPU thread; see bench.py).

Similarity (what thresholds compare against, higher = more similar):
- cosine: inner product of L2-normalised vectors, in [-1, 1];
- l2: `1 - d^2 / 2` with d the Euclidean distance; equals the cosine for unit vectors, so the same thresholds
  keep their meaning for the (unit-norm) state embeddings.
"""
from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager

import faiss
import numpy as np

from flow_rag_vla_ros.core.memory.config import MemoryConfig

log = logging.getLogger(__name__)
_gpu_note_logged = False


def choose_kind(config: MemoryConfig, n: int) -> str:
    if config.index != 'auto':
        return config.index
    return 'flat' if n <= config.approx_threshold else 'ivf'


def auto_nlist(config: MemoryConfig, n: int) -> int:
    nlist = config.nlist or int(2 * math.sqrt(max(n, 1)))
    return max(1, min(nlist, n // 39))  # faiss k-means wants >= 39 points per centroid


def _faiss_metric(config: MemoryConfig) -> int:
    return faiss.METRIC_INNER_PRODUCT if config.metric == 'cosine' else faiss.METRIC_L2


def prepare(config: MemoryConfig, x: np.ndarray) -> np.ndarray:
    """(N, D) float32 contiguous; L2-normalised rows for the cosine metric."""
    x = np.ascontiguousarray(np.atleast_2d(np.asarray(x, dtype=np.float32)))
    if x.shape[1] != config.dim:
        raise ValueError(f'embedding has {x.shape[1]} dims, memory expects {config.dim}')
    if config.metric == 'cosine':
        x = x.copy()
        faiss.normalize_L2(x)
    return x


def to_similarity(config: MemoryConfig, scores: np.ndarray) -> np.ndarray:
    return scores if config.metric == 'cosine' else 1.0 - scores / 2.0


def similarity_radius(config: MemoryConfig, threshold: float) -> float:
    """faiss range_search radius meaning `similarity >= threshold` (IP: score > r; L2: d^2 < r)."""
    return threshold - 1e-6 if config.metric == 'cosine' else 2.0 * (1.0 - threshold) + 1e-6


def exact_index(config: MemoryConfig, x: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(config.dim) if config.metric == 'cosine' else faiss.IndexFlatL2(config.dim)
    if len(x):
        index.add(x)
    return index


def gpu_available() -> bool:
    return hasattr(faiss, 'StandardGpuResources') and faiss.get_num_gpus() > 0


def build_index(config: MemoryConfig, x: np.ndarray, ids: np.ndarray, kind: str | None = None) -> tuple[faiss.Index, str]:
    """A populated index of `kind` (default: the one the config picks for len(x)) and its kind name.

    `x` must already be `prepare`d. IVF needs at least one vector to train; with none it falls back to flat.
    """
    n = len(x)
    kind = kind or choose_kind(config, n)
    metric = _faiss_metric(config)
    if kind == 'ivf' and n == 0:
        kind = 'flat'
    if kind == 'flat':
        base = faiss.IndexFlatIP(config.dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(config.dim)
        index = faiss.IndexIDMap2(base)
    elif kind == 'ivf':
        nlist = auto_nlist(config, n)
        quantizer = faiss.IndexFlatIP(config.dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(config.dim)
        index = faiss.IndexIVFFlat(quantizer, config.dim, nlist, metric)
        index.cp.max_points_per_centroid = 64  # k-means on a sample: bounded build time
        rng = np.random.default_rng(0)
        sample = x if n <= 64 * nlist else x[rng.choice(n, 64 * nlist, replace=False)]
        index.train(sample)
        index.nprobe = min(config.nprobe, nlist)
    elif kind == 'hnsw':
        base = faiss.IndexHNSWFlat(config.dim, config.hnsw_m, metric)
        base.hnsw.efConstruction = config.hnsw_ef_construction
        base.hnsw.efSearch = config.hnsw_ef_search
        index = faiss.IndexIDMap2(base)
    else:
        raise ValueError(f'unknown index kind {kind!r}')
    if n:
        index.add_with_ids(x, np.asarray(ids, dtype=np.int64))
    return _maybe_gpu(config, index, kind), kind


def _maybe_gpu(config: MemoryConfig, index: faiss.Index, kind: str) -> faiss.Index:
    global _gpu_note_logged
    if not config.use_gpu:
        return index
    if not gpu_available():
        if not _gpu_note_logged:
            log.info('failure memory: use_gpu requested but no faiss GPU build / GPU present; using the CPU index')
            _gpu_note_logged = True
        return index
    try:
        res = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, 0, index)
        gpu._resources_ref = res
        return gpu
    except Exception as e:  # e.g. HNSW has no GPU implementation
        if not _gpu_note_logged:
            log.info('failure memory: %s index cannot move to the GPU (%s); using the CPU index', kind, e)
            _gpu_note_logged = True
        return index


class RWLock:
    """Many concurrent readers or one writer; writers are preferred so a stream of searches cannot starve adds."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
