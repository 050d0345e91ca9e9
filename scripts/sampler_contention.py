"""How much does work on the other CPU slow the policy's sampler? Issue 5's `parallel` vs `flow_only` gap.

In the stack, the monitor embeds and searches each frame's features while the policy node samples its chunk
from the same features, on the other vCPU. This times that overlap without ROS: the ONNX Runtime sampler
(`act`, one call per 50 ms frame, its own process pinned to CPU 0) with a SCHED_IDLE neighbour process on
CPU 1 that starts on the same 50 ms grid, 0.5 ms later, and runs one of:

- `none`: nothing (the baseline);
- `embed_gaussian`: the monitor's state embedding (dense 8064 x 233 Gaussian projection, 7.5 MB; the default);
- `embed_sparse`: the same with the sparse visual projection (0.5 MB);
- `spin`: a 1 ms busy loop touching no memory.

The neighbour caps its BLAS pool at `--neighbour-blas-threads` (1, what the monitor's retrieval thread does:
`nodes.base.limit_native_threads`). With 0 it keeps numpy's OpenBLAS default (one thread per CPU): the dense
projection's gemv then also runs on an OpenBLAS worker thread, which is not SCHED_IDLE (only the thread that
asks is) and may run on CPU 0 - that, not the matrix, is what slowed the sampler in this script's first
version (README "Latency").

Each mode runs `--frames` frames per round, in a new pair of processes (as the bench starts new node processes
every round); rounds rotate the order, so a slow stretch of a shared VM falls on every mode. Output: the
sampler's p50/p95/p99 per mode (pooled and per round) and the neighbour's own time.

    .venv/bin/python scripts/sampler_contention.py --rounds 3 --frames 300 --json out.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np

MODES = ('none', 'embed_gaussian', 'embed_sparse', 'spin')
PERIOD_S = 0.05
NEIGHBOUR_DELAY_S = 0.0005  # the monitor gets the features a hair after the policy does


def paced(fn, start: float, frames: int, delay: float = 0.0) -> list[float]:
    """Call fn once per PERIOD_S on an absolute grid from `start`; ms per call."""
    ms = []
    for k in range(1, frames + 1):
        time.sleep(max(0.0, start + k * PERIOD_S + delay - time.time()))
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def neighbour_call(mode: str):
    from flow_rag_vla_ros.core.memory.embedding import EmbeddingConfig, state_embedding
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((72, 112)).astype(np.float32)  # (N, C): the default encoder, two 96 px cameras
    proprio, language = rng.standard_normal(7).astype(np.float32), rng.standard_normal(384).astype(np.float32)
    if mode == 'none':
        return lambda: None
    if mode == 'spin':
        def spin():
            end = time.perf_counter() + 0.001
            while time.perf_counter() < end:
                pass
        return spin
    config = EmbeddingConfig(visual_projection=mode.removeprefix('embed_'))
    return lambda: state_embedding(tokens, proprio, language, config)


def neighbour(mode: str, blas_threads: int, start: float, frames: int, out: mp.Queue) -> None:
    os.sched_setaffinity(0, {1})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # as the monitor process runs
    if blas_threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(blas_threads)
    fn = neighbour_call(mode)
    fn()
    out.put(paced(fn, start, frames, NEIGHBOUR_DELAY_S))


def load_sampler(checkpoint: str):
    """The ONNX Runtime sampler on CPU 0, warmed up: a callable, as the policy node calls it."""
    from flow_rag_vla_ros.core.backends import load_policy_backend
    from flow_rag_vla_ros.core.backends.bench import bench_inputs
    os.sched_setaffinity(0, {0})
    backend = load_policy_backend('onnxruntime', checkpoint, strict=True)
    x = bench_inputs(backend.image_shape, backend.horizon)
    tokens = backend.encode(x['image'])
    act = lambda: backend.act(tokens, x['proprio'], x['language'], x['noise'])  # noqa: E731
    act()
    return act


def sampler_process(checkpoint: str, start: float, frames: int, out: mp.Queue) -> None:
    out.put(paced(load_sampler(checkpoint), start, frames))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', default='models/reach_v2')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--frames', type=int, default=300, help='sampler calls per mode and round')
    p.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES))
    p.add_argument('--neighbour-blas-threads', type=int, default=1,
                   help="the neighbour's BLAS pool size (1: as the monitor caps it; 0: numpy's default)")
    p.add_argument('--json', default='')
    a = p.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit('needs two CPUs')
    from flow_rag_vla_ros.core.latency import summarize
    from flow_rag_vla_ros.tools.bench import machine

    ctx = mp.get_context('spawn')
    sampler = {m: [] for m in a.modes}
    rounds = []
    for r in range(a.rounds):
        order = a.modes[r % len(a.modes):] + a.modes[:r % len(a.modes)]
        this_round = {}
        for mode in order:
            out, sampler_out = ctx.Queue(), ctx.Queue()
            start = time.time() + 4.0  # imports, model loads and first calls finish before the grid starts
            procs = [ctx.Process(target=neighbour, args=(mode, a.neighbour_blas_threads, start, a.frames + 4, out)),
                     ctx.Process(target=sampler_process, args=(a.checkpoint, start, a.frames, sampler_out))]
            for proc in procs:
                proc.start()
            ms = sampler_out.get(timeout=120)
            neighbour_ms = out.get(timeout=120)
            for proc in procs:
                proc.join()
            sampler[mode] += ms
            this_round[mode] = {'sampler_ms': summarize(ms), 'neighbour_ms': summarize(neighbour_ms)}
        rounds.append(this_round)
    result = {'machine': machine(), 'checkpoint': a.checkpoint, 'period_ms': PERIOD_S * 1e3,
              'neighbour_blas_threads': a.neighbour_blas_threads or 'numpy default',
              'modes': {m: summarize(v) for m, v in sampler.items()}, 'rounds': rounds}
    print(json.dumps(result['modes']))
    from rich.console import Console
    from rich.table import Table
    t = Table(title='ONNX Runtime sampler (ms), one call per 50 ms on CPU 0, neighbour on CPU 1'
                    + f', neighbour BLAS threads: {a.neighbour_blas_threads or "numpy default"}')
    for col in ('neighbour', 'p50', 'p95', 'p99', 'per-round p95', 'neighbour p50'):
        t.add_column(col)
    for m, s in result['modes'].items():
        t.add_row(m, f"{s['p50']:.2f}", f"{s['p95']:.2f}", f"{s['p99']:.2f}",
                  ' / '.join(f"{r[m]['sampler_ms']['p95']:.2f}" for r in rounds),
                  ' / '.join(f"{r[m]['neighbour_ms']['p50']:.2f}" for r in rounds))
    Console().print(t)
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
