"""`flow-rag-vla collect`: scripted-expert demonstrations into the on-disk dataset (docs/DESIGN.md).

Episode i of a task uses seed + i, so a collection is reproducible and can be split over processes.
A READY_<task> marker is written next to meta.json when a task is complete (trainers may wait on it).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from flow_rag_vla_ros.core.spec import TASKS


def register(subparsers) -> None:
    p = subparsers.add_parser('collect', help='collect scripted-expert demonstrations')
    p.add_argument('--task', choices=[*TASKS, 'all'], default='all')
    p.add_argument('--episodes', type=int, default=100, help='episodes per task')
    p.add_argument('--seed', type=int, default=1000, help='seed of episode 0 (episode i uses seed + i)')
    p.add_argument('--out', default='data/demos', help='dataset directory')
    p.add_argument('--image-size', type=int, default=96)
    p.add_argument('--cameras', nargs='+', default=['scene'], help='camera presets or dist,yaw,pitch,x,y,z')
    p.add_argument('--max-steps', type=int, default=0, help='steps per episode (0 = task default, 50)')
    p.add_argument('--scenario', default='', help='failure-injection scenario during collection')
    p.add_argument('--workers', type=int, default=1, help='processes, one env each')
    p.add_argument('--expert', nargs='*', action='extend', default=[], metavar='FIELD=VALUE',
                   help='scripted-expert settings (sim/experts.py ExpertConfig), e.g. push_line_tolerance_m=0.04')
    p.add_argument('--no-progress', action='store_true')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from flow_rag_vla_ros.core.config import from_dict
    from flow_rag_vla_ros.sim.dataset import collect
    from flow_rag_vla_ros.sim.experts import ExpertConfig
    from flow_rag_vla_ros.sim.panda_env import SimConfig
    tasks = list(TASKS) if args.task == 'all' else [args.task]
    pairs = [item.partition('=') for item in args.expert]
    bad = [k for k, eq, _ in pairs if not eq]
    if bad:
        raise SystemExit(f'collect: --expert takes FIELD=VALUE, got {bad}')
    expert = from_dict(ExpertConfig, {k: yaml.safe_load(v) for k, _, v in pairs}) if pairs else None
    out = Path(args.out)
    summary = {}
    for task in tasks:
        cfg = SimConfig(task=task, image_size=args.image_size, cameras=list(args.cameras),
                        max_steps=args.max_steps, scenario=args.scenario)
        summary[task] = collect(task, args.episodes, args.seed, out, cfg, progress=not args.no_progress,
                                workers=args.workers, expert_config=expert)
        (out / f'READY_{task}').write_text(json.dumps(summary[task]) + '\n')
    print(json.dumps(summary, indent=2))
    return 0
