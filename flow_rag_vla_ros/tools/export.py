"""`flow-rag-vla export`: ONNX export of a checkpoint (vision.onnx + policy.onnx + export.json), verified
against PyTorch on random and real inputs; a bad export is refused (exit code 1, nothing written).
`--num-steps K` / `--method M` / `--noise-scale S` first derive a new checkpoint in `--out` (same weights, other
sampler).
`--int8-errors OUT.json` then measures, on recorded frames of `--dataset`, how far the actions move when
each group of the expert's MatMuls is quantised alone (`core/backends/quantize.py: group_errors`)."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser('export', help='export the model to ONNX (verified)')
    p.add_argument('--checkpoint', required=True, help='checkpoint directory (config.json + model.safetensors)')
    p.add_argument('--out', default='', help='output directory (default: the checkpoint directory)')
    p.add_argument('--int8', action='store_true', help='also write the dynamic int8 expert (policy.int8.onnx)')
    p.add_argument('--dataset', default='', help='dataset directory whose frames are used as real inputs')
    p.add_argument('--tolerance', type=float, default=1e-4, help='max relative error vs PyTorch (fp32)')
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--num-steps', type=int, default=0,
                   help='sampler integration steps for a derived checkpoint written to --out (0 = keep)')
    p.add_argument('--method', choices=('euler', 'heun'), default='',
                   help='sampler integration method for a derived checkpoint written to --out (default: keep)')
    p.add_argument('--noise-scale', type=float, default=None,
                   help="sampler's starting noise std for a derived checkpoint written to --out (default: keep)")
    p.add_argument('--int8-errors', default='', metavar='JSON',
                   help='also write per-group int8 action errors on --dataset frames here')
    p.add_argument('--int8-task', default='push', help='--int8-errors: the dataset task whose frames are used')
    p.add_argument('--int8-episodes', type=int, default=30, help='--int8-errors: episodes (3 frames each)')
    p.set_defaults(func=run)


def recorded_expert_inputs(checkpoint_dir, graphs_dir, dataset_dir, task: str, episodes: int,
                           seed: int = 0) -> list[dict]:
    """Expert inputs from recorded episodes: 3 frames each (start, 1/3, 2/3), their vision tokens (the
    ONNX Runtime backend on the graphs in `graphs_dir`), proprio, the episode's instruction embedding and
    seeded noise; batches of 1. Preprocessing and instructions come from the checkpoint."""
    from pathlib import Path

    import numpy as np

    from flow_rag_vla_ros.core.backends import onnx_backend
    from flow_rag_vla_ros.core.backends.base import as_batch, load_preprocess
    from flow_rag_vla_ros.core.language import InstructionEmbedder
    backend = onnx_backend.load(graphs_dir, preprocess=load_preprocess(checkpoint_dir))
    embedder, rng, feeds = InstructionEmbedder.from_checkpoint(checkpoint_dir), np.random.default_rng(seed), []
    files = sorted(Path(dataset_dir, task).glob('episode_*.npz'))[:episodes]
    if not files:
        raise FileNotFoundError(f'no episodes under {Path(dataset_dir, task)}')
    for path in files:
        with np.load(path, allow_pickle=False) as ep:
            language = embedder.embed(str(ep['instruction']))[None]  # (1, 384)
            for i in (0, len(ep['images']) // 3, 2 * len(ep['images']) // 3):
                feeds.append({'tokens': as_batch(backend.encode(ep['images'][i]), 3),  # (1, N, C)
                              'proprio': as_batch(ep['proprio'][i], 2), 'language': language,
                              'noise': rng.standard_normal((1, backend.horizon, 4)).astype(np.float32)})
    return feeds


def run(args: argparse.Namespace) -> int:
    from flow_rag_vla_ros.core.export import ExportError, export_checkpoint
    from flow_rag_vla_ros.nodes.runtime import resolve_checkpoint
    if args.int8_errors and not args.dataset:
        print('--int8-errors needs --dataset (recorded frames)', file=sys.stderr)
        return 2
    ckpt = resolve_checkpoint(args.checkpoint)
    sampler = {k: v for k, v in (('num_steps', args.num_steps), ('method', args.method)) if v}
    if args.noise_scale is not None:
        sampler['noise_scale'] = args.noise_scale
    if sampler:  # same weights, another sampler: a new checkpoint directory, exported below
        from flow_rag_vla_ros.core.checkpoint import derive_checkpoint
        if not args.out:
            print('export refused: --num-steps / --method / --noise-scale write a derived checkpoint; '
                  'give it a new --out', file=sys.stderr)
            return 2
        try:
            ckpt = derive_checkpoint(ckpt, args.out, **sampler)
        except (ValueError, FileExistsError) as e:
            print(f'export refused: {e}', file=sys.stderr)
            return 2
    try:
        report = export_checkpoint(ckpt, args.out or ckpt, dataset_dir=args.dataset or None, int8=args.int8,
                                   tolerance=args.tolerance, opset=args.opset)
    except ExportError as e:
        print(f'export refused: {e}', file=sys.stderr)
        return 1
    if args.int8_errors:
        from pathlib import Path

        from flow_rag_vla_ros.core.backends.quantize import group_errors
        out = Path(args.out or ckpt)
        feeds = recorded_expert_inputs(ckpt, out, args.dataset, args.int8_task, args.int8_episodes)
        errors = {'checkpoint': str(out), 'dataset': args.dataset, 'task': args.int8_task, 'inputs': len(feeds),
                  'metric': 'max |action - fp32| per input', 'groups': group_errors(out / 'policy.onnx', feeds)}
        Path(args.int8_errors).write_text(json.dumps(errors, indent=2))
        report['int8_errors'] = {k: round(v['median'], 4) if 'median' in v else None for k, v in errors['groups'].items()}
    summary = {part: {'file': f['file'], 'relative_error': f['relative_error']}
               for part, f in report['files'].items()}
    print(json.dumps({'out': str(args.out or ckpt), 'opset': report['opset'], **summary,
                      **{k: report[k] for k in ('int8', 'int8_errors') if k in report}}, indent=2))
    return 0
