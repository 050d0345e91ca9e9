"""`flow-rag-vla bench`: latency of the real node graph (pipelines x layouts), retrieval and backends.

Prints a table and writes JSON. Stack latency runs the sim in real-time mode for a fixed number of
frames per pipeline and layout, all in one invocation, so the pipelines are compared on the same machine
state. Rendering is the sim's cost and is excluded: latency starts at each frame's stamp.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from flow_rag_vla_ros.tools.runner import PIPELINES, RunSpec, run_stack

SECTIONS = ('stack', 'retrieval', 'backends')


def register(subparsers) -> None:
    p = subparsers.add_parser('bench', help='latency / retrieval / backend benchmarks')
    p.add_argument('--json', default=None, help='write results JSON here')
    p.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS))
    p.add_argument('--frames', type=int, default=300, help='frames per pipeline and layout')
    p.add_argument('--rate', type=float, default=20.0, help='sim frame rate (Hz) in real-time mode')
    p.add_argument('--pipelines', nargs='+', choices=PIPELINES, default=list(PIPELINES))
    p.add_argument('--layouts', nargs='+', choices=('processes', 'composed'), default=['processes', 'composed'])
    p.add_argument('--task', default='reach')
    p.add_argument('--checkpoint', default='')
    p.add_argument('--backend', default='')
    p.add_argument('--backends', nargs='+', default=['torch', 'onnxruntime', 'onnxruntime-int8',
                                                      'torch-cudagraph', 'tensorrt'])
    p.add_argument('--retrieval-sizes', nargs='+', type=int, default=[10_000, 100_000])
    p.add_argument('--iters', type=int, default=300, help='backend timing iterations')
    p.set_defaults(func=run)


def machine() -> dict:
    import os
    cpu = ''
    try:
        cpu = next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return {'cpu': cpu or platform.processor(), 'cores': os.cpu_count(), 'python': platform.python_version()}


def bench_stack(args) -> dict:
    out: dict = {'layouts': {}}
    for layout in args.layouts:
        runs = {}
        for pipeline in args.pipelines:
            # the watchdog must tolerate the camera period (a new chunk per frame), not just 2 control periods
            stale = max(0.08, 2.0 / args.rate)
            spec = RunSpec(task=args.task, episodes=0, seed=0, pipeline=pipeline, layout=layout,
                           clock_mode='realtime', rate_hz=args.rate, max_frames=args.frames,
                           overrides={'action_merger': {'stale_timeout_s': stale}},
                           checkpoint=args.checkpoint, backend=args.backend, timeout_s=60 + 2 * args.frames / args.rate)
            r = run_stack(spec)
            runs[pipeline] = {k: r[k] for k in ('e2e_ms', 'stage_ms', 'since_frame_ms', 'frames_published',
                                                'frames_commanded', 'dropped_frames', 'frame_rate_hz',
                                                'peak_rss_mb', 'nodes', 'corrections_used')}
            rss = r['peak_rss_mb']
            runs[pipeline]['peak_rss_mb_stack_total'] = sum(v for k, v in rss.items() if k != 'sim')
        out['layouts'][layout] = runs
    # the design's headline numbers: one process per node when measured, else whatever ran
    out['pipelines'] = out['layouts'].get('processes') or next(iter(out['layouts'].values()))
    return out


def run(args: argparse.Namespace) -> int:
    result: dict = {'machine': machine()}
    if 'retrieval' in args.sections:
        from flow_rag_vla_ros.core.memory.bench import retrieval_benchmark
        result['retrieval_ms'] = retrieval_benchmark(sizes=tuple(args.retrieval_sizes))
    if 'backends' in args.sections:
        from flow_rag_vla_ros.core.backends.bench import benchmark_backends
        from flow_rag_vla_ros.nodes.runtime import resolve_checkpoint
        ckpt = resolve_checkpoint(args.checkpoint or 'models/vla_v1')
        result['backends'] = benchmark_backends(ckpt, args.backends, iters=args.iters, warmup=20)
    if 'stack' in args.sections:
        result.update(bench_stack(args))
    print_table(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console()
    fmt = lambda v: '-' if v is None else f'{v:.2f}'  # noqa: E731
    for layout, runs in result.get('layouts', {}).items():
        t = Table(title=f'stack latency, camera stamp -> command (ms), layout={layout}')
        for c in ('pipeline', 'p50', 'p95', 'p99', 'frames', 'dropped', 'Hz', 'stack RSS MB'):
            t.add_column(c)
        for name, r in runs.items():
            e = r['e2e_ms']
            t.add_row(name, fmt(e['p50']), fmt(e['p95']), fmt(e['p99']), str(r['frames_commanded']),
                      str(r['dropped_frames']), fmt(r['frame_rate_hz']), fmt(r['peak_rss_mb_stack_total']))
        console.print(t)
    if 'retrieval_ms' in result:
        t = Table(title='retrieval, single query (ms)')
        for c in ('cases', 'index', 'p50', 'p99'):
            t.add_column(c)
        for size, r in result['retrieval_ms'].items():
            t.add_row(str(size), str(r.get('index', '')), fmt(r['p50']), fmt(r['p99']))
        console.print(t)
    if 'backends' in result:
        t = Table(title='policy step = vision + full K-step sampling (ms)')
        for c in ('requested', 'used', 'p50', 'p99'):
            t.add_column(c)
        for name, r in result['backends'].items():
            pm = r.get('policy_ms') or {}
            t.add_row(name, str(r.get('used', name)), fmt(pm.get('p50')), fmt(pm.get('p99')))
        console.print(t)
