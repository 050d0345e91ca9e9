"""`flow-rag-vla bench`: latency of the real node graph, retrieval and backends. Prints tables, writes JSON.

Two stack measurements, every pipeline in one invocation so they are compared on the same machine state:
- `replay` (the headline `pipelines` key): the stack nodes, one process each, fed recorded camera frames,
  proprio and events at a fixed rate, the way a camera driver feeds them on a robot. The frames come from a
  lockstep sim run recorded first. Latency = frame stamp (its publish time) -> command received.
- `stack` (`sim_loop`): the sim in real-time mode in the loop, per pipeline and layout. Latency starts at
  each frame's stamp (after rendering), but PyBullet's CPU renderer (~20 ms per camera view here) runs on
  the same cores as the stack, so these numbers include that contention.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from collections import Counter
from pathlib import Path

import numpy as np

from flow_rag_vla_ros.tools.runner import PIPELINES, RunSpec, run_stack

SECTIONS = ('replay', 'stack', 'retrieval', 'backends')


def register(subparsers) -> None:
    p = subparsers.add_parser('bench', help='latency / retrieval / backend benchmarks')
    p.add_argument('--json', default=None, help='write results JSON here')
    p.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS))
    p.add_argument('--frames', type=int, default=300, help='frames per pipeline and layout (per round in replay)')
    p.add_argument('--rounds', type=int, default=3,
                   help='replay: run every pipeline this many times, in rotated order, and pool the frames')
    p.add_argument('--rate', type=float, default=20.0, help='sim frame rate (Hz) in real-time mode')
    p.add_argument('--pipelines', nargs='+', choices=PIPELINES, default=list(PIPELINES))
    p.add_argument('--layouts', nargs='+', choices=('processes', 'composed'), default=['processes', 'composed'])
    p.add_argument('--task', default='reach')
    p.add_argument('--checkpoint', default='')
    p.add_argument('--backend', default='')
    p.add_argument('--backends', nargs='+', default=['torch', 'onnxruntime', 'onnxruntime-int8',
                                                      'torch-cudagraph', 'tensorrt'])
    p.add_argument('--set', nargs='*', action='extend', default=[], metavar='NODE.PARAM=VALUE',
                   help='stack parameter overrides for the replay and stack sections (A/B runs)')
    p.add_argument('--retrieval-sizes', nargs='+', type=int, default=[10_000, 100_000])
    p.add_argument('--iters', type=int, default=300, help='backend timing iterations')
    p.add_argument('--device', default='cpu', help="backends: the device the named backends run on (cuda: torch eager "
                                                   "on the GPU; torch-cudagraph and tensorrt use cuda in any case)")
    p.add_argument('--precision', help='backends: torch-cudagraph fp32 | bf16, tensorrt fp16 | fp32 (default: theirs)')
    p.set_defaults(func=run)


def machine() -> dict:
    """CPU model, cores and widest vector ISA: "AMD EPYC" names CPUs with and without AVX-512, which moves
    every CPU timing here by ~2.5x, so a result must say which it had."""
    import os
    cpu, flags = '', set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name') and not cpu:
                    cpu = line.split(':', 1)[1].strip()
                elif line.startswith('flags') and not flags:
                    flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    isa = next((name for name in ('avx512f', 'avx2', 'avx') if name in flags), 'unknown')
    return {'cpu': cpu or platform.processor(), 'cores': os.cpu_count(), 'isa': isa,
            'python': platform.python_version(), 'packages': package_versions()}


# what decides a rollout's numbers besides the code: a new OpenCV resize or ONNX Runtime kernel moves the
# features by ulps, and a revisited Push situation can flip between success and timeout on that
NUMERIC_PACKAGES = ('numpy', 'torch', 'onnxruntime', 'opencv-python-headless', 'faiss-cpu', 'pybullet',
                    'panda-gym')


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in NUMERIC_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = 'not installed'
    return out


def stack_overrides(args, stale_timeout_s: float) -> dict[str, dict]:
    """`--set` overrides on top of the watchdog timeout the bench needs."""
    from flow_rag_vla_ros.launcher import parse_overrides
    overrides = parse_overrides(args.set)
    overrides.setdefault('action_merger', {}).setdefault('stale_timeout_s', stale_timeout_s)
    return overrides


def bench_stack(args) -> dict:
    out: dict = {'layouts': {}, 'settings': {'rate_hz': args.rate, 'frames': args.frames,
                                             'task': args.task, 'set': args.set}}
    for layout in args.layouts:
        runs = {}
        for pipeline in args.pipelines:
            # the watchdog must tolerate the camera period (a new chunk per frame), not just 2 control periods
            stale = max(0.08, 2.0 / args.rate)
            spec = RunSpec(task=args.task, episodes=0, seed=0, pipeline=pipeline, layout=layout,
                           clock_mode='realtime', rate_hz=args.rate, max_frames=args.frames,
                           overrides=stack_overrides(args, stale),
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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (all its threads), from /proc; None when it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')  # utime, stime


class _MeasuredStack:
    """A launcher Stack whose nodes' peak RSS is read just before they are stopped, and whose CPU time is counted
    from the end of the warm-up (`warmed_up`, called by the replay driver) to the stop: model loading is not
    the per-frame cost."""

    def __init__(self, stack, rss_into: dict, cpu_into: dict):
        self.stack, self.rss_into, self.cpu_into = stack, rss_into, cpu_into
        self.cpu_at_warm_up: dict[str, float] = {}

    def _pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.stack.processes.items()}

    def alive(self) -> dict[str, bool]:
        return self.stack.alive()

    def warmed_up(self) -> None:
        self.cpu_at_warm_up = {n: cpu_seconds(pid) for n, pid in self._pids().items()}

    def stop(self) -> None:
        from flow_rag_vla_ros.tools.runner import _peak_rss_mb
        pids = self._pids()
        self.rss_into.update(_peak_rss_mb(pids))
        for name, pid in pids.items():
            start, end = self.cpu_at_warm_up.get(name), cpu_seconds(pid)
            if start is not None and end is not None:
                self.cpu_into[name] = end - start
        self.stack.stop()


def round_orders(pipelines: list[str], rounds: int) -> list[list[str]]:
    """The pipelines' order in each round, rotated one place per round: each takes every slot in turn, so a
    slower or faster stretch of a shared VM (it moves every pipeline's p99 by 2-3 ms here) is spread over all
    of them instead of landing on whichever ran then."""
    return [pipelines[k % len(pipelines):] + pipelines[:k % len(pipelines)] for k in range(rounds)]


def pool_rounds(runs: list[dict]) -> dict:
    """One pipeline's replay rounds -> the bench record: latency percentiles over the pooled samples of every
    round (a p99 of 300 frames rests on its 3 slowest), CPU per frame averaged, each node's peak RSS the
    highest of its rounds (the stack total sums those), and each round's own end-to-end summary under `rounds`."""
    from flow_rag_vla_ros.core.latency import summarize
    samples = [r['samples_ms'] for r in runs]
    by_path = [s.get('stamp_to_command_by_path', {}) for s in samples]
    stages = sorted({stage for s in samples for stage in s['stage']})
    pooled = lambda key, stage: summarize(v for s in samples for v in s[key].get(stage, ()))  # noqa: E731
    nodes = sorted({n for r in runs for n in r['cpu_ms_per_frame']})
    rss = {n: max(r['peak_rss_mb'].get(n, 0.0) for r in runs)
           for n in sorted({n for r in runs for n in r['peak_rss_mb']})}
    return {
        'e2e_ms': summarize(v for s in samples for v in s['stamp_to_command']),
        # the same frames with the command's receipt taken from the middleware, not this harness's callback
        'e2e_middleware_ms': summarize(v for s in samples for v in s.get('stamp_to_command_middleware', ())),
        # by how the merger released the frame's command (chunk on arrival, or after waiting for the monitor)
        'e2e_ms_by_path': {path: summarize(v for paths in by_path for v in paths.get(path, ()))
                           for path in sorted({path for paths in by_path for path in paths})},
        'stage_ms': {stage: pooled('stage', stage) for stage in stages},
        'since_frame_ms': {stage: pooled('since_frame', stage) for stage in stages},
        'frames_replayed': sum(r['frames_replayed'] for r in runs),
        'frames_commanded': sum(r['frames_commanded'] for r in runs),
        'dropped_frames': sum(r['dropped_frames'] for r in runs),
        'frame_rate_hz': runs[0]['frame_rate_hz'], 'wall_s': sum(r['wall_s'] for r in runs),
        'peak_rss_mb': rss, 'peak_rss_mb_stack_total': sum(rss.values()),
        'bad_outputs': [b for r in runs for b in r['bad_outputs']][:20],
        'cpu_ms_per_frame': {n: float(np.mean([r['cpu_ms_per_frame'][n] for r in runs if n in r['cpu_ms_per_frame']]))
                             for n in nodes},
        # how each frame's first command left the merger: chunk (on arrival) | correction / deadline (after
        # waiting for the monitor: alarm_wait_ms, sequential) | tick
        'command_paths': dict(sum((Counter(r['command_paths']) for r in runs), Counter())),
        'rounds': [{'round': r['round'], 'slot': r['slot'], 'e2e_ms': r['e2e_ms'],
                    'dropped_frames': r['dropped_frames'], 'cpu_ms_per_frame': r['cpu_ms_per_frame']} for r in runs],
    }


def replay_round(args, bag: Path, pipeline: str) -> dict:
    """One replay of the recorded frames through `pipeline`'s stack, started fresh."""
    from flow_rag_vla_ros.launcher import start_processes
    from flow_rag_vla_ros.tools.replay import ReplayConfig, replay_bag

    stale = max(0.08, 2.0 / args.rate)  # the watchdog tolerates the camera period
    rss: dict = {}
    cpu_s: dict = {}

    def start_stack(_config):
        s = RunSpec(pipeline=pipeline, checkpoint=args.checkpoint, backend=args.backend,
                    clock_mode='realtime', overrides=stack_overrides(args, stale))
        return _MeasuredStack(start_processes(s.stack_nodes(), s.params, s.node_overrides()), rss, cpu_s)

    config = ReplayConfig(rate=1.0, frame_rate_hz=args.rate, pipeline=pipeline, stack_clock='realtime',
                          checkpoint=args.checkpoint, backend=args.backend)
    r = replay_bag(bag, config, start_stack)
    frames = r['frames']
    return {
        'e2e_ms': r['stamp_to_command_ms'], 'samples_ms': r['samples_ms'], 'frames_replayed': frames['replayed'],
        'command_paths': r['command_paths'],
        'frames_commanded': frames['commanded'], 'dropped_frames': frames['replayed'] - frames['commanded'],
        'frame_rate_hz': args.rate, 'wall_s': r['wall_s'], 'peak_rss_mb': rss,
        'peak_rss_mb_stack_total': sum(rss.values()), 'bad_outputs': r['bad_outputs'],
        # CPU time per replayed frame (all threads; warm-up excluded): what each node takes from the cores
        'cpu_ms_per_frame': {n: 1e3 * c / max(frames['replayed'], 1) for n, c in cpu_s.items()}}


def bench_replay(args) -> dict:
    """Record `args.frames` lockstep sim frames once, then replay them at `args.rate` through each pipeline,
    `args.rounds` times in rotated order; each pipeline's numbers pool its rounds (`pool_rounds`)."""
    import tempfile

    from flow_rag_vla_ros.tools.record import recording
    from flow_rag_vla_ros.tools.sim import RECORD_BEFORE_START

    out: dict = {'settings': {'source': 'recorded sim frames', 'rate_hz': args.rate, 'frames': args.frames,
                              'rounds': args.rounds, 'task': args.task, 'layout': 'processes', 'set': args.set},
                 'pipelines': {}}
    runs: dict[str, list[dict]] = {p: [] for p in args.pipelines}
    with tempfile.TemporaryDirectory(prefix='flow_rag_vla_bench_') as tmp:
        bag = Path(tmp) / 'frames'
        spec = RunSpec(task=args.task, episodes=100_000, seed=0, pipeline='flow_only', clock_mode='lockstep',
                       max_frames=args.frames, checkpoint=args.checkpoint, backend=args.backend)
        with recording(bag) as recorder:
            spec.start_gate = lambda: recorder.matched(RECORD_BEFORE_START)
            run_stack(spec)
        for k, order in enumerate(round_orders(list(args.pipelines), args.rounds)):
            for slot, pipeline in enumerate(order):
                runs[pipeline].append({**replay_round(args, bag, pipeline), 'round': k, 'slot': slot})
    out['pipelines'] = {p: pool_rounds(runs[p]) for p in args.pipelines}
    if 'flow_only' in runs and 'parallel' in runs:
        # issue 5's rule: parallel p99 at most 1 ms above flow_only
        out['parallel_minus_flow_only_p99_ms'] = p99_gap(runs['parallel'], runs['flow_only'], 'stamp_to_command')
        out['parallel_minus_flow_only_p99_middleware_ms'] = p99_gap(runs['parallel'], runs['flow_only'],
                                                                    'stamp_to_command_middleware')
    return out


def p99_gap(a_runs: list[dict], b_runs: list[dict], key: str) -> dict | None:
    """Pooled p99 of a's rounds minus b's for one latency sample list, per round too (the spread), with a 95 %
    bootstrap interval: how much of the pooled gap the frames' sampling alone explains. None without samples."""
    from flow_rag_vla_ros.core.latency import percentile_gap_interval
    a, b = ([r['samples_ms'].get(key) or [] for r in runs] for runs in (a_runs, b_runs))
    if not all(a) or not all(b):
        return None
    interval = percentile_gap_interval(a, b, q=99.0, limit_ms=1.0)
    return {'pooled': interval['gap_ms'],
            'rounds': [float(np.percentile(x, 99) - np.percentile(y, 99)) for x, y in zip(a, b)],
            'ci95': interval['ci95_ms'], 'share_of_resamples_above_1ms': interval['share_above_limit']}


def run(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.frames < 1:
        raise SystemExit(f'bench: --rounds and --frames must be >= 1 (got {args.rounds}, {args.frames})')
    result: dict = {'machine': machine()}
    if 'retrieval' in args.sections:
        from flow_rag_vla_ros.core.memory.bench import retrieval_benchmark
        result['retrieval_ms'] = retrieval_benchmark(sizes=tuple(args.retrieval_sizes))
    if 'backends' in args.sections:
        from flow_rag_vla_ros.core.backends.bench import benchmark_backends
        from flow_rag_vla_ros.nodes.runtime import resolve_checkpoint
        from flow_rag_vla_ros.core.config import load_node_parameters
        from flow_rag_vla_ros.paths import config_path
        default = load_node_parameters(config_path(), 'flow_policy').get('checkpoint', '')
        ckpt = resolve_checkpoint(args.checkpoint or default)
        opts = {'precision': args.precision} if args.precision else {}
        result['backends'] = benchmark_backends(ckpt, args.backends, iters=args.iters, warmup=20, device=args.device,
                                                **opts)
    if 'replay' in args.sections:
        result['replay'] = bench_replay(args)
    if 'stack' in args.sections:
        result['sim_loop'] = bench_stack(args)
    # the headline numbers: the stack fed at camera rate when measured, else the sim loop
    headline = result.get('replay') or result.get('sim_loop')
    if headline:
        result['pipelines'] = headline['pipelines']
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
    tables = [(f"stack fed recorded frames at {result['replay']['settings']['rate_hz']:g} Hz, camera stamp -> "
               f"command (ms), one process per node", result['replay']['pipelines'])] if 'replay' in result else []
    tables += [(f'sim in the loop (PyBullet rendering on the same cores), camera stamp -> command (ms), '
                f'layout={layout}', runs) for layout, runs in result.get('sim_loop', {}).get('layouts', {}).items()]
    for title, runs in tables:
        t = Table(title=title)
        # p99 DDS: the command's receipt taken from the middleware, not from this harness's callback
        for c in ('pipeline', 'p50', 'p95', 'p99', 'p99 DDS', 'frames', 'dropped', 'Hz', 'stack RSS MB',
                  'stack CPU ms/frame'):
            t.add_column(c)
        for name, r in runs.items():
            e, m = r['e2e_ms'], r.get('e2e_middleware_ms') or {}  # replay only
            cpu = r.get('cpu_ms_per_frame')  # replay only
            t.add_row(name, fmt(e['p50']), fmt(e['p95']), fmt(e['p99']), fmt(m.get('p99')), str(r['frames_commanded']),
                      str(r['dropped_frames']), fmt(r['frame_rate_hz']), fmt(r['peak_rss_mb_stack_total']),
                      fmt(sum(cpu.values()) if cpu else None))
        console.print(t)
    for key, receipt in (('parallel_minus_flow_only_p99_ms', 'callback'),
                         ('parallel_minus_flow_only_p99_middleware_ms', 'middleware')):
        gap = result.get('replay', {}).get(key)
        if gap:
            console.print(f"replay ({receipt} receipt): parallel p99 - flow_only p99 = {gap['pooled']:+.2f} ms "
                          f"pooled over {len(gap['rounds'])} round(s); per round: "
                          + ', '.join(f'{d:+.2f}' for d in gap['rounds'])
                          + f"; 95 % bootstrap interval {gap['ci95'][0]:+.2f} .. {gap['ci95'][1]:+.2f} ms, "
                          f"{100 * gap['share_of_resamples_above_1ms']:.0f} % of resamples above +1 ms")
    if 'retrieval_ms' in result:
        t = Table(title='retrieval, single query (ms)')
        for c in ('cases', 'index', 'p50', 'p99'):
            t.add_column(c)
        for size, r in result['retrieval_ms'].items():
            t.add_row(str(size), str(r.get('index', '')), fmt(r['p50']), fmt(r['p99']))
        console.print(t)
    if 'backends' in result:
        t = Table(title='policy step = vision + full K-step sampling (ms), backends timed in alternation')
        for c in ('requested', 'used', 'p50', 'p99', 'torch p50 / p50', 'encode / act p50, paced'):
            t.add_column(c)
        for name, r in result['backends'].items():
            pm = r.get('policy_ms') or {}
            paced = [r.get(k, {}).get('p50') for k in ('encode_ms_paced', 'act_ms_paced')]
            t.add_row(name, str(r.get('used', name)), fmt(pm.get('p50')), fmt(pm.get('p99')),
                      fmt(r.get('speedup_vs_torch')), ' / '.join(fmt(v) for v in paced) if any(paced) else '-')
        console.print(t)
