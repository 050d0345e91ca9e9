"""Single-query retrieval latency of the index the memory config picks at a given size.

Data: unit vectors from a mixture of Gaussian clusters (states repeat around a few situations, like rollouts);
queries are stored vectors plus noise (a new frame near a remembered state). One OpenMP thread: a single query
is faster on one thread than on two, and the monitor must not steal the policy's cores.
Reproduce: `flow-rag-vla bench --sections retrieval` or
`python -m flow_rag_vla_ros.core.memory.bench --sizes 10000 100000`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import faiss
import numpy as np

from flow_rag_vla_ros.core.memory import index as ix
from flow_rag_vla_ros.core.memory.config import MemoryConfig


def synthetic_states(n: int, dim: int, rng: np.random.Generator, clusters: int = 256) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    faiss.normalize_L2(x)
    return x


def retrieval_benchmark(sizes=(10_000, 100_000), dim: int | None = None, queries: int = 1000, seed: int = 0,
                        config: MemoryConfig | None = None, k: int | None = None) -> dict:
    """{str(size): {'p50', 'p99', 'mean' (ms), 'index', 'build_s', 'recall_at_k', 'nlist'/'nprobe'}}."""
    config = config or MemoryConfig()
    if dim is not None:
        config = dataclasses.replace(config, dim=dim)
    k = k or config.top_k
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        out = {}
        for n in sizes:
            rng = np.random.default_rng(seed + n)
            xb = synthetic_states(n, config.dim, rng)
            xq = xb[rng.integers(0, n, queries)] + 0.1 * rng.standard_normal((queries, config.dim)).astype(np.float32)
            xq = ix.prepare(config, xq)
            t0 = time.perf_counter()
            index, kind = ix.build_index(config, ix.prepare(config, xb), np.arange(n, dtype=np.int64))
            build_s = time.perf_counter() - t0
            for q in xq[:20]:  # warm-up
                index.search(q[None], k)
            times, found = np.empty(queries), np.empty((queries, k), np.int64)
            for i, q in enumerate(xq):
                t = time.perf_counter_ns()
                _, found[i] = index.search(q[None], k)
                times[i] = (time.perf_counter_ns() - t) / 1e6
            _, truth = ix.exact_index(config, ix.prepare(config, xb)).search(xq, k)
            recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))
            r = {'p50': float(np.percentile(times, 50)), 'p99': float(np.percentile(times, 99)),
                 'mean': float(times.mean()), 'index': kind, 'build_s': build_s, f'recall_at_{k}': recall,
                 'dim': config.dim, 'queries': queries}
            if kind == 'ivf':
                r.update(nlist=ix.auto_nlist(config, n), nprobe=min(config.nprobe, ix.auto_nlist(config, n)))
            out[str(n)] = r
        return out
    finally:
        faiss.omp_set_num_threads(threads)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', nargs='+', type=int, default=[10_000, 100_000])
    p.add_argument('--dim', type=int, default=None)
    p.add_argument('--queries', type=int, default=1000)
    p.add_argument('--index', default='auto', choices=('auto', 'flat', 'ivf', 'hnsw'))
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    result = retrieval_benchmark(tuple(a.sizes), a.dim, a.queries, a.seed, MemoryConfig(index=a.index))
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
