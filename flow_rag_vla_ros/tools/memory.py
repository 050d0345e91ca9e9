"""`flow-rag-vla memory`: look into a failure memory directory, and export it to seed another robot.

    flow-rag-vla memory info DIR [--json out.json]
    flow-rag-vla memory export DIR OUT.safetensors

DIR is a monitor's `rag_monitor.directory`; its success memory is DIR/successes. The memory is opened the
way the monitor opens it (snapshot loaded, journal replayed, a torn tail repaired), so the monitor must not
have it open: the directory's lock refuses a second opener. Another robot's monitor imports the file at start
(`rag_monitor.memory_import`, or `success_memory_import` for a success memory); the file names how its
embeddings were made, and a monitor that makes them another way refuses it.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter


def register(subparsers) -> None:
    p = subparsers.add_parser('memory', help='inspect or export a failure memory directory')
    sub = p.add_subparsers(dest='memory_command', metavar='ACTION', required=True)
    info = sub.add_parser('info', help='cases per failure type and task, confidence, index, embedding')
    info.add_argument('directory')
    info.add_argument('--json', default='', help='also write the summary here')
    export = sub.add_parser('export', help='write every case to one safetensors file')
    export.add_argument('directory')
    export.add_argument('out')
    for q in (info, export):
        q.add_argument('--dim', type=int, default=0, help='embedding size when DIR has no snapshot yet (default 256)')
        q.add_argument('--horizon', type=int, default=0, help='chunk length when DIR has no snapshot yet (default 8)')
    p.set_defaults(func=run)


def open_memory(directory: str, dim: int = 0, horizon: int = 0):
    """The memory in `directory`, with the sizes its snapshot records (or the given / default ones)."""
    from pathlib import Path

    from flow_rag_vla_ros.core.memory import FailureMemory, MemoryConfig
    from flow_rag_vla_ros.core.memory.journal import read_snapshot
    if not Path(directory).is_dir():
        raise SystemExit(f'no memory directory {directory}')
    snap = read_snapshot(directory, meta_only=True)  # the sizes only: FailureMemory.open reads the rest
    meta = snap[1] if snap is not None else {}
    defaults = MemoryConfig()
    config = MemoryConfig(directory=directory, snapshot_every=0,  # read, do not rewrite
                          dim=int(meta.get('dim') or dim or defaults.dim),
                          horizon=int(meta.get('horizon') or horizon or defaults.horizon),
                          metric=meta.get('metric', defaults.metric))
    return FailureMemory.open(config)


def summarize(memory) -> dict:
    cases = memory.cases()
    confidences = [c.confidence for c in cases]
    return {'directory': memory.config.directory, 'cases': len(cases), 'dim': memory.config.dim,
            'horizon': memory.config.horizon, 'metric': memory.config.metric, 'index': memory.index_kind,
            'embedding': memory.embedding_id or '(untagged)',
            'failure_types': dict(Counter(c.failure_type for c in cases).most_common()),
            'tasks': dict(Counter(c.task for c in cases).most_common()),
            'with_correction': sum(c.correction_chunk is not None for c in cases),
            'confidence_mean': round(sum(confidences) / len(confidences), 4) if confidences else None,
            'seen_total': sum(c.seen for c in cases)}


def run(args: argparse.Namespace) -> int:
    from flow_rag_vla_ros.core.memory.journal import DirectoryInUse
    try:
        memory = open_memory(args.directory, args.dim, args.horizon)
    except (DirectoryInUse, ValueError) as e:
        raise SystemExit(str(e)) from None
    try:
        if args.memory_command == 'export':
            n = memory.export(args.out)
            print(f'exported {n} cases from {args.directory} to {args.out} (embedding: '
                  f'{memory.embedding_id or "untagged"})')
            return 0
        summary = summarize(memory)
    finally:
        memory.close()
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f'failure memory {args.directory}', show_header=False)
    for key, value in summary.items():
        table.add_row(key, ', '.join(f'{k}: {v}' for k, v in value.items()) if isinstance(value, dict) else str(value))
    Console().print(table)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=2)
    return 0
