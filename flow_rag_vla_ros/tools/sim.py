"""`flow-rag-vla sim`: the full node graph driving the PyBullet Panda; prints per-episode outcomes + latency."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from flow_rag_vla_ros.core.spec import TASKS
from flow_rag_vla_ros.launcher import parse_overrides
from flow_rag_vla_ros.tools.runner import PIPELINES, RunSpec, run_stack

RECORD_BEFORE_START = ('/camera/image_raw', '/robot/ee_state', '/vla/action_chunk', '/robot/command')


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by every command that runs the stack against the sim."""
    p.add_argument('--task', choices=TASKS, default='reach')
    p.add_argument('--episodes', type=int, default=10)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--layout', choices=('processes', 'composed'), default='processes',
                   help='one process per node, or all nodes in one process')
    p.add_argument('--clock-mode', choices=('lockstep', 'realtime'), default='lockstep')
    p.add_argument('--checkpoint', default='', help='checkpoint dir (default: config/stack.yaml)')
    p.add_argument('--backend', default='', help='policy backend (default: config/stack.yaml)')
    p.add_argument('--scenario', default='', help='failure-injection scenario')
    p.add_argument('--params', default=None, help='params YAML (default: config/stack.yaml)')
    p.add_argument('--log-dir', default=None, help='write each node process log here')
    p.add_argument('--set', nargs='*', action='extend', default=[], metavar='NODE.PARAM=VALUE',
                   help='parameter overrides on top of --params (e.g. flow_policy.noise_scale=1.0)')


def register(subparsers) -> None:
    p = subparsers.add_parser('sim', help='run the full stack in the PyBullet sim loop')
    add_run_arguments(p)
    p.add_argument('--pipeline', choices=PIPELINES, default='parallel')
    p.add_argument('--json', default=None, help='write the results JSON here')
    p.add_argument('--record', default=None, help='also record the run to this rosbag2 (MCAP)')
    p.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace, **extra) -> RunSpec:
    return RunSpec(task=args.task, episodes=args.episodes, seed=args.seed, layout=args.layout,
                   clock_mode=args.clock_mode, checkpoint=args.checkpoint, backend=args.backend,
                   scenario=args.scenario, params=args.params, overrides=parse_overrides(args.set),
                   log_dir=args.log_dir, **extra)


def print_results(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console()
    table = Table(title=f"{result['task']} / {result['pipeline']} / {result['layout']}")
    for col in ('episode', 'seed', 'outcome', 'failure type', 'steps', 'held'):
        table.add_column(col)
    for r in result['per_episode']:
        table.add_row(str(r['episode']), str(r['seed']), 'success' if r['success'] else r['event'],
                      r['failure_type'] or '-', str(r['steps']), str(r['held_steps']))
    console.print(table)
    e2e = result['e2e_ms']
    fmt = lambda v: '-' if v is None else f'{v:.2f}'  # noqa: E731
    console.print(f"success rate {result['success_rate']:.2f} over {result['episodes']} episodes | "
                  f"e2e latency ms p50 {fmt(e2e['p50'])} p95 {fmt(e2e['p95'])} p99 {fmt(e2e['p99'])} "
                  f"(n={e2e['n']}) | nodes: {', '.join(result['nodes'])}")


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args, pipeline=args.pipeline)
    if args.record:
        from flow_rag_vla_ros.tools.record import recording
        with recording(args.record) as recorder:
            # the episodes start once the recorder hears the sim and the stack's outputs
            spec.start_gate = lambda: recorder.matched(RECORD_BEFORE_START)
            result = run_stack(spec)
    else:
        result = run_stack(spec)
    print_results(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result['episodes'] == spec.episodes else 1
