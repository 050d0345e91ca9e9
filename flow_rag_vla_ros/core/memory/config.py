"""Configuration of the failure memory (index choice, thresholds, durability)."""
from __future__ import annotations

from dataclasses import dataclass

from flow_rag_vla_ros.core.config import param, require

METRICS = ('cosine', 'l2')
INDEX_KINDS = ('auto', 'flat', 'ivf', 'hnsw')


@dataclass
class MemoryConfig:
    dim: int = param(256, 'state embedding size D (must match EmbeddingConfig.dim)')
    horizon: int = param(8, 'action chunk length H; stored chunks are (H, 4)')
    metric: str = param('cosine', "cosine (inner product on L2-normalised vectors) | l2")
    index: str = param('auto', 'auto: flat up to approx_threshold cases, then ivf | flat | ivf | hnsw')
    approx_threshold: int = param(5_000, 'above this many cases `auto` switches from exact flat to IVF')
    nlist: int = param(0, 'IVF inverted lists; 0 = 2*sqrt(N) at (re)build time')
    nprobe: int = param(16, 'IVF lists visited per query')
    hnsw_m: int = param(32, 'HNSW graph degree')
    hnsw_ef_construction: int = param(40, 'HNSW efConstruction')
    hnsw_ef_search: int = param(64, 'HNSW efSearch')
    use_gpu: bool = param(False, 'GPU index when a faiss GPU build and a GPU are present (else CPU, one log line)')
    similarity_threshold: float = param(0.97, 'search hits below this similarity are dropped')
    top_k: int = param(5, 'hits returned by search() when k is not given')
    dedup_threshold: float = param(0.98, 'an add this similar to a case of the same failure type merges into it')
    cluster_threshold: float = param(0.95, 'clusters(): cases linked when similarity >= this (connected components)')
    max_size: int = param(20_000, 'hard cap on cases; above it the memory prunes to prune_fraction * max_size')
    prune_fraction: float = param(0.9, 'automatic pruning target as a fraction of max_size')
    initial_confidence: float = param(0.5, 'confidence of a new case')
    confidence_rate: float = param(0.3, 'update_confidence step: c += r(1-c) on success, c -= r c on failure')
    directory: str = param('', 'journal + snapshot directory; empty = volatile memory (no durability)')
    snapshot_every: int = param(1_000, 'journal records between snapshots (0 = never snapshot automatically)')
    fsync: bool = param(True, 'fsync every journal record before the call returns (power-loss durable)')

    def __post_init__(self):
        require(self.dim > 0, f'dim must be > 0, got {self.dim}')
        require(self.horizon > 0, f'horizon must be > 0, got {self.horizon}')
        require(self.metric in METRICS, f'metric {self.metric!r} must be one of {METRICS}')
        require(self.index in INDEX_KINDS, f'index {self.index!r} must be one of {INDEX_KINDS}')
        require(self.approx_threshold >= 1, 'approx_threshold must be >= 1')
        require(self.nlist >= 0 and self.nprobe >= 1, 'nlist must be >= 0 and nprobe >= 1')
        require(self.hnsw_m >= 4 and self.hnsw_ef_search >= 1 and self.hnsw_ef_construction >= 1,
                'hnsw_m >= 4 and ef values >= 1')
        require(self.top_k >= 1, 'top_k must be >= 1')
        require(-1.0 <= self.similarity_threshold <= 1.0, 'similarity_threshold must be in [-1, 1]')
        require(-1.0 <= self.dedup_threshold <= 1.0, 'dedup_threshold must be in [-1, 1]')
        require(-1.0 <= self.cluster_threshold <= 1.0, 'cluster_threshold must be in [-1, 1]')
        require(self.max_size >= 1, 'max_size must be >= 1')
        require(0.0 < self.prune_fraction <= 1.0, 'prune_fraction must be in (0, 1]')
        require(0.0 <= self.initial_confidence <= 1.0, 'initial_confidence must be in [0, 1]')
        require(0.0 < self.confidence_rate <= 1.0, 'confidence_rate must be in (0, 1]')
        require(self.snapshot_every >= 0, 'snapshot_every must be >= 0')
