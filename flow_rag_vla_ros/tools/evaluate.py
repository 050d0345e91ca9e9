"""`flow-rag-vla eval`: tasks x scenarios x pipelines through the real node graph (lockstep), one report.

Every pipeline sees the same episodes and seeds. The failure memory starts empty for each pipeline run
(or from `--memory-seed DIR`) and learns during the run, so `failure_repetitions` measures whether the
stack fails the same way again: an episode's failure counts as a repetition when an earlier episode of
the same run failed with the same type in a similar state (ground-truth object / goal / end-effector
positions at the failure within `--similar-radius` metres).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from flow_rag_vla_ros.core.spec import TASKS
from flow_rag_vla_ros.launcher import merged_params_file, parse_overrides
from flow_rag_vla_ros.paths import config_path
from flow_rag_vla_ros.tools.runner import RunSpec, run_stack
from flow_rag_vla_ros.tools.sim import add_run_arguments

ABLATION = ('flow_only', 'rag_only', 'sequential', 'parallel')


def register(subparsers) -> None:
    p = subparsers.add_parser('eval', help='evaluate tasks, scenarios and pipelines')
    add_run_arguments(p)
    p.add_argument('--tasks', nargs='+', choices=TASKS, default=None, help='several tasks (overrides --task)')
    p.add_argument('--pipelines', nargs='+', choices=ABLATION, default=['flow_only', 'parallel'])
    p.add_argument('--list-scenarios', action='store_true', help='print scenario names, one per line')
    p.add_argument('--situations', type=int, default=0,
                   help='revisit protocol: cycle through this many initial states (episode i: seed + i %% N), so '
                        'situations recur, as on a production line; 0 = a new one every episode')
    p.add_argument('--similar-radius', type=float, default=0.1, help='metres; failure states closer are similar')
    p.add_argument('--memory-seed', default=None, help='start each run from a copy of this memory export')
    p.add_argument('--json', default=None)
    p.add_argument('--in-process', action='store_true',
                   help='run the same pipeline logic in this process without ROS (tools/inprocess.py; fast)')
    p.add_argument('--report-dir', default=None, help='write report.md + PNG plots here')
    p.set_defaults(func=run)


def failure_repetitions(episodes: list[dict], radius: float, same_type: bool = True) -> tuple[int, list[int]]:
    """Count failures that repeat an earlier failure (same type, similar state); also the running count.
    same_type=False counts any failure in a state similar to an earlier failure's (a failure that only changed
    its type is still a failure where one happened before)."""
    earlier: list[tuple[str, np.ndarray]] = []
    count, running = 0, []
    for ep in episodes:
        if not ep['success'] and ep.get('failure_type'):
            state = np.asarray(ep.get('failure_state') or [], dtype=np.float64)
            if any((t == ep['failure_type'] or not same_type) and s.shape == state.shape
                   and np.linalg.norm(s - state) <= radius for t, s in earlier):
                count += 1
            earlier.append((ep['failure_type'], state))
        running.append(count)
    return count, running


def pipeline_spec(args, task: str, pipeline: str, memory_dir: str) -> RunSpec:
    overrides = parse_overrides(args.set)
    overrides.setdefault('rag_monitor', {})['directory'] = memory_dir
    if args.memory_seed:
        overrides['rag_monitor']['memory_import'] = args.memory_seed
    stack_pipeline = pipeline
    if pipeline == 'rag_only':  # the memory's corrections on top of a do-nothing baseline, no flow policy
        overrides.setdefault('flow_policy', {})['baseline'] = 'zero'
        stack_pipeline = 'parallel'
    return RunSpec(task=task, episodes=args.episodes, seed=args.seed, pipeline=stack_pipeline, layout=args.layout,
                   clock_mode='lockstep', scenario=args.scenario, situations=args.situations,
                   checkpoint=args.checkpoint,
                   backend=args.backend, params=args.params, overrides=overrides, log_dir=args.log_dir)


def params_file(args, directory: str) -> str | Path | None:
    """--params with the --set overrides applied (written into `directory` when there are any)."""
    if not args.set:
        return args.params
    return merged_params_file(Path(args.params or config_path('stack.yaml')), parse_overrides(args.set), directory)


def evaluate(args) -> dict:
    if not getattr(args, 'in_process', False):  # the node graph takes --set as RunSpec overrides (pipeline_spec)
        return _evaluate(args, args.params)
    with tempfile.TemporaryDirectory(prefix='flow_rag_vla_params_') as tmp:  # in-process: one merged params file
        return _evaluate(args, params_file(args, tmp))


def checkpoint_record(checkpoint: str, params) -> dict:
    """Which model a report is about: the directory (`--checkpoint`, else the parameters' flow_policy.checkpoint)
    and the SHA-256 of its weights, so a result stays tied to its model when directories are renamed."""
    from flow_rag_vla_ros.core.backends.engine_cache import sha256_file
    from flow_rag_vla_ros.nodes.runtime import resolve_checkpoint
    from flow_rag_vla_ros.tools.inprocess import _stack_checkpoint
    name = checkpoint or _stack_checkpoint(params)
    weights = resolve_checkpoint(name) / 'model.safetensors'
    return {'path': name, 'model_sha256': sha256_file(weights) if weights.exists() else None}


def report_header(args) -> dict:
    """What a report ran: the episodes, the machine, the model, and the `--set` parameter overrides (a merger
    setting changes success as much as the model does, and the parameters file alone does not show it)."""
    from flow_rag_vla_ros.tools.bench import machine
    return {'scenario': args.scenario, 'episodes': args.episodes, 'seed': args.seed,
            'situations': args.situations, 'machine': machine(),
            'checkpoint': checkpoint_record(args.checkpoint, args.params),
            'overrides': parse_overrides(args.set), 'tasks': {}}


def _evaluate(args, inprocess_params) -> dict:
    tasks = args.tasks or [args.task]
    report = report_header(args)
    for task in tasks:
        rows = {}
        for pipeline in args.pipelines:
            if getattr(args, 'in_process', False):
                from flow_rag_vla_ros.tools.inprocess import run_inprocess
                r = run_inprocess(task, args.episodes, args.seed, pipeline, args.scenario, args.checkpoint,
                                  args.backend or 'onnxruntime', params=inprocess_params, situations=args.situations,
                                  monitor={'memory_import': args.memory_seed} if args.memory_seed else None)
            else:
                with tempfile.TemporaryDirectory(prefix='flow_rag_vla_memory_') as memory_dir:
                    r = run_stack(pipeline_spec(args, task, pipeline, memory_dir))
            reps, running = failure_repetitions(r['per_episode'], args.similar_radius)
            successes = [e for e in r['per_episode'] if e['success']]
            rows[pipeline] = {
                'success_rate': r['success_rate'], 'episodes': r['episodes'],
                'failure_repetitions': reps, 'failure_repetitions_running': running,
                'failures_where_one_failed_before': failure_repetitions(r['per_episode'], args.similar_radius,
                                                                        same_type=False)[0],
                'failures': sum(1 for e in r['per_episode'] if not e['success']),
                'mean_steps_to_success': r['mean_steps_to_success'],
                'mean_seconds_to_success': (float(np.mean([e['steps'] for e in successes])) * 0.04
                                            if successes else None),
                'action_frequency_hz': r['frame_rate_hz'], 'e2e_ms': r['e2e_ms'],
                'e2e_samples_ms': r.get('e2e_samples_ms', []),
                # per stage, through the node graph (empty in-process): which of chunk and correction comes first
                'stage_ms': r.get('stage_ms', {}), 'since_frame_ms': r.get('since_frame_ms', {}),
                'peak_rss_mb': r['peak_rss_mb'], 'corrections_used': r['corrections_used'],
                'correction_verdicts': r.get('correction_verdicts', {}),
                'per_episode': r['per_episode'],
            }
        report['tasks'][task] = rows
    return report


def markdown(report: dict) -> str:
    fmt = lambda v: '-' if v is None else (f'{v:.2f}' if isinstance(v, float) else str(v))  # noqa: E731
    revisits = (f", cycling through {report['situations']} initial states (seeds {report['seed']}.."
                f"{report['seed'] + report['situations'] - 1})" if report.get('situations') else '')
    lines = [f"Scenario `{report['scenario'] or 'none'}`, {report['episodes']} episodes, "
             f"seed {report['seed']}{revisits}.", '',
             '| task | pipeline | success | failure repetitions | failures | failed where one failed before | '
             'steps to success | e2e p50 / p95 / p99 ms | commands/s | corrections used |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for task, rows in report['tasks'].items():
        for name, r in rows.items():
            e = r['e2e_ms']
            lines.append(f"| {task} | {name} | {r['success_rate']:.2f} | {r['failure_repetitions']} | "
                         f"{r['failures']} | {fmt(r.get('failures_where_one_failed_before'))} | "
                         f"{fmt(r['mean_steps_to_success'])} | {fmt(e['p50'])} / {fmt(e['p95'])} / "
                         f"{fmt(e['p99'])} | {fmt(r['action_frequency_hz'])} | {r['corrections_used']} |")
    return '\n'.join(lines) + '\n'


def plots(report: dict, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    written = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for task, rows in report['tasks'].items():
        for name, r in rows.items():
            if r['e2e_samples_ms']:
                ax.hist(r['e2e_samples_ms'], bins=40, alpha=0.5, label=f'{task}/{name}')
    ax.set_xlabel('camera stamp -> command (ms)'), ax.set_ylabel('frames'), ax.legend(fontsize=7)
    written.append(out_dir / 'latency_hist.png')
    fig.tight_layout(), fig.savefig(written[-1], dpi=120), plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    tasks = list(report['tasks'])
    pipelines = sorted({p for rows in report['tasks'].values() for p in rows})
    width = 0.8 / max(1, len(pipelines))
    for i, name in enumerate(pipelines):
        ax.bar([t + i * width for t in range(len(tasks))],
               [report['tasks'][task].get(name, {}).get('success_rate', 0) for task in tasks], width, label=name)
    ax.set_xticks([t + width * (len(pipelines) - 1) / 2 for t in range(len(tasks))], tasks)
    ax.set_ylim(0, 1.05), ax.set_ylabel('success rate'), ax.legend(fontsize=7)
    written.append(out_dir / 'success.png')
    fig.tight_layout(), fig.savefig(written[-1], dpi=120), plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for task, rows in report['tasks'].items():
        for name, r in rows.items():
            ax.plot(range(1, len(r['failure_repetitions_running']) + 1), r['failure_repetitions_running'],
                    label=f'{task}/{name}')
    ax.set_xlabel('episode'), ax.set_ylabel('cumulative failure repetitions'), ax.legend(fontsize=7)
    written.append(out_dir / 'failure_repetitions.png')
    fig.tight_layout(), fig.savefig(written[-1], dpi=120), plt.close(fig)
    return written


def run(args: argparse.Namespace) -> int:
    if args.list_scenarios:
        from flow_rag_vla_ros.sim.scenarios import list_scenarios
        print('\n'.join(list_scenarios()))
        return 0
    report = evaluate(args)
    md = markdown(report)
    print(md)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.report_dir:
        out = Path(args.report_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / 'report.md').write_text(md)
        plots(report, out)
    return 0
