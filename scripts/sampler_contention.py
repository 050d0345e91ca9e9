"""How much does work on the other CPU slow the policy's sampler? Issue 5's `parallel` vs `flow_only` gap.

In the stack, the monitor embeds and searches each frame's features while the policy node samples its chunk
from the same features, on the other vCPU. This times that overlap without ROS: the ONNX Runtime sampler
(`act`, one call per 50 ms frame, pinned to CPU 0) with a SCHED_IDLE neighbour process on CPU 1 that starts
on the same 50 ms grid, 0.5 ms later, and runs one of:

- `none`: nothing (the baseline);
- `embed_sparse`: the monitor's state embedding as shipped (sparse visual projection, 0.5 MB);
- `embed_gaussian`: the state embedding before stop 24 (dense 8064 x 233 Gaussian projection, 7.5 MB);
- `spin`: a 1 ms busy loop touching no memory (the same CPU time, no memory traffic).

Each mode runs `--frames` frames per round; rounds rotate the order, so a slow stretch of a shared VM falls
on every mode. Output: the sampler's p50/p95/p99 per mode (pooled and per round) and the neighbour's own time.
By default one sampler process serves every mode; `--fresh-sampler` starts a new one per mode and round (the
bench's node processes are new every round). On the 2-core VM of stop 24 only the fresh sampler was slowed by
the dense projection's neighbour (README "Latency").

    .venv/bin/python scripts/sampler_contention.py --rounds 3 --frames 300 --json out.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np

MODES = ('none', 'embed_sparse', 'embed_gaussian', 'spin')
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


def neighbour(mode: str, start: float, frames: int, out: mp.Queue) -> None:
    os.sched_setaffinity(0, {1})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # as the monitor process runs
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


def fresh_sampler(checkpoint: str, start: float, frames: int, out: mp.Queue) -> None:
    out.put(paced(load_sampler(checkpoint), start, frames))


def summary(ms: list[float]) -> dict:
    return {f'p{q}': round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)} | {'n': len(ms)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', default='models/reach_v2')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--frames', type=int, default=300, help='sampler calls per mode and round')
    p.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES))
    p.add_argument('--fresh-sampler', action='store_true', help='a new sampler process per mode and round')
    p.add_argument('--json', default='')
    a = p.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit('needs two CPUs')
    from flow_rag_vla_ros.tools.bench import machine

    act = None if a.fresh_sampler else load_sampler(a.checkpoint)
    ctx = mp.get_context('spawn')
    sampler = {m: [] for m in a.modes}
    rounds = []
    for r in range(a.rounds):
        order = a.modes[r % len(a.modes):] + a.modes[:r % len(a.modes)]
        this_round = {}
        for mode in order:
            out, sampler_out = ctx.Queue(), ctx.Queue()
            start = time.time() + 4.0  # imports, model loads and first calls finish before the grid starts
            procs = [ctx.Process(target=neighbour, args=(mode, start, a.frames + 4, out))]
            if a.fresh_sampler:
                procs.append(ctx.Process(target=fresh_sampler, args=(a.checkpoint, start, a.frames, sampler_out)))
            for proc in procs:
                proc.start()
            ms = sampler_out.get(timeout=120) if a.fresh_sampler else paced(act, start, a.frames)
            neighbour_ms = out.get(timeout=120)
            for proc in procs:
                proc.join()
            sampler[mode] += ms
            this_round[mode] = {'sampler_ms': summary(ms), 'neighbour_ms': summary(neighbour_ms)}
        rounds.append(this_round)
    result = {'machine': machine(), 'checkpoint': a.checkpoint, 'period_ms': PERIOD_S * 1e3,
              'fresh_sampler': a.fresh_sampler,
              'modes': {m: summary(v) for m, v in sampler.items()}, 'rounds': rounds}
    print(json.dumps(result['modes']))
    from rich.console import Console
    from rich.table import Table
    t = Table(title='ONNX Runtime sampler (ms), one call per 50 ms on CPU 0, neighbour on CPU 1'
                    + (', a new sampler process per mode and round' if a.fresh_sampler else ''))
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
