"""Backend latency: policy step = vision encode + full K-step sampling, batch 1, single thread.

`benchmark_backends(checkpoint_dir, names, iters, warmup)` ->
    {name: {'used', 'device', 'policy_ms': {'p50', 'p99', 'mean'}, 'encode_ms': {...}, 'act_ms': {...},
            'encode_ms_paced': {..., 'period_ms'}, 'act_ms_paced': {...}, 'speedup_vs_torch'}}
Each requested backend is loaded strictly (no fallback), so a number is always the named backend's; an
unavailable one reports `{'available': False, 'reason': ...}`. Inputs are fixed (seeded) so every backend
sees the same frames.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from flow_rag_vla_ros.core.backends import load_policy_backend


def summarize(samples_s: Sequence[float]) -> dict:
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {'p50': float(np.percentile(ms, 50)), 'p99': float(np.percentile(ms, 99)), 'mean': float(ms.mean()),
            'n': int(ms.size)}


def time_call(fn: Callable[[], object], iters: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return summarize(samples)


def bench_inputs(image_shape: tuple[int, int], horizon: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {'image': rng.integers(0, 256, (*image_shape, 3), dtype=np.uint8),
            'proprio': rng.standard_normal(7).astype(np.float32) * 0.1,
            'language': (rng.standard_normal(384) / np.sqrt(384)).astype(np.float32),
            'noise': rng.standard_normal((horizon, 4)).astype(np.float32)}


def time_interleaved(fns: dict[str, Callable[[], object]], iters: int, warmup: int, block: int = 10) -> dict:
    """Time several callables under the same machine conditions: blocks of `block` calls each, in turn
    (the order rotates every round), until each has `iters` samples. A shared VM drifts by tens of percent
    within minutes, so timing one backend after the other measures the drift as much as the backends.
    The first call of each block (cold after the switch) is not counted: a node calls one model only."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names, samples = list(fns), {name: [] for name in fns}
    for round_ in range(-(-iters // block)):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            fns[name]()
            for _ in range(min(block, iters - len(samples[name]))):
                t0 = time.perf_counter()
                fns[name]()
                samples[name].append(time.perf_counter() - t0)
    return {name: summarize(v) for name, v in samples.items()}


def time_paced(fns: dict[str, Callable[[], object]], iters: int, period_s: float) -> dict:
    """Time each callable once per `period_s` (sleeping in between), the callables in turn: how a node calls its
    model, once per camera frame. On the 2-core VM the same ONNX Runtime sampler takes ~2.1 ms back to back
    and ~4 ms when called every 50 ms (stop 23): caches and the vCPU go cold in between."""
    samples = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            time.sleep(period_s)
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: summarize(v) for name, v in samples.items()}


def benchmark_backends(checkpoint_dir: str | Path, names: Sequence[str], iters: int = 300, warmup: int = 20,
                       threads: int = 1, device: str = 'cpu', paced_period_ms: float = 50.0, paced_iters: int = 60,
                       **opts) -> dict:
    """Every available backend is timed in alternation with the others (`time_interleaved`), so their ratios
    (`speedup_vs_torch`: torch p50 / this backend's p50) compare like with like. With `paced_period_ms` > 0,
    `encode_ms_paced` / `act_ms_paced` time the same calls once per that period (`time_paced`), as the nodes
    make them."""
    results, loaded = {}, {}
    for name in names:
        try:
            loaded[name] = load_policy_backend(name, checkpoint_dir, device=device, threads=threads, strict=True,
                                               **opts)
        except Exception as e:  # unavailable here: report why, keep benchmarking the others
            results[name] = {'available': False, 'used': 'unavailable', 'reason': str(e)}
    if not loaded:  # nothing to time (e.g. only GPU backends asked for on a CPU machine)
        return {name: results[name] for name in names}
    calls = {}
    for name, backend in loaded.items():
        x = bench_inputs(backend.image_shape, backend.horizon)
        tokens = backend.encode(x['image'])
        calls[name] = {
            'policy_ms': lambda b=backend, x=x: b.policy(x['image'], x['proprio'], x['language'], x['noise']),
            'encode_ms': lambda b=backend, x=x: b.encode(x['image']),
            'act_ms': lambda b=backend, x=x, t=tokens: b.act(t, x['proprio'], x['language'], x['noise'])}
        results[name] = {'used': backend.name, 'device': backend.device, 'available': True}
    for key in ('policy_ms', 'encode_ms', 'act_ms'):
        for name, summary in time_interleaved({n: c[key] for n, c in calls.items()}, iters, warmup).items():
            results[name][key] = summary
    if paced_period_ms > 0 and paced_iters > 0:
        for key in ('encode_ms', 'act_ms'):
            paced = time_paced({n: c[key] for n, c in calls.items()}, paced_iters, paced_period_ms / 1e3)
            for name, summary in paced.items():
                results[name][f'{key}_paced'] = {**summary, 'period_ms': paced_period_ms}
    if 'torch' in loaded:
        for name in loaded:
            results[name]['speedup_vs_torch'] = results['torch']['policy_ms']['p50'] / results[name]['policy_ms']['p50']
    return {name: results[name] for name in names}


def compare_export_modes(policy, image_shape: tuple[int, int], horizon: int, num_steps: int, out_dir: str | Path,
                         iters: int = 500, warmup: int = 50) -> dict:
    """ONNX Runtime latency of (a) context graph + one-step graph called K times vs (b) the unrolled sampler.

    Needs a policy exposing `context_kv(tokens, proprio, language) -> [(k, v), ...]` and
    `velocity(x, t, kv) -> v` with Euler steps from t=1 to t=0 (the structure of `sample_actions`).
    """
    import torch

    from flow_rag_vla_ros.core.export import _torch_export, export_policy, ort_session
    out_dir = Path(out_dir)
    export_policy(policy, out_dir, image_shape, horizon, parts=('vision', 'policy'))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        tok = policy.vision(torch.zeros(1, 3, *image_shape)).numpy()
        kv = policy.context_kv(torch.from_numpy(tok), torch.zeros(1, 7), torch.zeros(1, 384))
    n_layers = len(kv)
    feeds = {'tokens': rng.standard_normal(tok.shape).astype(np.float32),
             'proprio': rng.standard_normal((1, 7)).astype(np.float32),
             'language': (rng.standard_normal((1, 384)) / 20).astype(np.float32),
             'noise': rng.standard_normal((1, horizon, 4)).astype(np.float32)}

    class Context(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, tokens, proprio, language):
            return tuple(t for pair in self.policy.context_kv(tokens, proprio, language) for t in pair)

    class Step(Context):
        def forward(self, x, t, *kv_flat):
            kv_pairs = [(kv_flat[2 * i], kv_flat[2 * i + 1]) for i in range(n_layers)]
            return x - self.policy.velocity(x, t, kv_pairs) / num_steps

    kv_names = [f'{kind}{i}' for i in range(n_layers) for kind in ('k', 'v')]
    ctx_sess = ort_session(_torch_export(Context(), (feeds['tokens'], feeds['proprio'], feeds['language']),
                                         ['tokens', 'proprio', 'language'], kv_names, 17))
    kv_np = ctx_sess.run(None, {k: feeds[k] for k in ('tokens', 'proprio', 'language')})
    step_sess = ort_session(_torch_export(Step(), (feeds['noise'], np.ones(1, np.float32), *kv_np),
                                          ['x', 't', *kv_names], ['x_next'], 17))
    unrolled = ort_session(out_dir / 'policy.onnx')
    ts = [np.full(1, 1.0 - i / num_steps, np.float32) for i in range(num_steps)]

    def stepwise():
        kvs = dict(zip(kv_names, ctx_sess.run(None, {k: feeds[k] for k in ('tokens', 'proprio', 'language')})))
        x = feeds['noise']
        for t in ts:
            x = step_sess.run(None, {'x': x, 't': t, **kvs})[0]
        return x

    def whole():
        return unrolled.run(None, feeds)[0]

    gap = float(np.max(np.abs(stepwise() * policy.action_std.numpy() + policy.action_mean.numpy() - whole())))
    return {'step_with_context_kv': time_call(stepwise, iters, warmup),
            'unrolled_sampler': time_call(whole, iters, warmup), 'max_abs_difference': gap}
